package layercache_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/loupe-dev/loupe/agent/inspect"
	"github.com/loupe-dev/loupe/agent/inspect/layercache"
	loupev1 "github.com/loupe-dev/loupe/api/v1"

	"github.com/loupe-dev/loupe/internal/testenv"
)

func put(t *testing.T, root, p string, b []byte, mode os.FileMode) {
	t.Helper()
	full := filepath.Join(root, p)
	os.MkdirAll(filepath.Dir(full), 0o755)
	if err := os.WriteFile(full, b, mode); err != nil {
		t.Fatal(err)
	}
}

func count(r *inspect.Report, k loupev1.Kind) int {
	n := 0
	for _, f := range r.Findings {
		if f.GetKind() == k {
			n++
		}
	}
	return n
}

// TestSharedAndPersistent: a second container of the same image (same layer
// ids, its own upper dir) reuses every layer from the cache, also after the
// cache is closed and reopened (agent restart); stale versions are ignored.
func TestSharedAndPersistent(t *testing.T) {
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		testenv.Unavailable(t, "busybox-static not installed")
	}
	base := t.TempDir()
	l0, l1, up1, up2 := filepath.Join(base, "l0"), filepath.Join(base, "l1"), filepath.Join(base, "up1"), filepath.Join(base, "up2")
	put(t, l0, "bin/busybox", bb, 0o755)
	os.Symlink("busybox", filepath.Join(l0, "bin/sh"))
	put(t, l1, "app/run.sh", []byte("#!/bin/sh\nexec /app/server\n"), 0o755)
	put(t, up1, "tmp/dropper", bb[:4096], 0o755)
	os.MkdirAll(up2, 0o755)
	layers := []inspect.Layer{{Dir: l0, ID: "sha256:aaa"}, {Dir: l1, ID: "sha256:bbb"}}

	state := t.TempDir()
	c, err := layercache.Open(state)
	if err != nil {
		t.Fatal(err)
	}
	s := inspect.New(inspect.Options{}, c, nil)
	ctx := context.Background()
	first, err := s.Scan(ctx, inspect.Target{Layers: layers, Upper: up1})
	if err != nil {
		t.Fatal(err)
	}
	if first.CacheHits != 0 || c.Len() != 2 || count(first, loupev1.Kind_KIND_SHELL_PRESENT) != 2 || count(first, loupev1.Kind_KIND_DRIFT_FILE) != 1 {
		t.Fatalf("first: hits %d cached %d findings %v", first.CacheHits, c.Len(), first.Findings)
	}
	second, err := s.Scan(ctx, inspect.Target{Layers: layers, Upper: up2})
	if err != nil {
		t.Fatal(err)
	}
	if second.CacheHits != 2 || count(second, loupev1.Kind_KIND_SHELL_PRESENT) != 2 || count(second, loupev1.Kind_KIND_DRIFT_FILE) != 0 {
		t.Fatalf("second: hits %d findings %v", second.CacheHits, second.Findings)
	}
	c.Close()

	c2, err := layercache.Open(state)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	// Prove the cache is used: the layer dirs' content changes, the cached
	// result (same identity = immutable layer) is what is reported.
	os.Remove(filepath.Join(l0, "bin/busybox"))
	third, err := inspect.New(inspect.Options{}, c2, nil).Scan(ctx, inspect.Target{Layers: layers, Upper: up1})
	if err != nil {
		t.Fatal(err)
	}
	if third.CacheHits != 2 || count(third, loupev1.Kind_KIND_SHELL_PRESENT) != 2 {
		t.Fatalf("after restart: hits %d findings %v", third.CacheHits, third.Findings)
	}

	r, ok, err := c2.Get("sha256:aaa")
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	r.ID, r.ScannerVersion = "sha256:old", "inspect/0"
	if err := c2.Put(r); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := c2.Get("sha256:old"); ok {
		t.Fatal("result of another scanner version served")
	}
}
