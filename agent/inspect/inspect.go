// Package inspect looks into container root filesystems from the host,
// read-only and without executing anything: it scans each overlay layer as
// the directory it is (whiteouts and opaque directories honoured), computes
// the merged view top-wins without mounting, detects shells, package
// managers, network/debug tools and the image's flavour (distroless static,
// base, cc, java, python, nodejs, Chainguard/Wolfi, or a full distribution),
// hardening problems (SUID/SGID, world-writable, root user), builds the
// package inventory (CycloneDX SBOM), and reports drift in the upper
// directory. Results for an immutable image layer are cached by its identity
// (see package layercache), so a node scans each layer once.
//
// All container content is hostile input read as root; access goes through
// package safefs.
package inspect

import (
	"time"

	"github.com/loupe-dev/loupe/agent/inspect/pkgdb"
	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

// ScannerVersion identifies the logic that produced a LayerResult; cached
// results made by another version are ignored. Bump it whenever detection,
// inventory or the LayerResult encoding changes.
const ScannerVersion = "inspect/4"

// UpperLayer is the layer name used for runtime changes (File.layer).
const UpperLayer = "upper"

// Layer is one read-only image layer: an overlay lowerdir on the host.
type Layer struct {
	// Dir is the host path of the layer's root directory.
	Dir string
	// ID is a stable identity of the layer's content (snapshot chain id or
	// layer digest). Empty: never cached.
	ID string
}

// Target is what to scan: image layers bottom-first plus the container's
// upper dir, or a single plain root directory.
type Target struct {
	// Layers are image layers, lowest first. With overlay semantics.
	Layers []Layer
	// Upper is the container's overlay upperdir (runtime changes); optional.
	Upper string
	// Root is a plain root filesystem (a directory, an extracted image, or
	// /proc/<pid>/root for non-overlay snapshotters). Used when Layers is
	// empty; mounts below it are never crossed.
	Root string
	// RootLayer names the layer for findings from Root (default "rootfs").
	RootLayer string
	// ImageUser is the user the container runs as (OCI image config or
	// runtime spec: "", "0", "root", "1000:1000"). UserKnown says whether it
	// was known at all; an unknown user yields no RUNS_AS_ROOT finding.
	ImageUser string
	UserKnown bool
	// Container is copied into every finding.
	Container *loupev1.ContainerRef
	// Name labels the scanned thing in summaries and the SBOM (image ref or path).
	Name string
}

// Options bound and shape a scan. Zero values take the defaults.
type Options struct {
	// MaxFiles per layer (default 2,000,000).
	MaxFiles int64
	// MaxDepth of directories below a layer root (default 256).
	MaxDepth int
	// MaxDuration per layer (default 10 minutes).
	MaxDuration time.Duration
	// HashCap: larger files are not hashed (default 256 MiB).
	HashCap int64
	// MaxParse: package databases and metadata files larger than this are
	// not parsed (default 64 MiB).
	MaxParse int64
	// HashAll hashes every regular file up to HashCap (for a file index);
	// otherwise only the files that are kept (executables, SUID, packages…).
	HashAll bool
	// Workers reading and hashing in parallel (default 4×GOMAXPROCS, at most 16).
	Workers int
	// OnFile, if set, is called once per regular file of every scanned
	// layer (serially), e.g. to write a file index.
	OnFile func(layer string, e *Entry)
	// Progress, if set, is called about every second during a scan.
	Progress func(p Progress)
	// Node is copied into findings.
	Node string
}

// Progress reports a running scan.
type Progress struct {
	Layer string
	Files int64
	Bytes int64
}

func (o Options) withDefaults() Options {
	if o.MaxFiles <= 0 {
		o.MaxFiles = 2_000_000
	}
	if o.MaxDepth <= 0 {
		o.MaxDepth = 256
	}
	if o.MaxDuration <= 0 {
		o.MaxDuration = 10 * time.Minute
	}
	if o.HashCap <= 0 {
		o.HashCap = 256 << 20
	}
	if o.MaxParse <= 0 {
		o.MaxParse = 64 << 20
	}
	return o
}

// Entry types.
const (
	TypeFile     = 'f'
	TypeDir      = 'd'
	TypeSymlink  = 'l'
	TypeWhiteout = 'w'
	TypeOther    = 'o' // FIFO, socket, device: recorded, never opened
)

// Entry is one kept filesystem entry of a layer. Only entries that matter
// to detection, inventory, hardening or drift are kept (all of them for an
// upper dir), so memory stays bounded on huge trees.
type Entry struct {
	// Path inside the container, absolute, raw bytes (may be invalid UTF-8).
	Path   string
	Type   byte
	Mode   uint32
	UID    uint32
	GID    uint32
	Size   int64
	Dev    uint64
	Ino    uint64
	SHA256 string
	// Link is a symlink's target.
	Link string
	// Opaque: an overlay opaque directory (hides lower layers below it).
	Opaque bool
	// Class: "elf", "script" or "".
	Class string
	// Multi: "busybox" or "toybox" when the content is that multi-call binary.
	Multi string
	// Shebang: the interpreter line of a script (bounded).
	Shebang string
	// GoVersion of a Go binary.
	GoVersion string
	// Packages found in this file (package DBs, metadata, jars, Go binaries).
	Packages []pkgdb.Package
	// OSRelease fields, for an os-release file.
	OSRelease map[string]string
	// Note says why something was skipped ("larger than hash cap", …).
	Note string
}

// Executable reports whether the entry is a program or library: ELF, a
// shebang script, or a non-empty regular file with an execute bit (empty
// files — e.g. the bind-mount targets /etc/hosts, /etc/hostname and
// /etc/resolv.conf the runtime creates 0755 in every upper dir — run nothing).
func (e *Entry) Executable() bool {
	return e.Type == TypeFile && e.Size > 0 && (e.Class == "elf" || e.Class == "script" || e.Mode&0o111 != 0)
}

// LayerResult is the scan of one layer directory; it is what the layer
// cache stores.
type LayerResult struct {
	ID             string
	ScannerVersion string
	Entries        []Entry
	Files          int64
	Dirs           int64
	Symlinks       int64
	Special        int64
	Bytes          int64 // bytes of regular files (st_size sum)
	HashedBytes    int64
	Errors         int64
	// Truncated is non-empty when a cap stopped the scan early.
	Truncated string
	// Warnings: the first few errors met (bounded).
	Warnings []string
	Duration time.Duration
}

const maxWarnings = 20

func (r *LayerResult) warn(s string) {
	r.Errors++
	if len(r.Warnings) < maxWarnings {
		r.Warnings = append(r.Warnings, s)
	}
}
