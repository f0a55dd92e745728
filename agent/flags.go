package agent

import (
	"github.com/spf13/pflag"
)

// RegisterFlags binds the agent's flags to cfg (shared by loupe-agent and `loupe run`).
func RegisterFlags(f *pflag.FlagSet, cfg *Config) {
	f.StringVar(&cfg.Collector, "collector", cfg.Collector, "collector gRPC address HOST:PORT; several comma-separated replicas are tried in turn on reconnect (behind a Kubernetes Service, one address is enough)")
	f.StringVar(&cfg.TLS.CertFile, "tls-cert", "", "client certificate (PEM) for mTLS; its CN or DNS SAN must be the node name")
	f.StringVar(&cfg.TLS.KeyFile, "tls-key", "", "client private key (PEM) for mTLS")
	f.StringVar(&cfg.TLS.CAFile, "ca", "", "CA certificate (PEM) that signed the collector's certificate")
	f.StringVar(&cfg.TLS.ServerName, "collector-server-name", "", "name expected in the collector's certificate (default: the host of --collector)")
	f.BoolVar(&cfg.TLS.Insecure, "insecure", false, "plaintext connection to the collector (development only)")
	f.StringVar(&cfg.ContainerdSocket, "containerd-socket", cfg.ContainerdSocket, "containerd socket path, under --host-root")
	f.StringVar(&cfg.ContainerdNamespace, "containerd-namespace", cfg.ContainerdNamespace, "containerd namespace to watch (k8s.io for Kubernetes)")
	f.StringVar(&cfg.ContainerdState, "containerd-state", cfg.ContainerdState, "containerd state directory (task bundles, runc logs), under --host-root")
	f.StringVar(&cfg.HostRoot, "host-root", cfg.HostRoot, "where the host's root filesystem is mounted (/host in the DaemonSet)")
	f.StringVar(&cfg.StateDir, "state-dir", cfg.StateDir, "directory for the spool and the layer cache (must persist across restarts)")
	f.StringVar(&cfg.HTTPListen, "http-listen", cfg.HTTPListen, "address for /metrics, /healthz and /readyz")
	f.StringVar(&cfg.NodeName, "node-name", cfg.NodeName, "node name in findings and the mTLS identity ($NODE_NAME, else the hostname)")
	f.BoolVar(&cfg.ExecFailures, "exec-failures", cfg.ExecFailures, "trace failed exec attempts too (attaches execve syscall tracepoints: ~45 ns per syscall host-wide)")
	f.BoolVar(&cfg.TraceHost, "trace-host", cfg.TraceHost, "also report execs of host processes (noisy; containers only by default)")
	f.StringVar(&cfg.RulesFile, "rules", "", "rules file (YAML, see docs/rules.md); default: the shipped rules")
	f.StringVar(&cfg.ProfilesDir, "profiles", "", "directory of compliance profiles (YAML, see docs/compliance.md), reloaded on change; default: the shipped distroless-baseline")
	f.DurationVar(&cfg.RescanInterval, "rescan-interval", cfg.RescanInterval, "period of full container rescans (jittered ±10%)")
	f.IntVar(&cfg.ScanConcurrency, "scan-concurrency", cfg.ScanConcurrency, "containers scanned at the same time")
	f.Int64Var(&cfg.SpoolMaxBytes, "spool-max-bytes", cfg.SpoolMaxBytes, "bound of the on-disk spool; when full, lowest severity findings are dropped first (counted)")
	f.IntVar(&cfg.RingBufferBytes, "ring-buffer-bytes", cfg.RingBufferBytes, "eBPF ring buffer size (power of two)")
}
