package inspect

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/loupe-dev/loupe/agent/inspect/pkgdb"
	"github.com/loupe-dev/loupe/agent/inspect/safefs"
)

// layerMode says how a directory is read.
type layerMode int

const (
	modeRoot    layerMode = iota // plain root fs: no overlay semantics
	modeOverlay                  // image layer: whiteouts and opaque dirs mean deletions
	modeUpper                    // upper dir: overlay semantics, every entry kept
)

type fileJob struct {
	path string
	st   unix.Stat_t
}

var (
	markBusybox = []byte("BusyBox v")
	markToybox  = []byte("\x00toybox\x00")
	markBash    = []byte("GNU bash, version")
)

const readBuf = 1 << 20

const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// scanLayer walks dir iteratively (never recursing, never following a
// symlink) and hashes/classifies its regular files on opts.Workers goroutines.
// label names the layer in OnFile and Progress callbacks.
func scanLayer(ctx context.Context, dir, id, label string, mode layerMode, opts Options) (*LayerResult, error) {
	start := time.Now()
	root, err := safefs.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	res := &LayerResult{ID: id, ScannerVersion: ScannerVersion}
	ctx, cancel := context.WithTimeout(ctx, opts.MaxDuration)
	defer cancel()

	workers := opts.Workers
	if workers <= 0 {
		// More readers than cores: hashing is CPU-bound when the page cache
		// is warm, but cold scans need several reads in flight to keep the
		// disk busy.
		workers = min(4*runtime.GOMAXPROCS(0), 16)
	}
	links := &sync.Map{} // dev/ino → *Entry: hard links are read once
	jobs := make(chan fileJob, 1024)
	out := make(chan *Entry, 1024)
	var hashed atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, readBuf)
			for j := range jobs {
				e := examineLinked(root, j, mode, opts, buf, &hashed, links)
				out <- e
			}
		}()
	}

	// The collector owns fres (file entries and their warnings); the walk,
	// running concurrently, owns res. They are joined at the end.
	fres := &LayerResult{}
	collected := make(chan struct{})
	var files, bytesSeen atomic.Int64
	go func() {
		defer close(collected)
		last := time.Now()
		for e := range out {
			if opts.OnFile != nil {
				opts.OnFile(label, e)
			}
			if e.Note != "" && strings.HasPrefix(e.Note, "error: ") {
				fres.warn(printable(e.Path) + ": " + strings.TrimPrefix(e.Note, "error: "))
			}
			if keepFile(e, mode) {
				fres.Entries = append(fres.Entries, *e)
			}
			if opts.Progress != nil && time.Since(last) > time.Second {
				last = time.Now()
				opts.Progress(Progress{Layer: label, Files: files.Load(), Bytes: bytesSeen.Load()})
			}
		}
	}()

	walkErr := walk(ctx, root, mode, opts, res, func(j fileJob) {
		files.Add(1)
		bytesSeen.Add(j.st.Size)
		select {
		case jobs <- j:
		case <-ctx.Done():
		}
	})
	close(jobs)
	wg.Wait()
	close(out)
	<-collected
	res.Entries = append(res.Entries, fres.Entries...)
	res.Errors += fres.Errors - int64(len(fres.Warnings))
	for _, w := range fres.Warnings {
		res.warn(w)
	}
	res.Files = files.Load()
	res.Bytes = bytesSeen.Load()
	res.HashedBytes = hashed.Load()
	res.Duration = time.Since(start)
	if walkErr != nil {
		return nil, walkErr
	}
	return res, nil
}

type dirItem struct {
	path  string
	depth int
}

