package bpf

import "github.com/prometheus/client_golang/prometheus"

// Stats is what the tracer's metrics read; *Tracer implements it.
type Stats interface {
	// Lost is the number of events lost (ring buffer full or undecodable).
	Lost() uint64
	// Count is the number of events of a type read so far.
	Count(EventType) uint64
}

type metrics struct {
	s      Stats
	lost   *prometheus.Desc
	events *prometheus.Desc
}

// NewMetrics returns a collector exporting loupe_agent_bpf_events_lost_total
// and loupe_agent_bpf_events_total{type="exec|exec_failed|exit"} for s;
// register it in the agent's private registry.
func NewMetrics(s Stats) prometheus.Collector {
	return &metrics{
		s: s,
		lost: prometheus.NewDesc("loupe_agent_bpf_events_lost_total",
			"Exec tracer events lost because the ring buffer was full (counted per CPU in the kernel) or a record could not be decoded.", nil, nil),
		events: prometheus.NewDesc("loupe_agent_bpf_events_total",
			"Exec tracer events read from the ring buffer, by type.", []string{"type"}, nil),
	}
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.lost
	ch <- m.events
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(m.lost, prometheus.CounterValue, float64(m.s.Lost()))
	for _, t := range []EventType{EventExec, EventExecFailed, EventExit} {
		ch <- prometheus.MustNewConstMetric(m.events, prometheus.CounterValue, float64(m.s.Count(t)), t.String())
	}
}
