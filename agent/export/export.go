// Package export sends spooled findings to the collector over the gRPC
// Ingest stream: batches by size and time, waits for each acknowledgement
// (sent by the collector only after a durable commit) before removing the
// batch from the spool, and reconnects with exponential backoff and jitter.
// Because the collector ingests idempotently by finding id, re-sending a
// batch after a crash or a lost ack is harmless.
package export

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/loupe-dev/loupe/agent/spool"
	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector"
	"github.com/loupe-dev/loupe/internal/tlsutil"
)

// Config configures an Exporter. Zero durations and sizes take the defaults.
type Config struct {
	Addr       string                // collector HOST:PORT, or several comma-separated (replicas: each reconnect tries the next)
	TLS        tlsutil.ClientOptions // mTLS material, or Insecure
	Node       string                // node name claimed on the stream
	Version    string                // agent version
	BatchSize  int                   // findings per batch (500)
	BatchDelay time.Duration         // wait this long for a batch to fill (200ms)
	AckTimeout time.Duration         // give up on a batch's ack after this (30s)
	MinBackoff time.Duration         // first reconnect delay (250ms)
	MaxBackoff time.Duration         // reconnect delay cap (30s)
	Heartbeat  time.Duration         // send an empty batch after this much idleness (30s)
	Logger     *slog.Logger
}

func (c *Config) defaults() {
	if c.BatchSize <= 0 {
		c.BatchSize = 500
	}
	if c.BatchDelay <= 0 {
		c.BatchDelay = 200 * time.Millisecond
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = 30 * time.Second
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 250 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Exporter drains a spool into a collector.
type Exporter struct {
	cfg       Config
	spool     *spool.Spool
	connected atomic.Bool
	addrs     []string // collector replicas, in the order reconnects try them
	next      int      // index in addrs of the next session's collector

	acked     prometheus.Counter
	rejected  *prometheus.CounterVec
	connGauge prometheus.Gauge
	errors    prometheus.Counter
}

// New returns an Exporter for sp; its metrics are registered in reg.
func New(cfg Config, sp *spool.Spool, reg prometheus.Registerer) *Exporter {
	cfg.defaults()
	e := &Exporter{
		cfg:   cfg,
		spool: sp,
		addrs: splitAddrs(cfg.Addr),
		acked: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "loupe", Subsystem: "agent", Name: "export_acked_total",
			Help: "Findings acknowledged by the collector (stored or already present) and removed from the spool.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "loupe", Subsystem: "agent", Name: "export_rejected_total",
			Help: "Findings the collector rejected as invalid (removed from the spool, not retried), by reason.",
		}, []string{"reason"}),
		connGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "loupe", Subsystem: "agent", Name: "collector_connected",
			Help: "1 while an Ingest stream to the collector is established and acknowledging, else 0.",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "loupe", Subsystem: "agent", Name: "export_errors_total",
			Help: "Ingest streams that ended with an error (each is followed by a reconnect with backoff).",
		}),
	}
	if reg != nil {
		reg.MustRegister(e.acked, e.rejected, e.connGauge, e.errors)
	}
	return e
}

// splitAddrs splits a comma-separated collector list, dropping blanks.
func splitAddrs(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		out = []string{s} // Dial reports the bad address
	}
	return out
}

// Connected reports whether the last stream is up and acknowledging.
func (e *Exporter) Connected() bool { return e.connected.Load() }

func (e *Exporter) setConnected(v bool) {
	e.connected.Store(v)
	if v {
		e.connGauge.Set(1)
	} else {
		e.connGauge.Set(0)
	}
}