// walk lists directories depth-first with an explicit stack. Non-regular
// entries are recorded directly; regular files go to emit.
func walk(ctx context.Context, root *safefs.Root, mode layerMode, opts Options, res *LayerResult, emit func(fileJob)) error {
	rootDir, err := root.OpenDir("/")
	if err != nil {
		return fmt.Errorf("open layer root %s: %w", root.Path(), err)
	}
	rootDev := rootDir.Dev
	rootDir.Close()
	stack := []dirItem{{"/", 0}}
	var nfiles int64
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			res.Truncated = "time limit reached"
			if errors.Is(ctx.Err(), context.Canceled) {
				return ctx.Err()
			}
			return nil
		}
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		d, err := root.OpenDir(it.path)
		if err != nil {
			res.warn(fmt.Sprintf("%s: open directory: %v", printable(it.path), err))
			continue
		}
		if d.Dev != rootDev {
			d.Close() // another filesystem mounted here: never crossed
			continue
		}
		for {
			names, err := d.Names(512)
			for _, name := range names {
				p := safefs.Join(it.path, name)
				st, err := d.Lstat(name)
				if err != nil {
					res.warn(fmt.Sprintf("%s: lstat: %v", printable(p), err))
					continue
				}
				switch st.Mode & unix.S_IFMT {
				case unix.S_IFDIR:
					res.Dirs++
					opaque := mode != modeRoot && d.Opaque(name)
					ww := st.Mode&0o002 != 0 && st.Mode&unix.S_ISVTX == 0
					if opaque || ww || mode == modeUpper {
						res.Entries = append(res.Entries, statEntry(p, TypeDir, &st, func(e *Entry) { e.Opaque = opaque }))
					}
					if it.depth+1 > opts.MaxDepth {
						if res.Truncated == "" {
							res.Truncated = fmt.Sprintf("directory depth limit %d reached at %s", opts.MaxDepth, printable(p))
						}
						continue
					}
					if st.Dev != rootDev {
						continue
					}
					stack = append(stack, dirItem{p, it.depth + 1})
				case unix.S_IFREG:
					nfiles++
					if nfiles > opts.MaxFiles {
						res.Truncated = fmt.Sprintf("file limit %d reached", opts.MaxFiles)
						d.Close()
						return nil
					}
					emit(fileJob{path: p, st: st})
				case unix.S_IFLNK:
					res.Symlinks++
					target, err := d.Readlink(name)
					if err != nil {
						res.warn(fmt.Sprintf("%s: readlink: %v", printable(p), err))
						continue
					}
					if mode == modeUpper || keepLink(p, name, target, it.depth) {
						res.Entries = append(res.Entries, statEntry(p, TypeSymlink, &st, func(e *Entry) { e.Link = target }))
					}
				default:
					if mode != modeRoot && safefs.IsWhiteout(&st) {
						res.Entries = append(res.Entries, statEntry(p, TypeWhiteout, &st, nil))
						continue
					}
					res.Special++
					if mode == modeUpper || st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
						res.Entries = append(res.Entries, statEntry(p, TypeOther, &st, nil))
					}
				}
			}
			if err == io.EOF || (err == nil && len(names) == 0) {
				break
			}
			if err != nil {
				res.warn(fmt.Sprintf("%s: read directory: %v", printable(it.path), err))
				break
			}
			if ctx.Err() != nil {
				break
			}
		}
		d.Close()
	}
	return nil
}

func statEntry(p string, typ byte, st *unix.Stat_t, fn func(*Entry)) Entry {
	e := Entry{Path: p, Type: typ, Mode: st.Mode, UID: st.Uid, GID: st.Gid, Size: st.Size, Dev: st.Dev, Ino: st.Ino}
	if fn != nil {
		fn(&e)
	}
	return e
}

// keepLink keeps symlinks that may matter: known program/library names and
// the top-level directory links (/bin -> usr/bin) needed to resolve them.
func keepLink(p, name, target string, depth int) bool {
	return depth <= 1 || knownName(name) || multiNames[path.Base(target)] || shellNames[path.Base(target)]
}

