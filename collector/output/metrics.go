package output

import "github.com/prometheus/client_golang/prometheus"

// Dead-letter reasons, the reason label of
// loupe_collector_output_dead_letter_total (a closed set).
const (
	// ReasonGaveUp: delivery kept failing until the finding was older than max-age.
	ReasonGaveUp = "gave_up"
	// ReasonRejected: the receiver refused the finding for good (HTTP 4xx but 401/403/404/408/429).
	ReasonRejected = "rejected"
	// ReasonDroppedFull: dropped to keep the outbox under its byte bound.
	ReasonDroppedFull = "dropped_full"
	// ReasonEncode: the finding could not be encoded for the output.
	ReasonEncode = "encode"
	// ReasonSpool: the outbox could not store the finding (disk error).
	ReasonSpool = "spool_error"
)

// Reasons lists every dead-letter reason.
var Reasons = []string{ReasonGaveUp, ReasonRejected, ReasonDroppedFull, ReasonEncode, ReasonSpool}

// metrics are the outputs' series; the output label is a configured name.
type metrics struct {
	enqueued  *prometheus.CounterVec
	delivered *prometheus.CounterVec
	retries   *prometheus.CounterVec
	dead      *prometheus.CounterVec
	queued    *prometheus.GaugeVec
	duration  *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer, names []string) (*metrics, error) {
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "loupe", Subsystem: "collector_output", Name: name, Help: help}
	}
	out := []string{"output"}
	m := &metrics{
		enqueued: prometheus.NewCounterVec(prometheus.CounterOpts(opts("enqueued_total",
			"Findings that matched the output's filter and entered its outbox.")), out),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts(opts("delivered_total",
			"Findings the receiver accepted.")), out),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts(opts("retries_total",
			"Failed delivery attempts that will be retried after a backoff.")), out),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts(opts("dead_letter_total",
			"Findings given up without delivery, by reason (gave_up, rejected, dropped_full, encode, spool_error).")),
			[]string{"output", "reason"}),
		queued: prometheus.NewGaugeVec(prometheus.GaugeOpts(opts("queued_findings",
			"Findings waiting in the output's outbox.")), out),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "loupe", Subsystem: "collector_output", Name: "delivery_seconds",
			Help:    "Time of one delivery attempt (connect, send, answer), successful or not.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, out),
	}
	for _, n := range names {
		m.enqueued.WithLabelValues(n)
		m.delivered.WithLabelValues(n)
		m.retries.WithLabelValues(n)
		m.queued.WithLabelValues(n)
		for _, r := range Reasons {
			m.dead.WithLabelValues(n, r)
		}
	}
	for _, c := range []prometheus.Collector{m.enqueued, m.delivered, m.retries, m.dead, m.queued, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
