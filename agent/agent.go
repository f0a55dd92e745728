package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/loupe-dev/loupe/agent/export"
	"github.com/loupe-dev/loupe/agent/rules"
	"github.com/loupe-dev/loupe/agent/spool"
	"github.com/loupe-dev/loupe/internal/obs"
	"github.com/loupe-dev/loupe/internal/version"
)

// Agent is a running node agent.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	reg     *prometheus.Registry
	spool   *spool.Spool
	emit    *emitter
	export  *export.Exporter
	httpLis net.Listener
	ready   prometheus.Gauge
	checks  map[string]obs.Check
	sources []source
	parts   parts // the Linux components (runtime registry, tracer, scanner)
}

// source is one producer of findings (registry, tracer, scanner), run until ctx ends.
type source struct {
	name string
	run  func(ctx context.Context) error
}

// Run starts the agent and blocks until ctx is cancelled.
func Run(ctx context.Context, cfg Config) error {
	a, err := New(ctx, cfg)
	if err != nil {
		return err
	}
	return a.Serve(ctx)
}

// New validates cfg, opens the state (spool, rules) and prepares every part;
// errors say which flag or prerequisite is at fault.
func New(ctx context.Context, cfg Config) (*Agent, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: cfg.Logger, reg: prometheus.NewRegistry(), checks: map[string]obs.Check{}}
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), version.NewBuildInfo())
	a.ready = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "loupe", Subsystem: "agent", Name: "ready",
		Help: "1 when every readiness check passes (containerd connected, tracer attached, spool writable), else 0."})
	a.reg.MustRegister(a.ready)

	rs, err := rules.Load(cfg.RulesFile)
	if err != nil {
		return nil, err
	}
	if a.spool, err = spool.Open(filepath.Join(cfg.StateDir, "spool"), cfg.SpoolMaxBytes); err != nil {
		return nil, fmt.Errorf("state dir %s (--state-dir): %w", cfg.StateDir, err)
	}
	a.reg.MustRegister(newSpoolCollector(a.spool, cfg.SpoolMaxBytes))
	a.checks["spool"] = a.spool.Writable
	a.emit = newEmitter(cfg.NodeName, rs, a.spool, a.log, a.reg)
	a.export = export.New(export.Config{
		Addr: cfg.Collector, TLS: cfg.TLS, Node: cfg.NodeName, Version: version.Version, Logger: a.log,
	}, a.spool, a.reg)

	if err := a.setupSources(ctx); err != nil {
		a.closeSources()
		a.spool.Close()
		return nil, err
	}
	if cfg.HTTPListen != "" {
		if a.httpLis, err = net.Listen("tcp", cfg.HTTPListen); err != nil {
			a.closeSources()
			a.spool.Close()
			return nil, fmt.Errorf("listen on --http-listen %s: %w", cfg.HTTPListen, err)
		}
	}
	return a, nil
}

// Registry is the agent's metrics registry.
func (a *Agent) Registry() *prometheus.Registry { return a.reg }

// HTTPAddr is the bound /metrics address (nil without --http-listen).
func (a *Agent) HTTPAddr() net.Addr {
	if a.httpLis == nil {
		return nil
	}
	return a.httpLis.Addr()
}

// Ready reports the readiness checks (what /readyz serves).
func (a *Agent) Ready() (string, bool) { return obs.Ready(a.checks) }

// Serve runs every part until ctx is cancelled, then stops them in order:
// sources first, then the emitter flushes to the spool, then the exporter.
func (a *Agent) Serve(ctx context.Context) error {
	defer a.spool.Close()
	defer a.closeSources()

	var httpSrv *http.Server
	if a.httpLis != nil {
		httpSrv = &http.Server{Handler: obs.Handler(a.reg, a.checks), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := httpSrv.Serve(a.httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error("metrics server stopped", "err", err)
			}
		}()
	}
	exportCtx, stopExport := context.WithCancel(context.Background())
	exportDone := make(chan struct{})
	go func() { a.export.Run(exportCtx); close(exportDone) }()
	emitCtx, stopEmit := context.WithCancel(context.Background())
	emitDone := make(chan struct{})
	go func() { a.emit.run(emitCtx); close(emitDone) }()

	var wg sync.WaitGroup
	for _, s := range a.sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.run(ctx); err != nil && ctx.Err() == nil {
				a.log.Error("agent component stopped", "component", s.name, "err", err)
			}
		}()
	}
	go a.watchReady(ctx)
	a.log.Info("agent running", "node", a.cfg.NodeName, "collector", a.cfg.Collector, "version", version.Version, "http", a.HTTPAddr())

	<-ctx.Done()
	a.log.Info("agent stopping")
	wg.Wait()
	stopEmit()
	<-emitDone
	// Give the exporter a moment to deliver what was just flushed; the spool keeps the rest.
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline) &&
		a.spool.Stats().Findings > 0 && a.export.Connected(); {
		time.Sleep(50 * time.Millisecond)
	}
	stopExport()
	<-exportDone
	if httpSrv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		httpSrv.Shutdown(sctx)
		cancel()
	}
	a.log.Info("agent stopped", "spooled", a.spool.Stats().Findings)
	return nil
}

// watchReady keeps loupe_agent_ready current for alerting.
func (a *Agent) watchReady(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		if _, ok := a.Ready(); ok {
			a.ready.Set(1)
		} else {
			a.ready.Set(0)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