// keepFile decides whether a regular file's entry is kept in the result.
func keepFile(e *Entry, mode layerMode) bool {
	if mode == modeUpper {
		return true
	}
	return e.Executable() || e.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 || e.Mode&0o002 != 0 ||
		len(e.Packages) > 0 || e.OSRelease != nil || knownName(path.Base(e.Path))
}

type inode struct{ dev, ino uint64 }

// examineLinked reuses the content facts of an already examined hard link of
// the same inode (multi-call binaries often have hundreds of names).
func examineLinked(root *safefs.Root, j fileJob, mode layerMode, opts Options, buf []byte, hashed *atomic.Int64, links *sync.Map) *Entry {
	if j.st.Nlink <= 1 {
		return examineFile(root, j, mode, opts, buf, hashed)
	}
	k := inode{j.st.Dev, j.st.Ino}
	if v, ok := links.Load(k); ok {
		prev := v.(*Entry)
		e := statEntry(j.path, TypeFile, &j.st, nil)
		e.SHA256, e.Class, e.Multi, e.Shebang, e.GoVersion, e.Note = prev.SHA256, prev.Class, prev.Multi, prev.Shebang, prev.GoVersion, prev.Note
		if pkgFileKind(j.path) == pkgFileKind(prev.Path) {
			e.Packages = withPath(append([]pkgdb.Package(nil), prev.Packages...), j.path)
		}
		return &e
	}
	e := examineFile(root, j, mode, opts, buf, hashed)
	if e.Note == "" || !strings.HasPrefix(e.Note, "error: ") {
		links.Store(k, e)
	}
	return e
}

// examineFile opens one regular file safely, classifies it from its
// content, hashes it (within the cap) and parses it when it is a package
// database, metadata file, jar or Go binary.
func examineFile(root *safefs.Root, j fileJob, mode layerMode, opts Options, buf []byte, hashed *atomic.Int64) *Entry {
	e := statEntry(j.path, TypeFile, &j.st, nil)
	if j.st.Size == 0 {
		// Nothing to read (and nothing to classify): hash of no bytes.
		e.SHA256 = emptySHA256
		return &e
	}
	var f *safefs.File
	var err error
	if mode == modeOverlay {
		f, err = root.OpenFileImmutable(j.path, &j.st) // committed image layer
	} else {
		f, err = root.OpenFile(j.path) // live tree: O_PATH, fstat, reopen
	}
	if err != nil {
		if errors.Is(err, safefs.ErrNotRegular) {
			e.Note = "changed type during scan: not read"
		} else {
			e.Note = "error: open: " + err.Error()
		}
		return &e
	}
	defer f.Close()
	// Facts from the fd, not from the earlier lstat.
	e.Mode, e.UID, e.GID, e.Size, e.Dev, e.Ino = f.Stat.Mode, f.Stat.Uid, f.Stat.Gid, f.Stat.Size, f.Stat.Dev, f.Stat.Ino

	head := buf[:4096]
	n, err := io.ReadFull(f, head)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		e.Note = "error: read: " + err.Error()
		return &e
	}
	head = head[:n]
	switch {
	case bytes.HasPrefix(head, []byte("\x7fELF")):
		e.Class = "elf"
	case bytes.HasPrefix(head, []byte("#!")):
		e.Class = "script"
		line, _, _ := bytes.Cut(head[2:], []byte("\n"))
		if len(line) > 128 {
			line = line[:128]
		}
		e.Shebang = strings.TrimSpace(string(line))
	}
	kind := pkgFileKind(j.path)
	base := path.Base(j.path)
	want := opts.HashAll || mode == modeUpper || e.Class != "" || e.Mode&0o111 != 0 ||
		e.Mode&(unix.S_ISUID|unix.S_ISGID|0o002) != 0 || kind != "" || knownName(base)
	if !want {
		return &e
	}
	if e.Size > opts.HashCap {
		e.Note = fmt.Sprintf("not hashed: larger than the %d byte hash cap", opts.HashCap)
	} else {
		h := sha256.New()
		h.Write(head)
		total := int64(n)
		var tail []byte
		scan := e.Class == "elf"
		if scan {
			e.Multi = multiMarker(head)
			tail = append(tail, head[max(0, len(head)-32):]...)
		}
		for total < opts.HashCap+1 {
			m, err := f.Read(buf)
			if m > 0 {
				h.Write(buf[:m])
				total += int64(m)
				if scan && e.Multi == "" {
					e.Multi = multiMarker(append(tail, buf[:min(m, 32)]...))
					if e.Multi == "" {
						e.Multi = multiMarker(buf[:m])
					}
					tail = append(tail[:0], buf[max(0, m-32):m]...)
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				e.Note = "error: read: " + err.Error()
				return &e
			}
		}
		if total > opts.HashCap {
			e.Note = "not hashed: grew past the hash cap during the scan"
		} else {
			e.SHA256 = hex.EncodeToString(h.Sum(nil))
			hashed.Add(total)
		}
	}
	parseFile(f.File, &e, kind, opts)
	if e.GoVersion != "" {
		// busybox, toybox and bash are C programs: a Go binary that carries
		// their marker strings (a scanner such as Loupe itself) is none of them.
		e.Multi = ""
	}
	return &e
}

