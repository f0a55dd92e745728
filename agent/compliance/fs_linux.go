package compliance

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/loupe-dev/loupe/agent/inspect"
	"github.com/loupe-dev/loupe/agent/inspect/safefs"
)

// LayeredFS is the merged view of a container's layers (top wins, overlay
// whiteouts and opaque directories honoured), read without mounting: every
// access goes through safefs (openat2 RESOLVE_IN_ROOT, no symlink following
// by the kernel); symlinks are resolved here, inside the merged root, with
// a hop limit. Nothing is written or executed.
type LayeredFS struct {
	roots []*safefs.Root // top first
}

// maxHops bounds symlink resolution (as the kernel's 40).
const maxHops = 40

// maxDirEntries bounds a directory listing.
const maxDirEntries = 100000

// NewFS opens the merged view of a scan target: its upper dir and image
// layers, or its plain root directory. Close it after use.
func NewFS(t inspect.Target) (*LayeredFS, error) {
	l := &LayeredFS{}
	add := func(dir string) error {
		r, err := safefs.OpenRoot(dir)
		if err != nil {
			l.Close()
			return fmt.Errorf("open layer %s: %w", dir, err)
		}
		l.roots = append(l.roots, r)
		return nil
	}
	if len(t.Layers) > 0 {
		if t.Upper != "" {
			if err := add(t.Upper); err != nil {
				return nil, err
			}
		}
		for i := len(t.Layers) - 1; i >= 0; i-- {
			if err := add(t.Layers[i].Dir); err != nil {
				return nil, err
			}
		}
		return l, nil
	}
	if t.Root == "" {
		return nil, errors.New("open container filesystem: target has neither layers nor a root directory")
	}
	if err := add(t.Root); err != nil {
		return nil, err
	}
	return l, nil
}

// Close releases the layer directories.
func (l *LayeredFS) Close() error {
	for _, r := range l.roots {
		r.Close()
	}
	l.roots = nil
	return nil
}

func pathErr(op, p string, err error) error { return &fs.PathError{Op: op, Path: p, Err: err} }

func isMissing(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP)
}

// lookup finds the entry at the physical (symlink-free) path p among the
// candidate layers, top first; it returns the layer index or -1.
func (l *LayeredFS) lookup(p string, cands []int) (int, unix.Stat_t, error) {
	for _, i := range cands {
		st, err := l.roots[i].Lstat(p)
		if err != nil {
			if isMissing(err) {
				continue
			}
			return -1, st, err
		}
		if safefs.IsWhiteout(&st) {
			return -1, st, nil
		}
		return i, st, nil
	}
	return -1, unix.Stat_t{}, nil
}

// below returns the layers whose copy of directory p merges into the one
// found in layer top: from top down to the first opaque directory, skipping
// layers without p, stopping at a whiteout or a non-directory.
func (l *LayeredFS) below(p string, top int, cands []int) []int {
	var out []int
	for _, i := range cands {
		if i < top {
			continue
		}
		st, err := l.roots[i].Lstat(p)
		if err != nil {
			if isMissing(err) {
				continue
			}
			break
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			break
		}
		out = append(out, i)
		if p != "/" {
			if v, _ := l.roots[i].Getxattr(p, "trusted.overlay.opaque"); v == "y" {
				break
			}
		}
	}
	return out
}

// resolve walks p through the merged view. It returns the physical path,
// the winning layer, its stat, and for directories the merging layers.
func (l *LayeredFS) resolve(p string, followLast bool) (string, int, unix.Stat_t, []int, error) {
	all := make([]int, len(l.roots))
	for i := range all {
		all[i] = i
	}
	hops := 0
restart:
	p = path.Clean("/" + p)
	cands := all
	cur := "/"
	idx := 0
	var st unix.Stat_t
	if len(l.roots) > 0 {
		var err error
		if st, err = l.roots[0].Lstat("/"); err != nil {
			return "", -1, st, nil, err
		}
	}
	if p == "/" {
		return "/", 0, st, cands, nil
	}
	comps := strings.Split(p[1:], "/")
	for ci, c := range comps {
		next := path.Join(cur, c)
		i, s, err := l.lookup(next, cands)
		if err != nil {
			return "", -1, s, nil, err
		}
		if i < 0 {
			return "", -1, s, nil, unix.ENOENT
		}
		last := ci == len(comps)-1
		switch s.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			if last && !followLast {
				return next, i, s, nil, nil
			}
			if hops++; hops > maxHops {
				return "", -1, s, nil, unix.ELOOP
			}
			d, err := l.roots[i].OpenDir(cur)
			if err != nil {
				return "", -1, s, nil, err
			}
			target, err := d.Readlink(c)
			d.Close()
			if err != nil {
				return "", -1, s, nil, err
			}
			rest := strings.Join(comps[ci+1:], "/")
			if strings.HasPrefix(target, "/") {
				p = target + "/" + rest
			} else {
				p = cur + "/" + target + "/" + rest
			}
			goto restart
		case unix.S_IFDIR:
			cands = l.below(next, i, cands)
		default:
			if !last {
				return "", -1, s, nil, unix.ENOTDIR
			}
		}
		cur, idx, st = next, i, s
	}
	return cur, idx, st, cands, nil
}

