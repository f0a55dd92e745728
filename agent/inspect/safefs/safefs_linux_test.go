package safefs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestConfinedLookups(t *testing.T) {
	host := t.TempDir()
	os.WriteFile(filepath.Join(host, "secret"), []byte("host secret"), 0o644)
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "etc"), 0o755)
	os.WriteFile(filepath.Join(dir, "etc/passwd"), []byte("root:x:0:0"), 0o644)
	os.WriteFile(filepath.Join(dir, "etc/file"), []byte("f"), 0o644)
	os.Symlink(filepath.Join(host, "secret"), filepath.Join(dir, "etc/abs"))
	os.Symlink("../../../../../../"+filepath.Join(host, "secret"), filepath.Join(dir, "etc/rel"))
	os.Symlink(host, filepath.Join(dir, "hostdir"))
	r, err := OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	if b, err := r.ReadFile("/etc/passwd", 4); err != nil || string(b) != "root" {
		t.Fatalf("capped read: %q %v", b, err)
	}
	if b, err := r.ReadFile("../../../../etc/passwd", 100); err != nil || string(b) != "root:x:0:0" {
		t.Fatalf("\"..\" must stay in the root: %q %v", b, err)
	}
	for _, p := range []string{"/etc/abs", "/etc/rel", "/hostdir/secret"} {
		if b, err := r.ReadFile(p, 100); err == nil {
			t.Fatalf("%s: read %q through a symlink", p, b)
		}
	}
	// Exists: the entry itself, or a non-directory ancestor that hides it.
	for p, want := range map[string]bool{"/etc/passwd": true, "/etc/abs": true, "/etc/file/x": true, "/hostdir/secret": true, "/nope": false, "/etc/nope": false} {
		if got := r.Exists(p); got != want {
			t.Errorf("Exists(%s) = %v, want %v", p, got, want)
		}
	}
	st, err := r.Lstat("/etc/abs")
	if err != nil || st.Mode&unix.S_IFMT != unix.S_IFLNK {
		t.Fatalf("Lstat of a symlink: %o %v", st.Mode, err)
	}
	if _, err := r.OpenFile("/etc"); !errors.Is(err, ErrNotRegular) {
		t.Fatalf("directory opened as a file: %v", err)
	}
	if _, err := r.OpenDir("/hostdir"); err == nil {
		t.Fatal("OpenDir followed a symlink")
	}
}

func TestPrintableHelpers(t *testing.T) {
	if !HasDotDot("a/../b") || HasDotDot("a/..b/c") {
		t.Fatal("HasDotDot")
	}
	if Join("/", "a") != "/a" || Join("/a", "b") != "/a/b" {
		t.Fatal("Join")
	}
}

func TestOpenFileImmutableRefusesNonRegular(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644)
	unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644)
	os.Symlink("f", filepath.Join(dir, "link"))
	r, err := OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	st, _ := r.Lstat("/f")
	f, err := r.OpenFileImmutable("/f", &st)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := r.OpenFileImmutable("/fifo", nil); !errors.Is(err, ErrNotRegular) {
		t.Fatalf("FIFO: %v", err)
	}
	if _, err := r.OpenFileImmutable("/link", nil); err == nil {
		t.Fatal("followed a symlink")
	}
	other, _ := r.Lstat("/fifo")
	if _, err := r.OpenFileImmutable("/f", &other); !errors.Is(err, ErrNotRegular) {
		t.Fatalf("inode change not detected: %v", err)
	}
}
