package capture

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/loupe-dev/loupe/agent/inspect/safefs"
	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/runtime"
)

// Defaults and hard bounds of a capture.
const (
	DefaultMaxFileBytes  = 16 << 20
	DefaultMaxTotalBytes = 512 << 20
	// HardMaxFileBytes and HardMaxTotalBytes bound what a request may ask for.
	HardMaxFileBytes  = 256 << 20
	HardMaxTotalBytes = 4 << 30
	// MaxHashBytes: files larger than this are listed without a sha256.
	MaxHashBytes = 1 << 30
	// MaxEntries bounds the upper-dir entries and merged-view files listed.
	MaxEntries = 200000
	// MaxWalked bounds the merged-view entries looked at for --path globs.
	MaxWalked = 500000
	// MaxDepth bounds directory depth.
	MaxDepth = 128
	// MaxPaths bounds the --path globs of one request.
	MaxPaths = 64
	// MaxReasonBytes bounds the reason text.
	MaxReasonBytes = 4096
)

// ErrInvalid wraps every error caused by a bad request.
var ErrInvalid = errors.New("invalid capture request")

// Request is one capture to take.
type Request struct {
	ID            string
	RequestedBy   string
	Reason        string
	RequestedAt   time.Time
	Options       Options
	MaxFileBytes  int64
	MaxTotalBytes int64
	// Timeline is the container's findings from the collector, oldest first.
	Timeline          []*loupev1.Finding
	TimelineTruncated bool
}

// Validate checks r and fills in default caps.
func (r *Request) Validate() error {
	if strings.TrimSpace(r.Reason) == "" {
		return fmt.Errorf("%w: a reason is required", ErrInvalid)
	}
	if len(r.Reason) > MaxReasonBytes {
		return fmt.Errorf("%w: reason is %d bytes (max %d)", ErrInvalid, len(r.Reason), MaxReasonBytes)
	}
	if len(r.Options.Paths) > MaxPaths {
		return fmt.Errorf("%w: %d --path globs (max %d)", ErrInvalid, len(r.Options.Paths), MaxPaths)
	}
	for _, p := range r.Options.Paths {
		if !strings.HasPrefix(p, "/") || safefs.HasDotDot(p) {
			return fmt.Errorf("%w: --path %q must be absolute, without ..", ErrInvalid, p)
		}
		if _, err := path.Match(p, "/"); err != nil {
			return fmt.Errorf("%w: --path %q: %v", ErrInvalid, p, err)
		}
	}
	if r.MaxFileBytes == 0 {
		r.MaxFileBytes = DefaultMaxFileBytes
	}
	if r.MaxTotalBytes == 0 {
		r.MaxTotalBytes = DefaultMaxTotalBytes
	}
	if r.MaxFileBytes < 0 || r.MaxFileBytes > HardMaxFileBytes {
		return fmt.Errorf("%w: max file bytes %d: want 1 to %d", ErrInvalid, r.MaxFileBytes, int64(HardMaxFileBytes))
	}
	if r.MaxTotalBytes < 0 || r.MaxTotalBytes > HardMaxTotalBytes {
		return fmt.Errorf("%w: max total bytes %d: want 1 to %d", ErrInvalid, r.MaxTotalBytes, int64(HardMaxTotalBytes))
	}
	return nil
}

// Env is the agent side of a capture.
type Env struct {
	HostRoot        string // "/" on the host
	ContainerdState string // containerd state dir relative to HostRoot (task bundles)
	Node            string
	AgentVersion    string
	// FreezeJournal is a directory on the node where a frozen cgroup is
	// recorded for the time of the freeze, so that an agent killed mid-capture
	// thaws it when it starts again (ThawLeftovers). Empty: no record.
	FreezeJournal string
}

