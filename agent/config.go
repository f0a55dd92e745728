// Package agent wires Loupe's node pipeline: the container registry
// (containerd), the filesystem scanner, the eBPF exec tracer, rules, the
// durable spool and the export to the collector, plus /metrics, /healthz and
// /readyz.
package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/loupe-dev/loupe/internal/tlsutil"
)

// Config is everything loupe-agent's flags set.
type Config struct {
	Collector           string                // collector HOST:PORT
	TLS                 tlsutil.ClientOptions // mTLS to the collector, or Insecure
	ContainerdSocket    string                // containerd socket, relative to HostRoot
	ContainerdNamespace string                // containerd namespace (k8s.io for Kubernetes)
	ContainerdState     string                // containerd state dir (task bundles, runc logs), relative to HostRoot
	HostRoot            string                // where the host's filesystem is mounted ("/" on the host, "/host" in a pod)
	StateDir            string                // spool and layer cache
	HTTPListen          string                // /metrics, /healthz, /readyz
	NodeName            string                // this node's name
	ExecFailures        bool                  // attach the syscall tracepoints that see failed execs
	TraceHost           bool                  // report host processes too, not only containers
	RulesFile           string                // "" for the shipped default
	ProfilesDir         string                // compliance profiles directory; "" for the shipped profiles
	RescanInterval      time.Duration         // full rescan period (jittered)
	ScanConcurrency     int                   // containers scanned at once
	SpoolMaxBytes       int64                 // spool bound
	RingBufferBytes     int                   // eBPF ring buffer size
	Logger              *slog.Logger
}

// DefaultConfig returns the defaults of the flags.
func DefaultConfig() Config {
	return Config{
		Collector:           "127.0.0.1:7443",
		ContainerdSocket:    "/run/containerd/containerd.sock",
		ContainerdNamespace: "k8s.io",
		ContainerdState:     "/run/containerd",
		HostRoot:            "/",
		StateDir:            "/var/lib/loupe",
		HTTPListen:          ":9090",
		NodeName:            DefaultNodeName(),
		ExecFailures:        true,
		RescanInterval:      10 * time.Minute,
		ScanConcurrency:     2,
		SpoolMaxBytes:       256 << 20,
		RingBufferBytes:     8 << 20,
	}
}

// DefaultNodeName is $NODE_NAME (the downward API in the DaemonSet), else the hostname.
func DefaultNodeName() string {
	if n := os.Getenv("NODE_NAME"); n != "" {
		return n
	}
	h, _ := os.Hostname()
	return h
}

// Validate checks the configuration and says what to fix.
func (c *Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("--node-name is empty and neither $NODE_NAME nor the hostname is set"))
	}
	if c.Collector == "" {
		errs = append(errs, errors.New("--collector is required (HOST:PORT)"))
	}
	for _, a := range strings.Split(c.Collector, ",") {
		if _, _, err := net.SplitHostPort(strings.TrimSpace(a)); err != nil && c.Collector != "" {
			errs = append(errs, fmt.Errorf("--collector %q: each address must be HOST:PORT (replicas comma-separated)", a))
		}
	}
	if !c.TLS.Insecure && (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key go together"))
	}
	if c.HostRoot == "" || c.HostRoot[0] != '/' {
		errs = append(errs, fmt.Errorf("--host-root %q must be an absolute path", c.HostRoot))
	}
	if c.ProfilesDir != "" {
		if st, err := os.Stat(c.ProfilesDir); err != nil || !st.IsDir() {
			errs = append(errs, fmt.Errorf("--profiles %s: not a readable directory", c.ProfilesDir))
		}
	}
	if c.StateDir == "" {
		errs = append(errs, errors.New("--state-dir is required"))
	}
	if c.RescanInterval < time.Minute {
		errs = append(errs, fmt.Errorf("--rescan-interval %s is too short (minimum 1m)", c.RescanInterval))
	}
	if c.ScanConcurrency < 1 || c.ScanConcurrency > 64 {
		errs = append(errs, fmt.Errorf("--scan-concurrency %d: want 1 to 64", c.ScanConcurrency))
	}
	if c.SpoolMaxBytes < 1<<20 {
		errs = append(errs, fmt.Errorf("--spool-max-bytes %d: want at least 1 MiB", c.SpoolMaxBytes))
	}
	if c.RingBufferBytes < 4096 || c.RingBufferBytes&(c.RingBufferBytes-1) != 0 {
		errs = append(errs, fmt.Errorf("--ring-buffer-bytes %d: want a power of two of at least 4096", c.RingBufferBytes))
	}
	return errors.Join(errs...)
}
