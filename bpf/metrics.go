package bpf

import (
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Stats is what the tracer's metrics read; *Tracer implements it.
type Stats interface {
	// Lost is the number of events lost (ring buffer full or undecodable).
	Lost() uint64
	// Count is the number of events of a type read so far.
	Count(EventType) uint64
	// Mode is the loaded variant of each program.
	Mode() Mode
}

type metrics struct {
	s      Stats
	lost   *prometheus.Desc
	events *prometheus.Desc
	info   *prometheus.Desc
}

// NewMetrics returns a collector exporting loupe_agent_bpf_events_lost_total,
// loupe_agent_bpf_events_total{type="exec|exec_failed|exit"} and
// loupe_agent_tracer_info{object,exit,exec_failures,enforce} for s; register
// it in the agent's private registry.
func NewMetrics(s Stats) prometheus.Collector {
	return &metrics{
		s: s,
		lost: prometheus.NewDesc("loupe_agent_bpf_events_lost_total",
			"Exec tracer events lost because the ring buffer was full (counted per CPU in the kernel) or a record could not be decoded.", nil, nil),
		events: prometheus.NewDesc("loupe_agent_bpf_events_total",
			"Exec tracer events read from the ring buffer, by type.", []string{"type"}, nil),
		info: prometheus.NewDesc("loupe_agent_tracer_info",
			"Always 1: the exec tracer's loaded variants (object bpf_loop|bounded_loop, exit group_dead|signal_live), whether failed exec attempts are traced (on|off|unavailable) and whether enforcement is on.",
			[]string{"object", "exit", "exec_failures", "enforce"}, nil),
	}
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.lost
	ch <- m.events
	ch <- m.info
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(m.lost, prometheus.CounterValue, float64(m.s.Lost()))
	for _, t := range []EventType{EventExec, EventExecFailed, EventExit} {
		ch <- prometheus.MustNewConstMetric(m.events, prometheus.CounterValue, float64(m.s.Count(t)), t.String())
	}
	mode := m.s.Mode()
	failures, _, _ := strings.Cut(mode.ExecFailures, ":") // the reason is logged, not a label
	ch <- prometheus.MustNewConstMetric(m.info, prometheus.GaugeValue, 1, mode.Object, mode.Exit, failures,
		strconv.FormatBool(mode.Enforce))
}
