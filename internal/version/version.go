// Package version holds the build's version, set at link time with
// -ldflags "-X github.com/loupe-dev/loupe/internal/version.Version=…".
package version

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
)

// Version and Commit are overwritten by the linker; see the Makefile.
var (
	Version = "dev"
	Commit  = "unknown"
)

// String is the one-line version shown by --version.
func String() string {
	return Version + " (commit " + Commit + ", " + runtime.Version() + ")"
}

// NewBuildInfo returns the loupe_build_info gauge (always 1) labelled with
// the version, commit and Go version, for registration in a private registry.
func NewBuildInfo() prometheus.Collector {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "loupe",
		Name:      "build_info",
		Help:      "Build information of this Loupe binary; the value is always 1.",
	}, []string{"version", "commit", "goversion"})
	g.WithLabelValues(Version, Commit, runtime.Version()).Set(1)
	return g
}
