package inspect

import (
	"log/slog"
	"sync"
	"time"

	"github.com/loupe-dev/loupe/agent/inspect/pkgdb"
	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

// Cache stores LayerResults by layer identity (see package layercache).
type Cache interface {
	// Get returns the stored result for the layer id made by
	// ScannerVersion, or ok=false.
	Get(id string) (r *LayerResult, ok bool, err error)
	// Put stores a complete result.
	Put(r *LayerResult) error
}

// Scanner scans targets; it is safe for concurrent use, and concurrent scans
// of the same layer id share one walk.
type Scanner struct {
	opts  Options
	cache Cache
	log   *slog.Logger

	mu       sync.Mutex
	inflight map[string]*flight
}

type flight struct {
	done chan struct{}
	res  *LayerResult
	err  error
}

// New returns a Scanner. cache may be nil (no layer cache); log may be nil.
func New(opts Options, cache Cache, log *slog.Logger) *Scanner {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Scanner{opts: opts.withDefaults(), cache: cache, log: log, inflight: map[string]*flight{}}
}

// LayerSummary describes one layer of a Report.
type LayerSummary struct {
	Name        string
	Cached      bool
	Files       int64
	Bytes       int64
	HashedBytes int64
	Errors      int64
	Truncated   string
	Duration    time.Duration
}

// DriftSummary counts the upper dir's entries by change.
type DriftSummary struct {
	Added, Modified, Deleted int
}

// Report is the result of one Scan.
type Report struct {
	Name     string
	Findings []*loupev1.Finding
	Packages []pkgdb.Package
	Profile  Profile
	Layers   []LayerSummary
	Drift    DriftSummary
	// Totals over the layers actually walked in this scan (cached layers
	// count their original figures).
	Files, Bytes, HashedBytes int64
	CacheHits                 int
	Duration                  time.Duration
	Warnings                  []string
}

func (r *Report) addLayer(name string, lr *LayerResult, cached bool) {
	r.Layers = append(r.Layers, LayerSummary{Name: name, Cached: cached, Files: lr.Files, Bytes: lr.Bytes,
		HashedBytes: lr.HashedBytes, Errors: lr.Errors, Truncated: lr.Truncated, Duration: lr.Duration})
	r.Files += lr.Files
	r.Bytes += lr.Bytes
	r.HashedBytes += lr.HashedBytes
	if cached {
		r.CacheHits++
	}
	for _, w := range lr.Warnings {
		if len(r.Warnings) < 50 {
			r.Warnings = append(r.Warnings, name+": "+w)
		}
	}
	if lr.Truncated != "" && len(r.Warnings) < 50 {
		r.Warnings = append(r.Warnings, name+": scan truncated: "+lr.Truncated)
	}
}
