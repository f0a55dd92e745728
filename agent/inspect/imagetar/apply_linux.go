package imagetar

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

const inRoot = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS

type applier struct {
	root    int
	img     *Image
	lim     Limits
	bytes   int64
	entries int64
	created map[string]bool // entries created by the current layer
}

// apply applies one uncompressed layer tar stream.
func (a *applier) apply(r io.Reader) error {
	a.created = map[string]bool{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read layer tar: %w", err)
		}
		a.entries++
		if a.entries > a.lim.MaxEntries {
			return fmt.Errorf("more than %d entries", a.lim.MaxEntries)
		}
		if err := a.entry(h, tr); err != nil {
			return err
		}
	}
}

func (a *applier) entry(h *tar.Header, tr io.Reader) error {
	raw := h.Name
	if strings.HasPrefix(raw, "/") || hasDotDot(raw) {
		a.img.warn("rejected entry %q: absolute or contains ..", raw)
		return nil
	}
	name := path.Clean(raw)
	if name == "." || name == "" {
		return nil
	}
	dir, base := path.Dir(name), path.Base(name)
	if base == ".wh..wh..opq" {
		return a.opaque(dir)
	}
	if strings.HasPrefix(base, ".wh.") {
		pfd, err := a.openDir(dir, false)
		if err != nil {
			return nil // nothing to delete
		}
		defer unix.Close(pfd)
		if err := removeAt(pfd, strings.TrimPrefix(base, ".wh."), 0); err != nil && !errors.Is(err, unix.ENOENT) {
			a.img.warn("whiteout %q: %v", raw, err)
		}
		return nil
	}
	switch h.Typeflag {
	case tar.TypeChar, tar.TypeBlock:
		a.img.warn("rejected device node %q", raw)
		return nil
	case tar.TypeFifo:
		a.img.warn("skipped FIFO %q", raw)
		return nil
	case tar.TypeDir, tar.TypeReg, tar.TypeSymlink, tar.TypeLink:
	default:
		return nil // pax headers etc. are consumed by archive/tar
	}
	pfd, err := a.openDir(dir, true)
	if err != nil {
		a.img.warn("entry %q: parent: %v", raw, err)
		return nil
	}
	defer unix.Close(pfd)
	mode := uint32(h.Mode & 0o7777)
	if h.Typeflag == tar.TypeDir {
		var st unix.Stat_t
		if unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			removeAt(pfd, base, 0)
		}
		if err := unix.Mkdirat(pfd, base, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			a.img.warn("mkdir %q: %v", raw, err)
			return nil
		}
		a.created[name] = true
		fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == nil {
			unix.Fchown(fd, h.Uid, h.Gid)
			unix.Fchmod(fd, mode)
			unix.Close(fd)
		}
		return nil
	}
	if err := removeAt(pfd, base, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		a.img.warn("replace %q: %v", raw, err)
		return nil
	}
	a.created[name] = true
	switch h.Typeflag {
	case tar.TypeSymlink:
		if err := unix.Symlinkat(h.Linkname, pfd, base); err != nil {
			a.img.warn("symlink %q: %v", raw, err)
			return nil
		}
		unix.Fchownat(pfd, base, h.Uid, h.Gid, unix.AT_SYMLINK_NOFOLLOW)
	case tar.TypeLink:
		target := h.Linkname
		if strings.HasPrefix(target, "/") || hasDotDot(target) {
			a.img.warn("rejected hard link %q -> %q: out of the root", raw, target)
			return nil
		}
		how := unix.OpenHow{Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: inRoot}
		sfd, err := unix.Openat2(a.root, path.Clean(target), &how)
		if err != nil {
			a.img.warn("hard link %q -> %q: %v", raw, target, err)
			return nil
		}
		defer unix.Close(sfd)
		if err := unix.Linkat(sfd, "", pfd, base, unix.AT_EMPTY_PATH); err != nil {
			a.img.warn("hard link %q: %v", raw, err)
		}
	case tar.TypeReg:
		if a.bytes+h.Size > a.lim.MaxBytes {
			return fmt.Errorf("image content larger than %d bytes", a.lim.MaxBytes)
		}
		fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			a.img.warn("create %q: %v", raw, err)
			return nil
		}
		f := fdWriter(fd)
		n, err := io.Copy(f, io.LimitReader(tr, h.Size))
		a.bytes += n
		if err == nil {
			unix.Fchown(fd, h.Uid, h.Gid)
			err = unix.Fchmod(fd, mode)
		}
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("write %q: %w", raw, err)
		}
	}
	return nil
}

type fdWriter int

func (w fdWriter) Write(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := unix.Write(int(w), b[n:])
		if err != nil {
			return n, err
		}
		n += m
	}
	return n, nil
}

// openDir returns an fd of the directory dir inside the root (resolved
// inside it), creating missing components when create is set.
func (a *applier) openDir(dir string, create bool) (int, error) {
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: inRoot}
	if dir == "." || dir == "" {
		return unix.Openat2(a.root, ".", &how)
	}
	fd, err := unix.Openat2(a.root, dir, &how)
	if err == nil || !create || !errors.Is(err, unix.ENOENT) {
		return fd, err
	}
	parent, err := a.openDir(path.Dir(dir), true)
	if err != nil {
		return -1, err
	}
	defer unix.Close(parent)
	if err := unix.Mkdirat(parent, path.Base(dir), 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, err
	}
	return unix.Openat2(parent, path.Base(dir), &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS})
}

// opaque empties dir of everything not created by the current layer.
func (a *applier) opaque(dir string) error {
	pfd, err := a.openDir(dir, true)
	if err != nil {
		return nil
	}
	defer unix.Close(pfd)
	fd, err := unix.Openat(pfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	names, _ := readNames(fd)
	unix.Close(fd)
	for _, n := range names {
		if !a.created[path.Join(dir, n)] {
			removeAt(pfd, n, 0)
		}
	}
	return nil
}

func readNames(fd int) ([]string, error) {
	var names []string
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return names, err
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}

// removeAt removes name under dirfd, recursively for directories; it never
// follows symlinks.
func removeAt(dirfd int, name string, depth int) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return err
	}
	if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return err
	}
	if depth > 4096 {
		return errors.New("directory too deep to remove")
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	names, _ := readNames(fd)
	for _, n := range names {
		removeAt(fd, n, depth+1)
	}
	unix.Close(fd)
	return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
}
