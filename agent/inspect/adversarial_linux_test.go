package inspect

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/loupe-dev/loupe/agent/inspect/safefs"
	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/internal/testenv"
)

// hostCanary writes a file outside the scanned root that would be reported
// (an "ELF" with a BusyBox marker, executable) if any link were followed.
func hostCanary(t *testing.T) (path, content, hash string) {
	dir := t.TempDir()
	content = fmt.Sprintf("\x7fELF LOUPE-CANARY-%d BusyBox v9.9 secret-token", time.Now().UnixNano())
	path = filepath.Join(dir, "canary")
	if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(content))
	return path, content, hex.EncodeToString(sum[:])
}

// mkdeep creates a chain of n nested directories below dir using dir fds
// (the full path is far longer than PATH_MAX) and puts a file at the bottom.
func mkdeep(t *testing.T, dir string, n int) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := unix.Mkdirat(fd, "d", 0o755); err != nil {
			t.Fatal(err)
		}
		nfd, err := unix.Openat(fd, "d", unix.O_RDONLY|unix.O_DIRECTORY, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		fd = nfd
	}
	f, err := unix.Openat(fd, "sh", unix.O_CREAT|unix.O_WRONLY, 0o755)
	if err == nil {
		unix.Write(f, []byte("#!/bin/true\n"))
		unix.Close(f)
	}
	unix.Close(fd)
}

func scanWithin(t *testing.T, d time.Duration, tg Target, opts Options) *Report {
	t.Helper()
	done := make(chan *Report, 1)
	go func() { done <- scan(t, tg, opts) }()
	select {
	case r := <-done:
		return r
	case <-time.After(d):
		t.Fatalf("scan did not finish within %s (hang on a FIFO or device?)", d)
		return nil
	}
}

