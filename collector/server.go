// Package collector is Loupe's central service: a gRPC server that ingests
// findings from node agents (acknowledging each batch only after its store
// transaction committed), answers queries and lists nodes, with an HTTP
// side for /metrics, /healthz and /readyz. It runs as loupe-collector
// (Run) or embedded in another process (New + Serve). Dial is the client
// side used by the CLI and agents.
package collector

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector/console"
	"github.com/loupe-dev/loupe/collector/output"
	"github.com/loupe-dev/loupe/collector/store"
	_ "github.com/loupe-dev/loupe/collector/store/postgres" // for fleets: several replicas on one database
	_ "github.com/loupe-dev/loupe/collector/store/sqlite"   // the default backend
	"github.com/loupe-dev/loupe/internal/tlsutil"
	"github.com/loupe-dev/loupe/internal/version"
)

// Defaults of the loupe-collector flags.
const (
	DefaultGRPCListen  = ":7443"
	DefaultHTTPListen  = ":9091"
	DefaultDB          = "sqlite:///var/lib/loupe/collector.db"
	DefaultRetention   = 720 * time.Hour
	DefaultMaxMsgBytes = 16 << 20
	DefaultAdminCN     = "loupe-admin"
)

// Config configures a collector.
type Config struct {
	// GRPCListen is the gRPC address (":7443"; "127.0.0.1:0" picks a port).
	GRPCListen string
	// HTTPListen serves /metrics, /healthz and /readyz; empty: no HTTP server.
	HTTPListen string
	// DB is the store DSN, e.g. sqlite:///var/lib/loupe/collector.db.
	DB string
	// TLS holds the server certificate and, for mTLS, the client CA.
	TLS tlsutil.ServerOptions
	// Insecure serves plaintext gRPC without any client identity check.
	Insecure bool
	// Retention is how long findings are kept; 0 keeps them forever.
	Retention time.Duration
	// PruneInterval is how often retention runs (default: Retention/24,
	// between 1 minute and 1 hour).
	PruneInterval time.Duration
	// MaxMsgBytes bounds one received gRPC message (one batch); default 16 MiB.
	MaxMsgBytes int
	// AdminCN is the client certificate CommonName that may ingest for any
	// node and may query (default "loupe-admin").
	AdminCN string
	// ShutdownTimeout bounds the graceful drain on shutdown (default 30s).
	ShutdownTimeout time.Duration
	// Registry receives the collector's metrics. When nil, New creates one
	// with the Go and process collectors and loupe_build_info as well; an
	// embedding program that passes its own registers those itself.
	Registry *prometheus.Registry
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// CaptureDir keeps evidence bundles (capture.go); default: "captures"
	// next to a SQLite database. CaptureMaxBytes bounds the directory and
	// CaptureMaxBundle one bundle (defaults 20 GiB and 5 GiB).
	CaptureDir                        string
	CaptureMaxBytes, CaptureMaxBundle int64
	// ConsoleListen serves the read-only web console (collector/console);
	// empty: no console. It uses the server certificate of TLS when one is
	// set, and ConsoleAuth says who may read.
	ConsoleListen string
	ConsoleAuth   console.AuthConfig
	// AuditListen serves the Kubernetes audit webhook backend (HTTPS on
	// AuditPath; needs TLS); empty: none. The API server authenticates with
	// a client certificate signed by the client CA whose CommonName is
	// AuditClientCN (default "kube-apiserver"), or a bearer token whose
	// sha256 is in AuditTokenFile.
	AuditListen, AuditTokenFile, AuditClientCN string
	// Outputs push findings to webhooks, syslog and falcosidekick
	// (collector/output), from durable outboxes under OutputDir (default:
	// "outputs" next to a SQLite database).
	Outputs   []output.Config
	OutputDir string
}