// Run exports until ctx is done; it only returns ctx's error.
func (e *Exporter) Run(ctx context.Context) error {
	backoff := e.cfg.MinBackoff
	// Agents start at random replicas so that a fleet spreads over them.
	e.next = rand.IntN(len(e.addrs))
	for {
		addr := e.addrs[e.next]
		e.next = (e.next + 1) % len(e.addrs)
		progressed, err := e.session(ctx, addr)
		e.setConnected(false)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		e.errors.Inc()
		if progressed {
			backoff = e.cfg.MinBackoff
		}
		// Full jitter keeps a fleet of agents from reconnecting in lockstep.
		wait := time.Duration(rand.Int64N(int64(backoff))) + backoff/2
		e.cfg.Logger.Warn("collector stream ended; reconnecting", "collector", addr, "next", e.addrs[e.next], "err", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		backoff = min(backoff*2, e.cfg.MaxBackoff)
	}
}

// session runs one Ingest stream; progressed reports that at least one ack arrived.
func (e *Exporter) session(ctx context.Context, addr string) (progressed bool, err error) {
	conn, err := collector.Dial(ctx, addr, e.cfg.TLS)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := loupev1.NewCollectorClient(conn).Ingest(sctx, grpc.WaitForReady(false))
	if err != nil {
		return false, fmt.Errorf("open ingest stream: %w", err)
	}
	var seq uint64
	// An empty first batch proves the connection, TLS and identity before any data is at stake.
	var batch []spool.Entry
	for {
		seq++
		if err := e.sendBatch(stream, seq, batch); err != nil {
			return progressed, err
		}
		if !progressed {
			e.cfg.Logger.Info("connected to collector", "collector", addr)
		}
		progressed = true
		e.setConnected(true)
		if batch, err = e.nextBatch(ctx); err != nil {
			return progressed, err
		}
	}
}

// sendBatch sends one batch and waits for its ack, then removes it from the spool.
func (e *Exporter) sendBatch(stream loupev1.Collector_IngestClient, seq uint64, batch []spool.Entry) error {
	req := &loupev1.IngestRequest{Sequence: seq, Node: e.cfg.Node, AgentVersion: e.cfg.Version}
	keys := make([]spool.Key, len(batch))
	for i, en := range batch {
		req.Findings = append(req.Findings, en.Finding)
		keys[i] = en.Key
	}
	if err := stream.Send(req); err != nil {
		if _, rerr := stream.Recv(); rerr != nil { // the status is on the receive side
			return fmt.Errorf("send batch: %w", rerr)
		}
		return fmt.Errorf("send batch: %w", err)
	}
	type result struct {
		ack *loupev1.IngestResponse
		err error
	}
	ch := make(chan result, 1)
	go func() {
		ack, err := stream.Recv()
		ch <- result{ack, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-time.After(e.cfg.AckTimeout):
		return fmt.Errorf("no ack for batch %d within %s", seq, e.cfg.AckTimeout)
	}
	if r.err != nil {
		return fmt.Errorf("wait for ack of batch %d: %w", seq, r.err)
	}
	if r.ack.GetAckedSequence() < seq {
		return fmt.Errorf("collector acked batch %d, expected %d", r.ack.GetAckedSequence(), seq)
	}
	for _, rej := range r.ack.GetRejected() {
		e.rejected.WithLabelValues(rej.GetReason()).Inc()
		e.cfg.Logger.Error("collector rejected a finding; dropping it", "id", rej.GetId(), "reason", rej.GetReason(), "message", rej.GetMessage())
	}
	if err := e.spool.Ack(keys); err != nil {
		return err
	}
	e.acked.Add(float64(int(r.ack.GetStored()) + int(r.ack.GetDuplicates())))
	return nil
}

// nextBatch waits for findings and returns up to BatchSize of them, waiting
// at most BatchDelay for a partial batch to fill. After Heartbeat without
// findings it returns an empty batch: the collector's ack keeps the node's
// last-seen time current and proves the stream is still alive.
func (e *Exporter) nextBatch(ctx context.Context) ([]spool.Entry, error) {
	var fillBy <-chan time.Time
	heartbeat := time.After(e.cfg.Heartbeat)
	tick := time.NewTicker(time.Second) // covers coalesced notifications
	defer tick.Stop()
	for {
		entries, err := e.spool.Peek(e.cfg.BatchSize, nil)
		if err != nil {
			return nil, err
		}
		if len(entries) >= e.cfg.BatchSize {
			return entries, nil
		}
		if len(entries) > 0 && fillBy == nil {
			fillBy = time.After(e.cfg.BatchDelay)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-fillBy:
			return e.spool.Peek(e.cfg.BatchSize, nil)
		case <-heartbeat:
			if len(entries) == 0 {
				return nil, nil
			}
		case <-e.spool.Ready():
		case <-tick.C:
		}
	}
}