// FileEntry is one file of files.json (upper dir) or merged.json (--path).
type FileEntry struct {
	Path       string    `json:"path"`
	Type       string    `json:"type"`             // file, dir, symlink, whiteout, fifo, socket, device
	Change     string    `json:"change,omitempty"` // upper dir: added, modified, deleted
	Layer      string    `json:"layer,omitempty"`  // merged view: "upper" or the image layer's chain id
	Mode       uint32    `json:"mode"`             // permission bits with setuid/setgid/sticky
	UID        uint32    `json:"uid"`
	GID        uint32    `json:"gid"`
	Size       int64     `json:"size"`
	MTime      time.Time `json:"mtime"`
	CTime      time.Time `json:"ctime"`
	ATime      time.Time `json:"atime"`
	SHA256     string    `json:"sha256,omitempty"`
	LinkTarget string    `json:"link_target,omitempty"`
	Opaque     bool      `json:"opaque,omitempty"`
	// Content is the bundle entry holding the file's bytes; empty when not
	// copied, and ContentOmitted says why.
	Content        string `json:"content,omitempty"`
	ContentOmitted string `json:"content_omitted,omitempty"`
}

// collector holds the state of one capture.
type collector struct {
	ctx   context.Context
	thaw  func()
	c     *runtime.Container
	req   *Request
	env   Env
	w     *Writer
	m     *Manifest
	buf   []byte
	hbuf  []byte
	total int64
	warnf func(format string, a ...any)
}

// Collect takes the capture of c described by req and writes the bundle to
// w. progress, if set, is called with a short description of each stage.
// The container must be running (its init PID and root are used).
func Collect(ctx context.Context, c *runtime.Container, req Request, env Env, w io.Writer, progress func(stage string)) (*Manifest, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	if progress == nil {
		progress = func(string) {}
	}
	m := &Manifest{
		CaptureID: req.ID, Node: env.Node, AgentVersion: env.AgentVersion,
		Requester: Requester{Identity: req.RequestedBy, Reason: req.Reason, RequestedAt: req.RequestedAt.UTC()},
		Container: ContainerSummary{ID: c.ID, Name: c.ContainerName, Pod: c.Pod.Name, Namespace: c.Pod.Namespace, PodUID: c.Pod.UID,
			Image: c.Image, ImageDigest: c.ImageDigest},
		StartedAt: time.Now().UTC(), Options: req.Options,
		Limits: Limits{MaxFileBytes: req.MaxFileBytes, MaxTotalBytes: req.MaxTotalBytes, MaxEntries: MaxEntries, MaxProcesses: MaxProcesses},
	}
	col := &collector{ctx: ctx, c: c, req: &req, env: env, w: NewWriter(w), m: m, hbuf: make([]byte, 256<<10)}
	col.warnf = func(format string, a ...any) {
		if len(m.Warnings) < 1000 {
			m.Warnings = append(m.Warnings, fmt.Sprintf(format, a...))
		} else if len(m.Warnings) == 1000 {
			m.Warnings = append(m.Warnings, "further warnings omitted")
		}
	}

	if req.Options.Freeze {
		progress("freezing the container's cgroup")
		col.freeze()
		defer col.thawNow() // always, whatever happens below
	}
	progress("container record")
	if err := col.record(); err != nil {
		return nil, err
	}
	progress("processes")
	procs, err := col.processes()
	if err != nil {
		return nil, err
	}
	progress("upper dir (runtime changes)")
	upper, err := col.upper()
	if err != nil {
		return nil, err
	}
	fromUpper(procs, upper)
	if err := col.w.AddJSON("processes.json", KindProcesses, procs); err != nil {
		return nil, err
	}
	if len(req.Options.Paths) > 0 {
		progress("merged view (--path)")
		if err := col.merged(); err != nil {
			return nil, err
		}
	}
	progress("timeline")
	if err := col.timeline(); err != nil {
		return nil, err
	}
	if req.Options.Freeze {
		col.thawNow()
	}
	m.Counts.ContentBytes = col.total
	m.CompletedAt = time.Now().UTC()
	progress("manifest")
	if err := col.w.Finish(m); err != nil {
		return nil, err
	}
	return m, nil
}

