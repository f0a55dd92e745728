// Package obs serves the observability endpoints every Loupe daemon has:
// /metrics (Prometheus, from a private registry), /healthz (the process is
// alive) and /readyz (every named readiness check passes; the body lists
// each check's state so an operator sees which one fails).
package obs

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check returns nil when its component is ready. A Degraded error passes
// too: the component works without a part, and /readyz says which.
type Check func() error

// Degraded is returned by a Check whose component is ready but runs without
// something it was asked for (e.g. the tracer without its failed-exec hooks).
type Degraded string

func (d Degraded) Error() string { return string(d) }

// Handler returns the mux for /metrics, /healthz and /readyz.
func Handler(reg *prometheus.Registry, checks map[string]Check) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		report, ok := Ready(checks)
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprint(w, report)
	})
	return mux
}

// Ready runs every check and returns a one-line-per-check report and whether all passed.
func Ready(checks map[string]Check) (string, bool) {
	names := make([]string, 0, len(checks))
	for n := range checks {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	ok := true
	for _, n := range names {
		var degraded Degraded
		if err := checks[n](); errors.As(err, &degraded) {
			fmt.Fprintf(&b, "%s: ok, degraded: %s\n", n, degraded)
		} else if err != nil {
			ok = false
			fmt.Fprintf(&b, "%s: not ready: %v\n", n, err)
		} else {
			fmt.Fprintf(&b, "%s: ok\n", n)
		}
	}
	return b.String(), ok
}