func TestAdversarialCorpus(t *testing.T) {
	testenv.RequireRoot(t) // device nodes
	canary, content, hash := hostCanary(t)
	root := t.TempDir()
	rel := strings.Repeat("../", 30) + strings.TrimPrefix(canary, "/")
	// Links at the host canary: absolute, relative-escaping, through
	// /proc magic links, through a directory link, from package DB paths.
	symlink(t, root, "usr/bin/sh", canary)
	symlink(t, root, "usr/bin/bash", rel)
	symlink(t, root, "usr/bin/wget", "/proc/self/root"+canary)
	symlink(t, root, "usr/bin/curl", "/proc/1/root"+canary)
	symlink(t, root, "hostdir", filepath.Dir(canary))
	symlink(t, root, "usr/bin/zsh", "/hostdir/canary")
	symlink(t, root, "var/lib/dpkg/status", canary)
	symlink(t, root, "etc/os-release", rel)
	symlink(t, root, "app/lib/x.jar", canary)
	// Loops.
	symlink(t, root, "loop/a", "b")
	symlink(t, root, "loop/b", "a")
	symlink(t, root, "loop/self", "self")
	symlink(t, root, "loop/dot", ".")
	symlink(t, root, "bin/ash", "/loop/a")
	// A FIFO named /bin/sh and device nodes with program names.
	os.MkdirAll(filepath.Join(root, "bin"), 0o755)
	if err := unix.Mkfifo(filepath.Join(root, "bin/sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(root, "bin/dash"), unix.S_IFCHR|0o755, int(unix.Mkdev(1, 5))); err != nil { // /dev/zero
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(root, "dev"), 0o755)
	if err := unix.Mknod(filepath.Join(root, "dev/sda"), unix.S_IFBLK|0o600, int(unix.Mkdev(8, 0))); err != nil {
		t.Fatal(err)
	}
	// Names with a newline and invalid UTF-8, on real shells.
	copyHost(t, root, "odd/new\nline/sh", "/usr/bin/dash")
	copyHost(t, root, "odd/\xff\xfe/sh", "/usr/bin/dash")
	// 100,000 files in one directory.
	many := filepath.Join(root, "many")
	os.MkdirAll(many, 0o755)
	for i := 0; i < 100_000; i++ {
		fd, err := unix.Open(filepath.Join(many, fmt.Sprintf("f%06d", i)), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
	}
	// A tree 2,000 directories deep.
	mkdeep(t, root, 2000)
	// A 10 GiB sparse executable.
	big := filepath.Join(root, "big/sparse")
	os.MkdirAll(filepath.Dir(big), 0o755)
	if f, err := os.OpenFile(big, os.O_CREATE|os.O_WRONLY, 0o755); err == nil {
		f.Truncate(10 << 30)
		f.Close()
	}

	var mu sync.Mutex
	var sparse *Entry
	var index strings.Builder
	opts := Options{HashAll: true, OnFile: func(layer string, e *Entry) {
		mu.Lock()
		defer mu.Unlock()
		if e.Path == "/big/sparse" {
			c := *e
			sparse = &c
		}
		fmt.Fprintln(&index, e.Path, e.SHA256)
	}}
	start := time.Now()
	rep := scanWithin(t, 2*time.Minute, Target{Root: root, UserKnown: true}, opts)
	t.Logf("adversarial scan: %d files in %s, warnings: %d", rep.Files, time.Since(start), len(rep.Warnings))

	out := dump(t, rep) + index.String()
	for _, secret := range []string{content, "LOUPE-CANARY", "secret-token", hash} {
		if strings.Contains(out, secret) {
			t.Fatalf("host canary leaked into output (%q)", secret)
		}
	}
	if sh := ofKind(rep, loupev1.Kind_KIND_SHELL_PRESENT); len(sh) != 2 {
		t.Fatalf("want exactly the two real dash copies as shells, got %v", sh)
	} else {
		got := paths(sh)
		if got[`/odd/new\nline/sh`] == nil || got[`/odd/\xff\xfe/sh`] == nil {
			t.Fatalf("escaped names: %v", got)
		}
	}
	if rep.Files < 100_000 {
		t.Fatalf("walked only %d files", rep.Files)
	}
	if sparse == nil || sparse.SHA256 != "" || !strings.Contains(sparse.Note, "hash cap") {
		t.Fatalf("sparse 10 GiB file: %+v", sparse)
	}
	if rep.HashedBytes > 1<<30 {
		t.Fatalf("hashed %d bytes: the cap was not applied", rep.HashedBytes)
	}
	if !strings.Contains(strings.Join(rep.Warnings, "\n"), "depth limit") {
		t.Fatalf("2,000-deep tree: no depth-limit warning in %v", rep.Warnings)
	}
}

// TestSwappedForSymlink: a file swapped for a symlink (or FIFO) between
// the directory listing and the open is never followed or opened.
func TestSwappedForSymlink(t *testing.T) {
	canary, _, _ := hostCanary(t)
	root := t.TempDir()
	write(t, root, "bin/sh", []byte("#!x"), 0o755)
	r, err := safefs.OpenRoot(root)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Lstat("/bin/sh"); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(root, "bin/sh"))
	os.Symlink(canary, filepath.Join(root, "bin/sh"))
	if f, err := r.OpenFile("/bin/sh"); err == nil {
		f.Close()
		t.Fatal("opened a file swapped for a symlink")
	}
	os.Remove(filepath.Join(root, "bin/sh"))
	unix.Mkfifo(filepath.Join(root, "bin/sh"), 0o755)
	if _, err := r.OpenFile("/bin/sh"); err != safefs.ErrNotRegular {
		t.Fatalf("FIFO: %v", err)
	}
	// Swapping a parent directory for a symlink out of the root.
	write(t, root, "usr/bin/x", []byte("x"), 0o755)
	os.RemoveAll(filepath.Join(root, "usr/bin"))
	os.Symlink(filepath.Dir(canary), filepath.Join(root, "usr/bin"))
	if _, err := r.OpenFile("/usr/bin/canary"); err == nil {
		t.Fatal("followed a parent directory symlink")
	}
}

// TestSwapDuringScan races a swapper against full scans.
func TestSwapDuringScan(t *testing.T) {
	canary, content, hash := hostCanary(t)
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		testenv.Unavailable(t, "busybox-static not installed")
	}
	root := t.TempDir()
	for i := 0; i < 200; i++ {
		write(t, root, fmt.Sprintf("filler/%d", i), []byte("x"), 0o644)
	}
	write(t, root, "bin/sh", bb, 0o755)
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		p, tmp := filepath.Join(root, "bin/sh"), filepath.Join(root, "bin/.swap")
		for i := 0; !stop.Load(); i++ {
			if i%2 == 0 {
				os.Symlink(canary, tmp)
			} else {
				os.WriteFile(tmp, bb[:64<<10], 0o755)
			}
			os.Rename(tmp, p)
		}
	}()
	for i := 0; i < 30; i++ {
		rep := scan(t, Target{Root: root}, Options{HashAll: true})
		out := dump(t, rep)
		if strings.Contains(out, hash) || strings.Contains(out, content) {
			stop.Store(true)
			t.Fatal("canary reached the output during a swap race")
		}
	}
	stop.Store(true)
	<-done
	_ = context.Background
}
