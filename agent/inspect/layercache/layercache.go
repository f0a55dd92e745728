// Package layercache stores the scan results of immutable image layers in a
// bbolt file under the agent's state directory, keyed by layer identity and
// inspect.ScannerVersion, so each layer is scanned once per node — shared by
// every container that uses it and kept across agent restarts. Entries made
// by another scanner version are deleted when the cache is opened.
package layercache

import (
	"bytes"
	"encoding/gob"
	"fmt"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/loupe-dev/loupe/agent/inspect"
)

var bucket = []byte("layers/" + inspect.ScannerVersion)

// Cache is a bbolt-backed inspect.Cache.
type Cache struct {
	db *bolt.DB
}

// Open opens (creating) dir/layercache.db and drops results of other
// scanner versions.
func Open(dir string) (*Cache, error) {
	p := filepath.Join(dir, "layercache.db")
	db, err := bolt.Open(p, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open layer cache %s: %w", p, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		var stale [][]byte
		tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			if !bytes.Equal(name, bucket) {
				stale = append(stale, append([]byte(nil), name...))
			}
			return nil
		})
		for _, n := range stale {
			if err := tx.DeleteBucket(n); err != nil {
				return err
			}
		}
		_, err := tx.CreateBucketIfNotExists(bucket)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("prepare layer cache %s: %w", p, err)
	}
	return &Cache{db: db}, nil
}

// Close closes the database.
func (c *Cache) Close() error { return c.db.Close() }

// Get returns the cached result of layer id.
func (c *Cache) Get(id string) (*inspect.LayerResult, bool, error) {
	var r *inspect.LayerResult
	err := c.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucket).Get([]byte(id))
		if v == nil {
			return nil
		}
		r = new(inspect.LayerResult)
		if err := gob.NewDecoder(bytes.NewReader(v)).Decode(r); err != nil {
			r = nil
			return fmt.Errorf("decode cached layer %s: %w", id, err)
		}
		return nil
	})
	if err != nil || r == nil {
		return nil, false, err
	}
	if r.ScannerVersion != inspect.ScannerVersion || r.ID != id {
		return nil, false, nil
	}
	return r, true, nil
}

// Put stores a result under its ID.
func (c *Cache) Put(r *inspect.LayerResult) error {
	if r.ID == "" {
		return fmt.Errorf("store layer result: no layer id")
	}
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(r); err != nil {
		return fmt.Errorf("encode layer %s: %w", r.ID, err)
	}
	return c.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).Put([]byte(r.ID), buf.Bytes())
	})
}

// Len returns the number of cached layers.
func (c *Cache) Len() int {
	n := 0
	c.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucket).Stats().KeyN
		return nil
	})
	return n
}

var _ inspect.Cache = (*Cache)(nil)
