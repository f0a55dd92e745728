package collector

import (
	"github.com/prometheus/client_golang/prometheus"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

// metrics are the collector's own series; labels are bounded enums.
type metrics struct {
	ingested   *prometheus.CounterVec
	rejected   *prometheus.CounterVec
	commit     prometheus.Histogram
	connected  prometheus.Gauge
	duplicates prometheus.Counter
	pruned     prometheus.Counter
	storeErrs  prometheus.Counter

	auditBatches *prometheus.CounterVec
	auditEvents  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		ingested: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "loupe", Subsystem: "collector", Name: "findings_ingested_total",
			Help: "Findings stored by the collector, by kind and severity (duplicates not counted).",
		}, []string{"kind", "severity"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "loupe", Subsystem: "collector", Name: "rejected_total",
			Help: "Findings (or whole oversized batches, reason too_large) the collector refused, by reason.",
		}, []string{"reason"}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "loupe", Subsystem: "collector", Name: "store_commit_seconds",
			Help:    "Time to store one ingested batch, transaction commit included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "loupe", Subsystem: "collector", Name: "agents_connected",
			Help: "Ingest streams open to this collector.",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "loupe", Subsystem: "collector", Name: "duplicates_total",
			Help: "Findings received again after they were stored (agent retries); ignored.",
		}),
		pruned: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "loupe", Subsystem: "collector", Name: "pruned_total",
			Help: "Findings deleted by retention pruning.",
		}),
		storeErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "loupe", Subsystem: "collector", Name: "store_errors_total",
			Help: "Ingest batches whose store transaction failed (not acknowledged; the agent resends them).",
		}),
		auditBatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "loupe", Subsystem: "collector", Name: "audit_batches_total",
			Help: "Audit webhook requests by result: ok, bad_batch (refused: not an audit.k8s.io/v1 EventList, or too large), unauthenticated, store_error.",
		}, []string{"result"}),
		auditEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "loupe", Subsystem: "collector", Name: "audit_events_total",
			Help: "Kubernetes audit events received, by result: stored, duplicate (another stage or a resend), ignored (not one Loupe keeps), invalid.",
		}, []string{"result"}),
	}
	for _, r := range []string{"ok", "bad_batch", "unauthenticated", "store_error"} {
		m.auditBatches.WithLabelValues(r)
	}
	for _, r := range []string{"stored", "duplicate", "ignored", "invalid"} {
		m.auditEvents.WithLabelValues(r)
	}
	for _, r := range Reasons {
		m.rejected.WithLabelValues(r)
	}
	for _, c := range []prometheus.Collector{m.ingested, m.rejected, m.commit, m.connected, m.duplicates, m.pruned, m.storeErrs, m.auditBatches, m.auditEvents} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) countIngested(f *loupev1.Finding) {
	m.ingested.WithLabelValues(f.GetKind().ShortName(), f.GetSeverity().ShortName()).Inc()
}
