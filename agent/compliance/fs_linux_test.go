package compliance

import (
	"errors"
	"io/fs"
	"path/filepath"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/loupe-dev/loupe/agent/inspect"
	"github.com/loupe-dev/loupe/internal/testenv"
)

// TestLayeredFS: top layer wins, whiteouts delete, opaque directories hide
// lower layers, absolute symlinks resolve inside the merged root.
func TestLayeredFS(t *testing.T) {
	testenv.RequireRoot(t) // whiteouts (mknod) and trusted.* xattrs
	lower, mid, upper := t.TempDir(), t.TempDir(), t.TempDir()
	tree(t, lower, map[string]string{
		"etc/a": "lower a", "etc/b": "lower b", "opq/old": "hidden", "usr/bin/tool": "tool", "bin": "->usr/bin",
	})
	tree(t, mid, map[string]string{"etc/a": "mid a", "opq/new": "new", "opq/" + "sub/": ""})
	if err := unix.Setxattr(filepath.Join(mid, "opq"), "trusted.overlay.opaque", []byte("y"), 0); err != nil {
		t.Fatalf("set trusted.overlay.opaque: %v", err)
	}
	tree(t, upper, map[string]string{"link": "->/etc/a", "escape": "->../../../../etc/passwd", "etc/c": "upper c"})
	if err := unix.Mknod(filepath.Join(upper, "etc/b"), unix.S_IFCHR, 0); err != nil {
		t.Fatalf("mknod whiteout: %v", err)
	}
	l, err := NewFS(inspect.Target{Layers: []inspect.Layer{{Dir: lower}, {Dir: mid}}, Upper: upper})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	read := func(p string) string {
		b, err := l.ReadFile(p, 100)
		if err != nil {
			return "error: " + err.Error()
		}
		return string(b)
	}
	if got := read("/etc/a"); got != "mid a" {
		t.Errorf("/etc/a = %q", got)
	}
	if got := read("/link"); got != "mid a" {
		t.Errorf("/link = %q", got)
	}
	if _, err := l.Stat("/etc/b"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("whited-out /etc/b: %v", err)
	}
	if _, err := l.Stat("/opq/old"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("/opq/old below an opaque dir: %v", err)
	}
	if got := read("/bin/tool"); got != "tool" {
		t.Errorf("/bin/tool through the /bin symlink = %q", got)
	}
	if _, err := l.Stat("/escape"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("/escape must resolve inside the root (to a missing /etc/passwd): %v", err)
	}
	names, err := l.ReadDir("/etc")
	if err != nil || !reflect.DeepEqual(names, []string{"a", "c"}) {
		t.Errorf("ReadDir /etc = %v, %v", names, err)
	}
	names, err = l.ReadDir("/opq")
	if err != nil || !reflect.DeepEqual(names, []string{"new", "sub"}) {
		t.Errorf("ReadDir /opq = %v, %v", names, err)
	}
	fi, err := l.Lstat("/link")
	if err != nil || fi.Type != 'l' || fi.Link != "/etc/a" {
		t.Errorf("Lstat /link = %+v, %v", fi, err)
	}
	if _, err := l.ReadFile("/etc/a", 3); !errors.Is(err, ErrTooLarge) {
		t.Errorf("ReadFile over max: %v", err)
	}
}
