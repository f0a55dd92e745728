//go:build linux

package classify

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestUpperDirDrift(t *testing.T) {
	upper := t.TempDir()
	os.MkdirAll(filepath.Join(upper, "tmp"), 0o755)
	os.WriteFile(filepath.Join(upper, "tmp", "evil"), []byte("\x7fELF"), 0o755)
	os.Symlink("/etc", filepath.Join(upper, "escape"))
	os.Symlink("/", filepath.Join(upper, "root"))
	c := Container{UpperDir: upper}
	var d UpperDir
	for p, want := range map[string]bool{
		"/tmp/evil": true, "/tmp/../tmp/evil": true, "/usr/bin/ls": false, "/tmp": false,
		"/escape/passwd": false, "/root/tmp/evil": true, "relative": false,
	} {
		got, err := d.InUpperLayer(c, p, 0)
		if err != nil {
			t.Errorf("%s: %v", p, err)
		}
		if got != want {
			t.Errorf("%s: in upper = %v, want %v", p, got, want)
		}
	}
	if got, _ := d.InUpperLayer(Container{}, "/tmp/evil", 0); got {
		t.Error("no upper dir reported drift")
	}
	if os.Geteuid() == 0 {
		// an overlay whiteout (0/0 character device) is a deletion, not an executable
		if err := unix.Mknod(filepath.Join(upper, "tmp", "gone"), unix.S_IFCHR|0o644, 0); err != nil {
			t.Fatal(err)
		}
		if got, _ := d.InUpperLayer(c, "/tmp/gone", 0); got {
			t.Error("whiteout reported as drift")
		}
	}
}
