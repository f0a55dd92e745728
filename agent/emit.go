package agent

import (
	"context"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loupe-dev/loupe/agent/rules"
	"github.com/loupe-dev/loupe/agent/spool"
	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/internal/version"
)

// emitter is the single path every finding takes on its way out: it fills
// the common fields, applies the rules, counts, and writes batches to the
// spool (one fsync'd transaction per batch, never one per finding).
type emitter struct {
	node   string
	rules  *rules.Set
	spool  *spool.Spool
	log    *slog.Logger
	in     chan *loupev1.Finding
	maxLag time.Duration

	findings   *prometheus.CounterVec
	suppressed *prometheus.CounterVec
	spoolErrs  prometheus.Counter
	lost       prometheus.Counter
}

func newEmitter(node string, rs *rules.Set, sp *spool.Spool, log *slog.Logger, reg prometheus.Registerer) *emitter {
	e := &emitter{
		node: node, rules: rs, spool: sp, log: log,
		in:     make(chan *loupev1.Finding, 4096),
		maxLag: 50 * time.Millisecond,
		findings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "loupe", Subsystem: "agent", Name: "findings_total",
			Help: "Findings reported (after rules), by kind and severity.",
		}, []string{"kind", "severity"}),
		suppressed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "loupe", Subsystem: "agent", Name: "findings_suppressed_total",
			Help: "Findings suppressed by an allow rule, by rule name (rule names come from the rules file, a bounded set).",
		}, []string{"rule"}),
		spoolErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "loupe", Subsystem: "agent", Name: "spool_write_errors_total",
			Help: "Batches of findings the spool could not store (disk full or broken state dir).",
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "loupe", Subsystem: "agent", Name: "findings_lost_total",
			Help: "Findings dropped before the spool because it kept failing while 100,000 were waiting.",
		}),
	}
	reg.MustRegister(e.findings, e.suppressed, e.spoolErrs, e.lost)
	return e
}

// Emit hands a finding to the pipeline. It blocks when the pipeline is
// backed up (back-pressure reaches the producer rather than losing data).
func (e *emitter) Emit(ctx context.Context, f *loupev1.Finding) {
	if f.Id == "" {
		f.Id = uuid.Must(uuid.NewV7()).String()
	}
	if f.Time == nil {
		f.Time = timestamppb.Now()
	}
	if f.Node == "" {
		f.Node = e.node
	}
	f.AgentVersion = version.Version
	switch d, rule := e.rules.Apply(f); d {
	case rules.Disabled:
		return
	case rules.Suppressed:
		e.suppressed.WithLabelValues(rule).Inc()
		return
	}
	select {
	case e.in <- f:
	case <-ctx.Done():
	}
}

// run writes findings to the spool in batches until ctx is done, then
// flushes what it holds.
func (e *emitter) run(ctx context.Context) {
	var batch []*loupev1.Finding
	flush := func() {
		if len(batch) == 0 {
			return
		}
		if err := e.spool.Append(batch); err != nil {
			// Keep the batch and retry on the next flush: losing findings is worse than lag.
			e.spoolErrs.Inc()
			e.log.Error("cannot write findings to the spool; retrying", "findings", len(batch), "err", err)
			if len(batch) < 100000 {
				return
			}
			e.log.Error("dropping findings after repeated spool failures", "findings", len(batch))
			e.lost.Add(float64(len(batch)))
		} else {
			for _, f := range batch {
				e.findings.WithLabelValues(f.GetKind().ShortName(), f.GetSeverity().ShortName()).Inc()
			}
		}
		batch = batch[:0]
	}
	tick := time.NewTicker(e.maxLag)
	defer tick.Stop()
	for {
		select {
		case f := <-e.in:
			batch = append(batch, f)
			if len(batch) >= 1000 {
				flush()
			}
		case <-tick.C:
			flush()
		case <-ctx.Done():
			for {
				select {
				case f := <-e.in:
					batch = append(batch, f)
				default:
					flush()
					return
				}
			}
		}
	}
}