// multiMarker names the multi-call binary whose marker b contains. The
// version markers must be followed by a version number ("BusyBox v1.35.0"),
// not by whatever text happens to come next.
func multiMarker(b []byte) string {
	switch {
	case versionMarker(b, markBusybox):
		return "busybox"
	case bytes.Contains(b, markToybox):
		return "toybox"
	case versionMarker(b, markBash):
		return "bash"
	}
	return ""
}

// versionMarker reports whether b contains marker followed by a digit
// (after optional spaces).
func versionMarker(b, marker []byte) bool {
	for {
		i := bytes.Index(b, marker)
		if i < 0 {
			return false
		}
		rest := bytes.TrimLeft(b[i+len(marker):], " ")
		if len(rest) > 0 && rest[0] >= '0' && rest[0] <= '9' {
			return true
		}
		b = b[i+len(marker):]
	}
}

// parseFile runs the inventory parser for the file's kind.
func parseFile(f io.ReaderAt, e *Entry, kind string, opts Options) {
	if e.Class == "elf" {
		// debug/buildinfo reads bounded pieces through ReaderAt: fine for
		// large binaries (the caller already applied the hash cap).
		if pk, gv, err := pkgdb.GoBinary(f, e.Path); err == nil {
			e.Packages, e.GoVersion = pk, gv
		}
		return
	}
	if e.Size > opts.MaxParse {
		if kind != "" {
			e.Note = "not parsed: larger than the parse cap"
		}
		return
	}
	read := func() []byte {
		b := make([]byte, e.Size)
		n, _ := f.ReadAt(b, 0)
		return b[:n]
	}
	switch kind {
	case "dpkg":
		e.Packages = withPath(pkgdb.ParseDpkgStatus(read(), ""), e.Path)
	case "apk":
		e.Packages = withPath(pkgdb.ParseApkInstalled(read(), ""), e.Path)
	case "os-release":
		e.OSRelease = pkgdb.ParseOSRelease(read())
	case "python":
		if p, ok := pkgdb.ParsePythonMetadata(read()); ok {
			e.Packages = withPath([]pkgdb.Package{p}, e.Path)
		}
	case "npm":
		if p, ok := pkgdb.ParsePackageJSON(read()); ok {
			e.Packages = withPath([]pkgdb.Package{p}, e.Path)
		}
	case "jar":
		pk, err := pkgdb.ScanJar(f, e.Size, e.Path)
		if err != nil {
			e.Note = "error: " + err.Error()
		}
		e.Packages = pk
	}
}

func withPath(ps []pkgdb.Package, p string) []pkgdb.Package {
	for i := range ps {
		ps[i].Path = p
	}
	return ps
}
