package containerd

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the registry's Prometheus metrics. Create them with
// NewMetrics on the agent's private registry and pass them in Config.
type Metrics struct {
	events       *prometheus.CounterVec
	reconnects   prometheus.Counter
	dropped      prometheus.Counter
	containers   prometheus.Gauge
	ready        prometheus.Gauge
	syncDuration prometheus.Histogram
}

// NewMetrics creates and registers the registry's metrics on reg:
// loupe_runtime_events_total{type}, loupe_runtime_reconnects_total,
// loupe_runtime_dropped_events_total, loupe_runtime_containers,
// loupe_runtime_ready and loupe_runtime_sync_duration_seconds.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "loupe", Subsystem: "runtime", Name: "events_total",
			Help: "Registry events delivered to subscribers, by type (start, stop, remove, exec, exec_failed).",
		}, []string{"type"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "loupe", Subsystem: "runtime", Name: "reconnects_total",
			Help: "Times the connection to containerd was lost and retried.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "loupe", Subsystem: "runtime", Name: "dropped_events_total",
			Help: "Registry events dropped because a subscriber was too slow.",
		}),
		containers: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "loupe", Subsystem: "runtime", Name: "containers",
			Help: "Containers (sandboxes included) in the registry.",
		}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "loupe", Subsystem: "runtime", Name: "ready",
			Help: "1 when the registry is connected to containerd and synced, else 0.",
		}),
		syncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "loupe", Subsystem: "runtime", Name: "sync_duration_seconds",
			Help:    "Duration of full syncs (list and inspect of every container).",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}),
	}
	for _, c := range []prometheus.Collector{m.events, m.reconnects, m.dropped, m.containers, m.ready, m.syncDuration} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
