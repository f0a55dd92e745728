// Package spool is the agent's durable outbound queue of findings.
//
// A finding enters the spool before it is sent and leaves it only when the
// collector has acknowledged it after a durable commit, so neither a crash of
// the agent nor an unreachable collector loses findings. The spool is a bbolt
// database in the agent's state directory (one bucket per severity, keys in
// arrival order); every Append is one fsync'd transaction, so a crash in the
// middle of a write leaves the previous state intact (bbolt's copy-on-write
// meta pages play the part of torn-record recovery in a hand-written log).
//
// The spool is bounded in bytes. When an Append would exceed the bound, the
// oldest findings of the lowest severity present are dropped first — never
// silently: every drop is counted by severity.
package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

// DefaultMaxBytes is the default bound on stored finding bytes (256 MiB).
const DefaultMaxBytes = 256 << 20

// Entry is one spooled finding and the key that acknowledges it.
type Entry struct {
	Key     Key
	Finding *loupev1.Finding
}

// Key identifies a spooled finding: its severity bucket and arrival number.
type Key struct {
	Severity loupev1.Severity
	Seq      uint64
}

// Stats are the spool's gauges and counters for metrics.
type Stats struct {
	Findings int64                       // findings waiting
	Bytes    int64                       // their encoded size
	Dropped  map[loupev1.Severity]uint64 // dropped to stay under the bound, since open
}

// Spool is safe for concurrent use.
type Spool struct {
	db       *bolt.DB
	maxBytes int64

	mu      sync.Mutex
	count   int64
	bytes   int64
	dropped map[loupev1.Severity]uint64
	notify  chan struct{}
}

var metaBucket = []byte("meta")

// ErrTooLarge is returned for a single finding larger than the whole bound.
var ErrTooLarge = errors.New("finding larger than the spool bound")