func (c *Config) setDefaults() {
	if c.DB == "" {
		c.DB = DefaultDB
	}
	if c.MaxMsgBytes <= 0 {
		c.MaxMsgBytes = DefaultMaxMsgBytes
	}
	if c.AdminCN == "" {
		c.AdminCN = DefaultAdminCN
	}
	if c.AuditClientCN == "" {
		c.AuditClientCN = DefaultAuditClientCN
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.PruneInterval <= 0 && c.Retention > 0 {
		c.PruneInterval = min(max(c.Retention/24, time.Minute), time.Hour)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// readyPingTimeout bounds the database check of /readyz.
const readyPingTimeout = 2 * time.Second

// Server is a running collector.
type Server struct {
	cfg      Config
	log      *slog.Logger
	store    store.Store
	reg      *prometheus.Registry
	m        *metrics
	grpc     *grpc.Server
	grpcLis  net.Listener
	http     *http.Server
	httpLis  net.Listener
	web      *http.Server // the console
	webLis   net.Listener
	auditSrv *http.Server // the audit webhook
	auditLis net.Listener
	outputs  outbox          // s.outs, or noOutputs
	outs     *output.Outputs // nil without --output
	mtls     bool
	ready    atomic.Bool
	draining chan struct{}

	mu    sync.Mutex
	conns map[string]int // node → open ingest streams

	caps *captures // capture.go

	loupev1.UnimplementedCollectorServer
}

// New opens the store, binds the listeners and prepares the servers; Serve
// starts them. Errors name the flag or file at fault.
func New(ctx context.Context, cfg Config) (*Server, error) {
	cfg.setDefaults()
	s := &Server{cfg: cfg, log: cfg.Logger, reg: cfg.Registry, draining: make(chan struct{}), conns: map[string]int{}, outputs: noOutputs{}}
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
		s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), version.NewBuildInfo())
	}
	var err error
	if s.m, err = newMetrics(s.reg); err != nil {
		return nil, fmt.Errorf("register collector metrics: %w", err)
	}
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.MaxMsgBytes),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
	switch {
	case cfg.Insecure:
		if cfg.TLS.CertFile != "" || cfg.TLS.ClientCAFile != "" {
			return nil, errors.New("--insecure and --tls-cert/--client-ca exclude each other")
		}
		s.log.Warn("serving plaintext gRPC (--insecure): no encryption, no agent identity checks; for development only")
	default:
		tlsCfg, err := tlsutil.ServerConfig(cfg.TLS)
		if err != nil {
			return nil, fmt.Errorf("collector TLS: %w", err)
		}
		s.mtls = tlsCfg.ClientAuth == tls.RequireAndVerifyClientCert
		if !s.mtls {
			s.log.Warn("TLS without --client-ca: agents are not authenticated and may send findings for any node")
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsCfg)))
	}
	if s.store, err = store.Open(ctx, cfg.DB); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	fail := func(err error) (*Server, error) {
		s.store.Close()
		if s.outs != nil {
			s.outs.Close()
		}
		for _, l := range []net.Listener{s.grpcLis, s.httpLis, s.webLis, s.auditLis} {
			if l != nil {
				l.Close()
			}
		}
		return nil, err
	}
	if s.caps, err = newCaptures(s); err != nil {
		return fail(err)
	}
	if len(cfg.Outputs) > 0 {
		dir, why := besideDB(cfg, cfg.OutputDir, "outputs", "--output needs --output-dir (a persistent directory for its outboxes)")
		if dir == "" {
			return fail(errors.New(why))
		}
		if s.outs, err = output.Open(dir, cfg.Outputs, s.reg, s.log); err != nil {
			return fail(fmt.Errorf("outputs: %w", err))
		}
		s.outputs = s.outs
	}
	if s.grpcLis, err = net.Listen("tcp", cfg.GRPCListen); err != nil {
		return fail(fmt.Errorf("gRPC listener (--grpc-listen %s): %w", cfg.GRPCListen, err))
	}
	if cfg.HTTPListen != "" {
		if s.httpLis, err = net.Listen("tcp", cfg.HTTPListen); err != nil {
			return fail(fmt.Errorf("HTTP listener (--http-listen %s): %w", cfg.HTTPListen, err))
		}
	}
	if cfg.ConsoleListen != "" {
		if err := s.newConsole(); err != nil {
			return fail(err)
		}
	}
	if cfg.AuditListen != "" {
		if err := s.newAuditWeb(); err != nil {
			return fail(err)
		}
	}
	s.grpc = grpc.NewServer(opts...)
	loupev1.RegisterCollectorServer(s.grpc, s)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), readyPingTimeout)
		defer cancel()
		if err := s.store.Ping(ctx); err != nil {
			http.Error(w, "not ready\ndatabase: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready\ndatabase: ok")
	})
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// GRPCAddr is the address the gRPC server listens on.
func (s *Server) GRPCAddr() net.Addr { return s.grpcLis.Addr() }

// HTTPAddr is the HTTP server's address, or nil without one.
func (s *Server) HTTPAddr() net.Addr {
	if s.httpLis == nil {
		return nil
	}
	return s.httpLis.Addr()
}

// ConsoleAddr is the console's address, or nil without one.
func (s *Server) ConsoleAddr() net.Addr {
	if s.webLis == nil {
		return nil
	}
	return s.webLis.Addr()
}

// newConsole prepares the web console on --console-listen: TLS with the
// collector's server certificate when it has one.
func (s *Server) newConsole() error {
	con, err := console.New(console.Config{Store: s.store, Nodes: s.nodes, Auth: s.cfg.ConsoleAuth, Logger: s.log})
	if err != nil {
		return err
	}
	s.web = &http.Server{Handler: con, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, IdleTimeout: 2 * time.Minute,
		MaxHeaderBytes: 64 << 10}
	if s.cfg.TLS.CertFile != "" {
		// The server certificate only: browsers bring no client certificate.
		if s.web.TLSConfig, err = tlsutil.ServerConfig(tlsutil.ServerOptions{CertFile: s.cfg.TLS.CertFile, KeyFile: s.cfg.TLS.KeyFile}); err != nil {
			return fmt.Errorf("console TLS (--tls-cert, --tls-key): %w", err)
		}
	} else {
		s.log.Warn("console without TLS: keep --console-listen on loopback or behind a TLS reverse proxy", "listen", s.cfg.ConsoleListen)
	}
	if s.webLis, err = net.Listen("tcp", s.cfg.ConsoleListen); err != nil {
		return fmt.Errorf("console listener (--console-listen %s): %w", s.cfg.ConsoleListen, err)
	}
	return nil
}