func infoOf(st *unix.Stat_t) Info {
	fi := Info{Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid, Size: st.Size}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		fi.Type = 'f'
	case unix.S_IFDIR:
		fi.Type = 'd'
	case unix.S_IFLNK:
		fi.Type = 'l'
	default:
		fi.Type = 'o'
	}
	return fi
}

// Lstat implements FS.
func (l *LayeredFS) Lstat(p string) (Info, error) {
	phys, i, st, _, err := l.resolve(p, false)
	if err != nil {
		return Info{}, pathErr("lstat", p, mapErr(err))
	}
	fi := infoOf(&st)
	if fi.Type == 'l' {
		if d, err := l.roots[i].OpenDir(path.Dir(phys)); err == nil {
			fi.Link, _ = d.Readlink(path.Base(phys))
			d.Close()
		}
	}
	return fi, nil
}

// Stat implements FS.
func (l *LayeredFS) Stat(p string) (Info, error) {
	_, _, st, _, err := l.resolve(p, true)
	if err != nil {
		return Info{}, pathErr("stat", p, mapErr(err))
	}
	return infoOf(&st), nil
}

func mapErr(err error) error {
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return fs.ErrNotExist
	}
	return err
}

func (l *LayeredFS) open(p string) (*safefs.File, error) {
	phys, i, st, _, err := l.resolve(p, true)
	if err != nil {
		return nil, pathErr("open", p, mapErr(err))
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, pathErr("open", p, errors.New("not a regular file"))
	}
	f, err := l.roots[i].OpenFile(phys)
	if err != nil {
		return nil, pathErr("open", p, err)
	}
	return f, nil
}

// ReadFile implements FS.
func (l *LayeredFS) ReadFile(p string, max int64) ([]byte, error) {
	f, err := l.open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, pathErr("read", p, err)
	}
	if int64(len(b)) > max {
		return nil, pathErr("read", p, fmt.Errorf("%w (more than %d bytes)", ErrTooLarge, max))
	}
	return b, nil
}

// SHA256 implements FS.
func (l *LayeredFS) SHA256(p string) (string, error) {
	f, err := l.open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(f, 1<<30)); err != nil {
		return "", pathErr("read", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ReadDir implements FS: the union of the merging layers' entries, minus
// whiteouts, sorted.
func (l *LayeredFS) ReadDir(p string) ([]string, error) {
	phys, _, st, cands, err := l.resolve(p, true)
	if err != nil {
		return nil, pathErr("readdir", p, mapErr(err))
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, pathErr("readdir", p, unix.ENOTDIR)
	}
	decided := map[string]bool{}
	var out []string
	for _, i := range cands {
		d, err := l.roots[i].OpenDir(phys)
		if err != nil {
			if isMissing(err) {
				continue
			}
			return nil, pathErr("readdir", p, err)
		}
		names, err := d.Names(maxDirEntries)
		if err != nil && err != io.EOF {
			d.Close()
			return nil, pathErr("readdir", p, err)
		}
		for _, n := range names {
			if decided[n] {
				continue
			}
			decided[n] = true
			if cst, err := d.Lstat(n); err == nil && safefs.IsWhiteout(&cst) {
				continue
			}
			out = append(out, n)
		}
		d.Close()
		if len(decided) > maxDirEntries {
			return nil, pathErr("readdir", p, fmt.Errorf("more than %d entries", maxDirEntries))
		}
	}
	sort.Strings(out)
	return out, nil
}

var _ FS = (*LayeredFS)(nil)
