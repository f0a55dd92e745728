// Command loupe-collector is Loupe's central service: it ingests findings
// from node agents over gRPC (TLS/mTLS), stores them (embedded SQLite, or
// PostgreSQL shared by several replicas) and answers queries; /metrics, /healthz and /readyz on the HTTP port.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/loupe-dev/loupe/collector"
	"github.com/loupe-dev/loupe/collector/console"
	"github.com/loupe-dev/loupe/collector/output"
	"github.com/loupe-dev/loupe/internal/version"
)

func main() {
	var (
		cfg            collector.Config
		showVersion    bool
		trustedProxies string
		outputs        []string
	)
	fs := flag.NewFlagSet("loupe-collector", flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: loupe-collector [flags]\n\nReceives findings from loupe-agent over gRPC, stores them and answers `loupe query`.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.GRPCListen, "grpc-listen", collector.DefaultGRPCListen, "gRPC listen address for agents and the loupe CLI")
	fs.StringVar(&cfg.HTTPListen, "http-listen", collector.DefaultHTTPListen, "HTTP listen address for /metrics, /healthz and /readyz (\"\" to disable)")
	fs.StringVar(&cfg.DB, "db", collector.DefaultDB, "store DSN: sqlite:///path/to/collector.db (one collector), or postgres://user:password@host:5432/database?sslmode=verify-full (several replicas on one database; $LOUPE_DB overrides this flag so the password can come from a Secret)")
	fs.StringVar(&cfg.TLS.CertFile, "tls-cert", "", "server certificate, PEM")
	fs.StringVar(&cfg.TLS.KeyFile, "tls-key", "", "server private key, PEM")
	fs.StringVar(&cfg.TLS.ClientCAFile, "client-ca", "", "CA of agent client certificates, PEM: turns on mTLS (the node an agent speaks for must match its certificate)")
	fs.BoolVar(&cfg.Insecure, "insecure", false, "plaintext gRPC without TLS or identity checks (development only)")
	fs.DurationVar(&cfg.Retention, "retention", collector.DefaultRetention, "delete findings older than this (0 keeps them forever)")
	fs.IntVar(&cfg.MaxMsgBytes, "max-msg-bytes", collector.DefaultMaxMsgBytes, "largest accepted gRPC message (one ingest batch), bytes")
	fs.StringVar(&cfg.AdminCN, "admin-cn", collector.DefaultAdminCN, "client certificate CommonName allowed to query and to ingest for any node")
	fs.StringVar(&cfg.CaptureDir, "capture-dir", "", "directory of evidence bundles (loupe capture); default: captures/ next to the SQLite database")
	fs.Int64Var(&cfg.CaptureMaxBytes, "capture-max-bytes", collector.DefaultCaptureMaxBytes, "bound of the capture directory, bytes (new captures are refused above it)")
	fs.StringVar(&cfg.ConsoleListen, "console-listen", "", "serve the read-only web console on this address, e.g. :8443 (off when empty; HTTPS with --tls-cert when set)")
	fs.StringVar(&cfg.ConsoleAuth.TokenFile, "console-token-file", "", "console bearer tokens, one sha256 per line as sha256sum prints it: printf %s \"$TOKEN\" | sha256sum >> FILE (re-read when it changes)")
	fs.StringVar(&cfg.ConsoleAuth.ProxyHeader, "console-proxy-header", "", "header holding the user set by an authenticating reverse proxy, e.g. X-Forwarded-Email (oauth2-proxy); needs --console-trusted-proxy")
	fs.StringVar(&trustedProxies, "console-trusted-proxy", "", "comma-separated addresses or CIDR prefixes the reverse proxy connects from; --console-proxy-header is accepted from these only")
	fs.StringVar(&cfg.AuditListen, "audit-listen", "", "serve the Kubernetes audit webhook backend on this address, e.g. :8444 (HTTPS on /audit; needs --tls-cert; off when empty)")
	fs.StringVar(&cfg.AuditTokenFile, "audit-token-file", "", "bearer tokens the API server's audit webhook may present, one sha256 per line as sha256sum prints it")
	fs.StringVar(&cfg.AuditClientCN, "audit-client-cn", collector.DefaultAuditClientCN, "client certificate CommonName (signed by --client-ca) accepted from the API server's audit webhook")
	fs.Func("output", "push findings to a receiver (repeatable): TYPE=URL[,key=value…] with TYPE webhook, syslog or falcosidekick, e.g. webhook=https://siem.example/loupe,min-severity=high,kind=shell_exec (docs/outputs.md)", func(v string) error {
		outputs = append(outputs, v)
		return nil
	})
	fs.StringVar(&cfg.OutputDir, "output-dir", "", "persistent directory of the outputs' outboxes (default: outputs/ next to the SQLite database; required with PostgreSQL)")
	fs.BoolVar(&showVersion, "version", false, "print the version and exit")
	_ = fs.Parse(os.Args[1:])
	if v := os.Getenv("LOUPE_DB"); v != "" {
		cfg.DB = v
	}
	if showVersion {
		fmt.Println("loupe-collector", version.String())
		return
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "loupe-collector: unexpected arguments %q\n", fs.Args())
		os.Exit(2)
	}
	var err error
	if cfg.ConsoleAuth.TrustedProxies, err = console.ParseTrustedProxies([]string{trustedProxies}); err != nil {
		fmt.Fprintln(os.Stderr, "loupe-collector:", err)
		os.Exit(2)
	}
	for _, spec := range outputs {
		oc, err := output.ParseSpec(spec)
		if err != nil {
			fmt.Fprintln(os.Stderr, "loupe-collector: --output:", err)
			os.Exit(2)
		}
		cfg.Outputs = append(cfg.Outputs, oc)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := collector.Run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "loupe-collector:", err)
		os.Exit(1)
	}
}