// record writes container.json: the registry's record plus the OCI spec's
// mounts and a few spec facts from the task bundle (never environment values).
func (col *collector) record() error {
	type mount struct {
		Destination string   `json:"destination"`
		Type        string   `json:"type,omitempty"`
		Source      string   `json:"source,omitempty"`
		Options     []string `json:"options,omitempty"`
	}
	rec := struct {
		Container *runtime.Container `json:"container"`
		Mounts    []mount            `json:"mounts,omitempty"`
		Hostname  string             `json:"hostname,omitempty"`
		SpecError string             `json:"spec_error,omitempty"`
	}{Container: col.c}
	p := filepath.Join(col.env.HostRoot, col.env.ContainerdState, "io.containerd.runtime.v2.task", col.c.Namespace, col.c.ID, "config.json")
	var spec struct {
		Hostname string  `json:"hostname"`
		Mounts   []mount `json:"mounts"`
	}
	if b, err := readCapped(p, 4<<20); err != nil {
		rec.SpecError = err.Error()
	} else if err := jsonUnmarshal(b, &spec); err != nil {
		rec.SpecError = "parse OCI spec: " + err.Error()
	} else {
		rec.Mounts, rec.Hostname = spec.Mounts, spec.Hostname
	}
	return col.w.AddJSON("container.json", KindRecord, rec)
}

// timeline writes timeline.jsonl (one protojson Finding a line, oldest first).
func (col *collector) timeline() error {
	var b []byte
	for _, f := range col.req.Timeline {
		j, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(f)
		if err != nil {
			return fmt.Errorf("encode timeline: %w", err)
		}
		b = append(append(b, j...), '\n')
	}
	col.m.Counts.TimelineFindings = len(col.req.Timeline)
	if col.req.TimelineTruncated {
		col.warnf("timeline cut at the collector's limit of %d findings", len(col.req.Timeline))
	}
	return col.w.Add("timeline.jsonl", KindTimeline, b)
}

// openLayers opens the image layers (topmost first) for layer attribution.
func (col *collector) openLayers() (upper *safefs.Root, layers []*safefs.Root, keys []string, closeAll func()) {
	var roots []*safefs.Root
	if col.c.Rootfs.Upper != "" {
		if r, err := safefs.OpenRoot(col.c.Rootfs.Upper); err == nil {
			upper = r
			roots = append(roots, r)
		}
	}
	for _, l := range col.c.Rootfs.Layers {
		r, err := safefs.OpenRoot(l.Dir)
		if err != nil {
			col.warnf("open image layer %s: %v", l.Key, err)
			continue
		}
		layers = append(layers, r)
		keys = append(keys, l.Key)
		roots = append(roots, r)
	}
	return upper, layers, keys, func() {
		for _, r := range roots {
			r.Close()
		}
	}
}

// upper walks the upper dir: every entry, with contents within the caps.
func (col *collector) upper() (map[string]*FileEntry, error) {
	byPath := map[string]*FileEntry{}
	if col.c.Rootfs.Upper == "" {
		col.warnf("no upper dir known for this container (%s): runtime changes not captured", orDefault(col.c.Rootfs.LayersReason, "snapshotter without overlay"))
		return byPath, col.w.AddJSON("files.json", KindIndex, []FileEntry{})
	}
	upper, layers, _, closeAll := col.openLayers()
	defer closeAll()
	if upper == nil {
		return nil, fmt.Errorf("open upper dir %s", col.c.Rootfs.Upper)
	}
	var entries []*FileEntry
	err := walkTree(col.ctx, upper, "/", func(p string, d *safefs.Dir, name string, st *unix.Stat_t) error {
		if len(entries) >= MaxEntries {
			return errTooMany
		}
		e := entryOf(p, st)
		switch {
		case safefs.IsWhiteout(st):
			e.Type, e.Change = "whiteout", "deleted"
		case existsBelow(layers, p):
			e.Change = "modified"
		default:
			e.Change = "added"
		}
		switch e.Type {
		case "symlink":
			if t, err := d.Readlink(name); err == nil {
				e.LinkTarget = t
			}
		case "dir":
			e.Opaque = d.Opaque(name)
		case "file":
			col.content(upper, e, "upper")
		}
		entries = append(entries, e)
		byPath[p] = e
		return nil
	}, col.warnf)
	if errors.Is(err, errTooMany) {
		col.warnf("upper dir has more than %d entries: the rest is not listed", MaxEntries)
	} else if err != nil {
		return nil, err
	}
	col.m.Counts.UpperEntries = len(entries)
	return byPath, col.w.AddJSON("files.json", KindIndex, entries)
}

