//go:build linux

package classify

import (
	"errors"
	"fmt"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// UpperDir is a DriftChecker that looks the executed path up in the
// container's overlay upper directory (Container.UpperDir, a host path):
// a regular file there means the binary was added or replaced at runtime.
// The path is resolved inside the upper directory only (openat2
// RESOLVE_IN_ROOT), never followed outside it.
type UpperDir struct{}

// InUpperLayer implements DriftChecker.
func (UpperDir) InUpperLayer(c Container, p string, ino uint64) (bool, error) {
	if c.UpperDir == "" || !strings.HasPrefix(p, "/") {
		return false, nil
	}
	root, err := unix.Open(c.UpperDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("open upper dir %s: %w", c.UpperDir, err)
	}
	defer unix.Close(root)
	fd, err := unix.Openat2(root, path.Clean(p), &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up %s in upper dir: %w", p, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false, fmt.Errorf("stat %s in upper dir: %w", p, err)
	}
	// Whiteouts are character devices; directories and links are not executed.
	return st.Mode&unix.S_IFMT == unix.S_IFREG, nil
}