// AuditAddr is the audit webhook's address, or nil without one.
func (s *Server) AuditAddr() net.Addr {
	if s.auditLis == nil {
		return nil
	}
	return s.auditLis.Addr()
}

// outbox takes the findings about to be stored, for the outputs.
type outbox interface{ Enqueue([]*loupev1.Finding) }

// noOutputs is the outbox without --output.
type noOutputs struct{}

func (noOutputs) Enqueue([]*loupev1.Finding) {}

// Store is the server's store (for embedding programs and tests).
func (s *Server) Store() store.Store { return s.store }

// Registry is the registry the collector's metrics are in.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Serve runs the servers until ctx is cancelled, then shuts down
// gracefully: no new connections; each ingest stream finishes the batch in
// hand (commit and ack) and ends with Unavailable so the agent reconnects
// elsewhere or later; then the store is closed.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 4)
	go func() {
		if err := s.grpc.Serve(s.grpcLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			errc <- fmt.Errorf("gRPC server: %w", err)
		}
	}()
	if s.httpLis != nil {
		go func() {
			if err := s.http.Serve(s.httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("HTTP server: %w", err)
			}
		}()
	}
	if s.webLis != nil {
		go func() {
			var err error
			if s.web.TLSConfig != nil {
				err = s.web.ServeTLS(s.webLis, "", "")
			} else {
				err = s.web.Serve(s.webLis)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("console server: %w", err)
			}
		}()
	}
	if s.auditLis != nil {
		go func() {
			if err := s.auditSrv.ServeTLS(s.auditLis, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("audit webhook server: %w", err)
			}
		}()
	}
	pruneCtx, stopPrune := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	if s.cfg.Retention > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); s.pruneLoop(pruneCtx) }()
	}
	if s.outs != nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.outs.Run(pruneCtx) }()
	}
	s.ready.Store(true)
	s.log.Info("collector ready", "grpc", s.GRPCAddr().String(), "http", fmt.Sprint(s.HTTPAddr()), "db", s.cfg.DB,
		"console", fmt.Sprint(s.ConsoleAddr()), "audit", fmt.Sprint(s.AuditAddr()), "outputs", len(s.cfg.Outputs), "mtls", s.mtls, "insecure", s.cfg.Insecure, "retention", s.cfg.Retention.String(), "version", version.Version)
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	s.shutdown(stopPrune, &wg)
	return runErr
}

func (s *Server) shutdown(stopPrune context.CancelFunc, wg *sync.WaitGroup) {
	s.log.Info("collector shutting down: draining ingest streams")
	s.ready.Store(false)
	close(s.draining)
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.cfg.ShutdownTimeout):
		s.log.Warn("graceful drain timed out; closing remaining streams", "timeout", s.cfg.ShutdownTimeout.String())
		s.grpc.Stop()
		<-done
	}
	stopPrune() // and the outputs' delivery: what is not delivered stays in the outboxes
	wg.Wait()
	hctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.http.Shutdown(hctx); err != nil {
		s.log.Warn("HTTP shutdown", "err", err)
	}
	if s.web != nil {
		if err := s.web.Shutdown(hctx); err != nil {
			s.log.Warn("console shutdown", "err", err)
		}
	}
	if s.auditSrv != nil {
		if err := s.auditSrv.Shutdown(hctx); err != nil {
			s.log.Warn("audit webhook shutdown", "err", err)
		}
	}
	if s.outs != nil { // after every ingest path has stopped
		if err := s.outs.Close(); err != nil {
			s.log.Warn("close outputs", "err", err)
		}
	}
	if err := s.store.Close(); err != nil {
		s.log.Error("close store", "err", err)
	}
	s.log.Info("collector stopped")
}

func (s *Server) pruneLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.PruneInterval)
	defer t.Stop()
	for {
		before := time.Now().Add(-s.cfg.Retention)
		if g, ok := s.store.(store.Partitioned); ok {
			// Whole partitions are dropped; rows are never deleted one by one.
			before = before.Truncate(g.PartitionSize())
		}
		n, err := s.store.Prune(ctx, before)
		s.m.pruned.Add(float64(n))
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Error("retention pruning failed", "err", err)
		case n > 0:
			s.log.Info("retention pruned findings", "deleted", n, "before", before.Format(time.RFC3339))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Run is loupe-collector: New, then Serve until ctx is cancelled.
func Run(ctx context.Context, cfg Config) error {
	s, err := New(ctx, cfg)
	if err != nil {
		return err
	}
	return s.Serve(ctx)
}
