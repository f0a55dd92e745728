package safefs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNotRegular is returned by OpenFile when the entry is not a regular file
// (anymore): it was swapped for a symlink, FIFO, device or directory.
var ErrNotRegular = errors.New("not a regular file")

// walkResolve is used for every lookup: stay inside the root, never follow
// any symlink (walks see links as links), never cross a mount.
const walkResolve = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// Root is an open directory that all lookups are confined to.
type Root struct {
	fd   int
	path string
}

// OpenRoot opens the host directory dir (a trusted host path, e.g. an
// overlay lowerdir or /proc/<pid>/root) as a confinement root.
func OpenRoot(dir string) (*Root, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open root %s: %w", dir, err)
	}
	return &Root{fd: fd, path: dir}, nil
}

// Path is the host path the root was opened from.
func (r *Root) Path() string { return r.path }

// Close releases the root.
func (r *Root) Close() error { return unix.Close(r.fd) }

// clean turns a container path into the relative form openat2 wants.
func clean(p string) string {
	p = path.Clean("/" + p)
	if p == "/" {
		return "."
	}
	return p[1:]
}

func (r *Root) openat2(p string, flags uint64) (int, error) {
	how := unix.OpenHow{Flags: flags | unix.O_CLOEXEC, Resolve: walkResolve}
	for {
		fd, err := unix.Openat2(r.fd, clean(p), &how)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		return fd, err
	}
}

// Lstat stats the entry at p without following a final symlink.
func (r *Root) Lstat(p string) (unix.Stat_t, error) {
	var st unix.Stat_t
	fd, err := r.openat2(p, unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return st, err
	}
	defer unix.Close(fd)
	err = unix.Fstat(fd, &st)
	return st, err
}

// Exists reports whether p names an entry in this root, or whether some
// ancestor of p is not a directory (a file, whiteout or symlink), which in
// overlay terms also hides p. It is used to decide which layer wins.
func (r *Root) Exists(p string) bool {
	fd, err := r.openat2(p, unix.O_PATH|unix.O_NOFOLLOW)
	if err == nil {
		unix.Close(fd)
		return true
	}
	return errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR)
}

// Getxattr reads an extended attribute of the directory at p (used for
// trusted.overlay.opaque). Missing attributes return ("", nil).
func (r *Root) Getxattr(p, name string) (string, error) {
	fd, err := r.openat2(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_NONBLOCK)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	buf := make([]byte, 64)
	n, err := unix.Fgetxattr(fd, name, buf)
	if errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOTSUP) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// Dir is an open directory inside the root.
type Dir struct {
	f   *os.File
	Dev uint64
}

// OpenDir opens the directory at p for listing.
func (r *Root) OpenDir(p string) (*Dir, error) {
	fd, err := r.openat2(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_NONBLOCK)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: not a directory", p)
	}
	return &Dir{f: os.NewFile(uintptr(fd), p), Dev: st.Dev}, nil
}

// Names returns up to n more entry names (io.EOF at the end).
func (d *Dir) Names(n int) ([]string, error) { return d.f.Readdirnames(n) }

// Lstat stats the named child (a single path component from Names) without
// following symlinks.
func (d *Dir) Lstat(name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstatat(int(d.f.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW)
	return st, err
}

// Readlink reads the target of the named child symlink (capped at 4 KiB).
func (d *Dir) Readlink(name string) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(int(d.f.Fd()), name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// Opaque reports whether the named child directory carries the overlayfs
// opaque marker (trusted.overlay.opaque=y, or user.overlay.opaque=y).
func (d *Dir) Opaque(name string) bool {
	fd, err := unix.Openat(int(d.f.Fd()), name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	buf := make([]byte, 8)
	for _, attr := range []string{"trusted.overlay.opaque", "user.overlay.opaque"} {
		if n, err := unix.Fgetxattr(fd, attr, buf); err == nil && n >= 1 && buf[0] == 'y' {
			return true
		}
	}
	return false
}

// Close closes the directory.
func (d *Dir) Close() error { return d.f.Close() }

// File is a regular file opened for reading.
type File struct {
	*os.File
	Stat unix.Stat_t
}

// OpenFile opens the regular file at p for reading. The entry is first opened
// O_PATH|O_NOFOLLOW (which never triggers device or FIFO open side effects),
// fstat'ed, and reopened through /proc/self/fd only if it is a regular file;
// the reopened fd is checked to be the same inode. It never follows a symlink,
// never changes atime (O_NOATIME) and never blocks (O_NONBLOCK).
func (r *Root) OpenFile(p string) (*File, error) {
	pfd, err := r.openat2(p, unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return nil, err
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, ErrNotRegular
	}
	flags := unix.O_RDONLY | unix.O_NOCTTY | unix.O_NONBLOCK | unix.O_CLOEXEC | unix.O_NOFOLLOW
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(pfd), flags|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		fd, err = unix.Open("/proc/self/fd/"+strconv.Itoa(pfd), flags, 0)
	}
	if err != nil {
		// O_NOFOLLOW on the magic link itself gives ELOOP on kernels that
		// refuse it; retry without (the link is our own fd, not container data).
		if errors.Is(err, unix.ELOOP) {
			fd, err = unix.Open("/proc/self/fd/"+strconv.Itoa(pfd), (flags&^unix.O_NOFOLLOW)|unix.O_NOATIME, 0)
		}
		if err != nil {
			return nil, fmt.Errorf("reopen %s: %w", p, err)
		}
	}
	var st2 unix.Stat_t
	if err := unix.Fstat(fd, &st2); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if st2.Dev != st.Dev || st2.Ino != st.Ino || st2.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, ErrNotRegular
	}
	return &File{File: os.NewFile(uintptr(fd), p), Stat: st2}, nil
}

// ReadFile reads the regular file at p, at most max bytes.
func (r *Root) ReadFile(p string, max int64) ([]byte, error) {
	f, err := r.OpenFile(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, max))
}

// Join joins a container directory and a child name into a container path.
func Join(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}

// IsWhiteout reports whether st is an overlayfs whiteout (char device 0:0).
func IsWhiteout(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

// HasDotDot reports whether a slash path has a ".." component.
func HasDotDot(p string) bool {
	for _, c := range strings.Split(p, "/") {
		if c == ".." {
			return true
		}
	}
	return false
}

// OpenFileImmutable opens the regular file at p for reading directly
// (O_RDONLY|O_NOFOLLOW|O_NONBLOCK|O_NOCTTY|O_NOATIME, resolved inside the
// root without following any symlink), then fstats the fd and requires a
// regular file with the inode the caller saw (want, from the directory walk).
// It saves OpenFile's O_PATH+reopen round trip and is meant for trees nobody
// writes to during the scan — committed image layer snapshots. Should such a
// tree change anyway, the worst case is that a FIFO or device swapped in
// between the walk and the open is opened non-blocking and immediately
// closed, never read. Use OpenFile for live trees (upper dirs, /proc/<pid>/root).
func (r *Root) OpenFileImmutable(p string, want *unix.Stat_t) (*File, error) {
	flags := uint64(unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_NOCTTY)
	fd, err := r.openat2(p, flags|unix.O_NOATIME)
	if errors.Is(err, unix.EPERM) {
		fd, err = r.openat2(p, flags)
	}
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || (want != nil && (st.Dev != want.Dev || st.Ino != want.Ino)) {
		unix.Close(fd)
		return nil, ErrNotRegular
	}
	return &File{File: os.NewFile(uintptr(fd), p), Stat: st}, nil
}