// Open opens (or creates) the spool in dir, bounded to maxBytes of findings
// (DefaultMaxBytes when 0).
func Open(dir string, maxBytes int64) (*Spool, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open spool: %w", err)
	}
	path := filepath.Join(dir, "spool.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open spool %s: locked by another process (is another agent running with this --state-dir?)", path)
		}
		return nil, fmt.Errorf("open spool %s: %w", path, err)
	}
	s := &Spool{db: db, maxBytes: maxBytes, dropped: map[loupev1.Severity]uint64{}, notify: make(chan struct{}, 1)}
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(metaBucket); err != nil {
			return err
		}
		for sev := range loupev1.Severity_name {
			b, err := tx.CreateBucketIfNotExists(bucketName(loupev1.Severity(sev)))
			if err != nil {
				return err
			}
			if err := b.ForEach(func(_, v []byte) error {
				s.count++
				s.bytes += int64(len(v))
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open spool %s: %w", path, err)
	}
	return s, nil
}

func bucketName(sev loupev1.Severity) []byte { return []byte{'s', byte(sev)} }

// Append stores findings durably (one fsync'd transaction), dropping the
// lowest-severity oldest findings when the bound would be exceeded.
func (s *Spool) Append(fs []*loupev1.Finding) error {
	if len(fs) == 0 {
		return nil
	}
	vals := make([][]byte, len(fs))
	var add int64
	for i, f := range fs {
		b, err := proto.Marshal(f)
		if err != nil {
			return fmt.Errorf("spool append: encode finding %s: %w", f.GetId(), err)
		}
		if int64(len(b)) > s.maxBytes {
			return fmt.Errorf("spool append: finding %s (%d bytes): %w", f.GetId(), len(b), ErrTooLarge)
		}
		vals[i] = b
		add += int64(len(b))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var dropped map[loupev1.Severity]uint64
	var droppedBytes, droppedCount int64
	err := s.db.Update(func(tx *bolt.Tx) error {
		dropped = map[loupev1.Severity]uint64{}
		droppedBytes, droppedCount = 0, 0
		meta := tx.Bucket(metaBucket)
		seq := uint64(0)
		if v := meta.Get([]byte("seq")); len(v) == 8 {
			seq = binary.BigEndian.Uint64(v)
		}
		for i, f := range fs {
			seq++
			if err := tx.Bucket(bucketName(clampSeverity(f.GetSeverity()))).Put(seqKey(seq), vals[i]); err != nil {
				return err
			}
		}
		if err := meta.Put([]byte("seq"), seqKey(seq)); err != nil {
			return err
		}
		// Evict lowest severity first, oldest first, until under the bound.
		over := s.bytes + add - s.maxBytes
		for sev := loupev1.Severity(0); over > 0 && sev <= loupev1.Severity_SEVERITY_CRITICAL; sev++ {
			c := tx.Bucket(bucketName(sev)).Cursor()
			for k, v := c.First(); k != nil && over > 0; k, v = c.First() {
				over -= int64(len(v))
				droppedBytes += int64(len(v))
				droppedCount++
				dropped[sev]++
				if err := c.Delete(); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("spool append: %w", err)
	}
	s.count += int64(len(fs)) - droppedCount
	s.bytes += add - droppedBytes
	for sev, n := range dropped {
		s.dropped[sev] += n
	}
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return nil
}

func clampSeverity(s loupev1.Severity) loupev1.Severity {
	if s < 0 || s > loupev1.Severity_SEVERITY_CRITICAL {
		return loupev1.Severity_SEVERITY_UNSPECIFIED
	}
	return s
}

func seqKey(n uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	return b[:]
}

// Peek returns up to max waiting findings without removing them: highest
// severity first, oldest first within a severity. Entries in skip (already
// in flight) are passed over.
func (s *Spool) Peek(max int, skip map[Key]bool) ([]Entry, error) {
	var out []Entry
	err := s.db.View(func(tx *bolt.Tx) error {
		for sev := loupev1.Severity_SEVERITY_CRITICAL; sev >= 0 && len(out) < max; sev-- {
			c := tx.Bucket(bucketName(sev)).Cursor()
			for k, v := c.First(); k != nil && len(out) < max; k, v = c.Next() {
				key := Key{Severity: sev, Seq: binary.BigEndian.Uint64(k)}
				if skip[key] {
					continue
				}
				f := &loupev1.Finding{}
				if err := proto.Unmarshal(v, f); err != nil {
					// Cannot happen for data this package wrote; surface it rather than loop on it.
					return fmt.Errorf("decode spooled finding %d: %w", key.Seq, err)
				}
				out = append(out, Entry{Key: key, Finding: f})
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("spool peek: %w", err)
	}
	return out, nil
}

// Ack removes acknowledged findings. Keys already gone (dropped meanwhile) are ignored.
func (s *Spool) Ack(keys []Key) error {
	if len(keys) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var n, bytes int64
	err := s.db.Update(func(tx *bolt.Tx) error {
		n, bytes = 0, 0
		for _, k := range keys {
			b := tx.Bucket(bucketName(clampSeverity(k.Severity)))
			key := seqKey(k.Seq)
			if v := b.Get(key); v != nil {
				n++
				bytes += int64(len(v))
				if err := b.Delete(key); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("spool ack: %w", err)
	}
	s.count -= n
	s.bytes -= bytes
	return nil
}

// Ready returns a channel that receives after an Append (coalesced).
func (s *Spool) Ready() <-chan struct{} { return s.notify }

// Stats returns the current gauges and drop counters.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := make(map[loupev1.Severity]uint64, len(s.dropped))
	for k, v := range s.dropped {
		d[k] = v
	}
	return Stats{Findings: s.count, Bytes: s.bytes, Dropped: d}
}

// Writable reports whether the spool accepts writes (for /readyz).
func (s *Spool) Writable() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(metaBucket).Put([]byte("probe"), []byte(time.Now().UTC().Format(time.RFC3339)))
	})
}

// Close closes the database.
func (s *Spool) Close() error { return s.db.Close() }