// merged copies the merged-view files matching the --path globs, each
// attributed to the layer it comes from.
func (col *collector) merged() error {
	var entries []*FileEntry
	if col.c.Rootfs.Merged == "" {
		col.warnf("no merged view (container not running): --path not captured")
		return col.w.AddJSON("merged.json", KindIndex, entries)
	}
	root, err := safefs.OpenRoot(col.c.Rootfs.Merged)
	if err != nil {
		col.warnf("open merged view: %v", err)
		return col.w.AddJSON("merged.json", KindIndex, entries)
	}
	defer root.Close()
	upper, layers, keys, closeAll := col.openLayers()
	defer closeAll()
	seen := map[string]bool{}
	walked := 0
	for _, glob := range col.req.Options.Paths {
		base := staticPrefix(glob)
		st, err := root.Lstat(base)
		if err != nil {
			col.warnf("--path %s: %s: %v", glob, base, err)
			continue
		}
		visit := func(p string, st *unix.Stat_t, readlink func() (string, error)) error {
			if walked++; walked > MaxWalked {
				return errTooMany
			}
			if ok, _ := path.Match(glob, p); !ok || seen[p] {
				return nil
			}
			if len(entries) >= MaxEntries {
				return errTooMany
			}
			seen[p] = true
			e := entryOf(p, st)
			e.Layer = layerOf(upper, layers, keys, p, col.c.Rootfs.LayersUnknown)
			switch e.Type {
			case "symlink":
				e.LinkTarget, _ = readlink()
			case "file":
				col.content(root, e, "merged")
			}
			entries = append(entries, e)
			return nil
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			err = visit(base, &st, func() (string, error) { return "", nil })
		} else {
			err = walkTree(col.ctx, root, base, func(p string, d *safefs.Dir, name string, st *unix.Stat_t) error {
				return visit(p, st, func() (string, error) { return d.Readlink(name) })
			}, col.warnf)
		}
		if errors.Is(err, errTooMany) {
			col.warnf("--path %s: more than %d entries walked or %d listed: stopped", glob, MaxWalked, MaxEntries)
			break
		}
		if err != nil {
			return err
		}
	}
	col.m.Counts.MergedFiles = len(entries)
	return col.w.AddJSON("merged.json", KindIndex, entries)
}

// content hashes a regular file and copies it into the bundle within the caps.
func (col *collector) content(root *safefs.Root, e *FileEntry, prefix string) {
	f, err := root.OpenFile(e.Path)
	if err != nil {
		e.ContentOmitted = "open: " + err.Error()
		col.warnf("%s %s: %v", prefix, quote(e.Path), err)
		return
	}
	defer f.Close()
	size := f.Stat.Size
	e.Size = size
	fits := size <= col.req.MaxFileBytes && col.total+size <= col.req.MaxTotalBytes
	if !fits {
		if size > col.req.MaxFileBytes {
			e.ContentOmitted = fmt.Sprintf("larger than the per-file cap of %d bytes", col.req.MaxFileBytes)
		} else {
			e.ContentOmitted = fmt.Sprintf("total content cap of %d bytes reached", col.req.MaxTotalBytes)
		}
		if size > MaxHashBytes {
			e.ContentOmitted += fmt.Sprintf("; not hashed (over %d bytes)", int64(MaxHashBytes))
			return
		}
		h := sha256.New()
		if _, err := io.CopyBuffer(h, io.LimitReader(f, size), col.hbuf); err != nil {
			e.ContentOmitted = "read: " + err.Error()
			return
		}
		e.SHA256 = hex.EncodeToString(h.Sum(nil))
		return
	}
	if int64(cap(col.buf)) < size {
		col.buf = make([]byte, size)
	}
	n, err := io.ReadFull(f, col.buf[:size])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		e.ContentOmitted = "read: " + err.Error()
		return
	}
	if int64(n) != size {
		col.warnf("%s %s: shrank from %d to %d bytes while read", prefix, quote(e.Path), size, n)
		e.Size = int64(n)
	}
	data := col.buf[:n]
	name := prefix + e.Path
	kind := KindUpper
	if prefix == "merged" {
		kind = KindMerged
	}
	sum, err := col.w.add(name, kind, data) // hashes the bytes once for the entry and the manifest
	if err != nil {
		e.ContentOmitted = err.Error()
		return
	}
	e.SHA256 = sum
	e.Content = name
	col.total += int64(n)
}

var errTooMany = errors.New("too many entries")

// walkTree visits every entry below dir in root (not dir itself), depth
// first, iteratively, never following a symlink or crossing a mount.
func walkTree(ctx context.Context, root *safefs.Root, dir string, fn func(p string, d *safefs.Dir, name string, st *unix.Stat_t) error, warnf func(string, ...any)) error {
	type item struct {
		p     string
		depth int
	}
	top, err := root.OpenDir(dir)
	if err != nil {
		return fmt.Errorf("open %s in %s: %w", dir, root.Path(), err)
	}
	dev := top.Dev
	top.Close()
	stack := []item{{dir, 0}}
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		d, err := root.OpenDir(it.p)
		if err != nil {
			warnf("%s: open directory: %v", quote(it.p), err)
			continue
		}
		if d.Dev != dev {
			d.Close()
			continue
		}
		var names []string
		for {
			ns, err := d.Names(1024)
			names = append(names, ns...)
			if err != nil || len(ns) == 0 {
				break
			}
			if len(names) > MaxWalked {
				break
			}
		}
		slices.Sort(names)
		for _, name := range names {
			p := safefs.Join(it.p, name)
			st, err := d.Lstat(name)
			if err != nil {
				warnf("%s: lstat: %v", quote(p), err)
				continue
			}
			if err := fn(p, d, name, &st); err != nil {
				d.Close()
				return err
			}
			if st.Mode&unix.S_IFMT == unix.S_IFDIR && st.Dev == dev {
				if it.depth+1 > MaxDepth {
					warnf("%s: deeper than %d directories: not walked", quote(p), MaxDepth)
					continue
				}
				stack = append(stack, item{p, it.depth + 1})
			}
		}
		d.Close()
	}
	return nil
}

func entryOf(p string, st *unix.Stat_t) *FileEntry {
	e := &FileEntry{Path: p, Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid, Size: st.Size,
		MTime: time.Unix(st.Mtim.Unix()).UTC(), CTime: time.Unix(st.Ctim.Unix()).UTC(), ATime: time.Unix(st.Atim.Unix()).UTC()}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		e.Type = "file"
	case unix.S_IFDIR:
		e.Type = "dir"
	case unix.S_IFLNK:
		e.Type = "symlink"
	case unix.S_IFIFO:
		e.Type = "fifo"
	case unix.S_IFSOCK:
		e.Type = "socket"
	default:
		e.Type = "device"
	}
	if e.Type != "file" && e.Type != "symlink" {
		e.Size = 0
	}
	return e
}

func existsBelow(layers []*safefs.Root, p string) bool {
	for _, l := range layers {
		if st, err := l.Lstat(p); err == nil {
			return !safefs.IsWhiteout(&st)
		}
	}
	return false
}

// layerOf says which layer the merged view's p comes from: "upper", an
// image layer's key (topmost layer that has it), or "rootfs" when the
// snapshotter's layers are unknown.
func layerOf(upper *safefs.Root, layers []*safefs.Root, keys []string, p string, unknown bool) string {
	if unknown {
		return "rootfs"
	}
	if upper != nil {
		if st, err := upper.Lstat(p); err == nil && !safefs.IsWhiteout(&st) {
			return "upper"
		}
	}
	for i, l := range layers {
		if st, err := l.Lstat(p); err == nil && !safefs.IsWhiteout(&st) {
			if keys[i] == "" {
				return fmt.Sprintf("layer %d", i)
			}
			return keys[i]
		}
	}
	return "unknown"
}

// staticPrefix is the directory part of a glob before its first meta character.
func staticPrefix(glob string) string {
	i := strings.IndexAny(glob, "*?[\\")
	if i < 0 {
		return glob
	}
	d := path.Dir(glob[:i+1])
	return d
}

// fromUpper marks processes whose executable is a file of the upper dir
// with the same content.
func fromUpper(ps *Processes, upper map[string]*FileEntry) {
	for i := range ps.Processes {
		p := &ps.Processes[i]
		if e, ok := upper[p.Exe]; ok && e.Type == "file" && (p.ExeSHA256 == "" || e.SHA256 == p.ExeSHA256) {
			p.ExeFromUpper = true
		}
	}
}

func readCapped(p string, max int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", p, max)
	}
	return b, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// quote renders a hostile path for messages.
func quote(p string) string {
	if strings.IndexFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
		return fmt.Sprintf("%q", p)
	}
	return p
}
