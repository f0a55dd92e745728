package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/loupe-dev/loupe/agent/spool"
)

// spoolCollector exports the spool's state at scrape time.
type spoolCollector struct {
	sp       *spool.Spool
	maxBytes int64

	findings, bytes, max, dropped *prometheus.Desc
}

func newSpoolCollector(sp *spool.Spool, maxBytes int64) *spoolCollector {
	return &spoolCollector{
		sp: sp, maxBytes: maxBytes,
		findings: prometheus.NewDesc("loupe_agent_spool_findings", "Findings waiting in the spool for the collector's ack.", nil, nil),
		bytes:    prometheus.NewDesc("loupe_agent_spool_bytes", "Encoded size of the findings waiting in the spool.", nil, nil),
		max:      prometheus.NewDesc("loupe_agent_spool_max_bytes", "Bound of the spool (--spool-max-bytes); past it, lowest severity findings are dropped.", nil, nil),
		dropped:  prometheus.NewDesc("loupe_agent_spool_dropped_total", "Findings dropped because the spool was full, by severity (lowest first).", []string{"severity"}, nil),
	}
}

func (c *spoolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.findings
	ch <- c.bytes
	ch <- c.max
	ch <- c.dropped
}

func (c *spoolCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.sp.Stats()
	ch <- prometheus.MustNewConstMetric(c.findings, prometheus.GaugeValue, float64(st.Findings))
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(st.Bytes))
	ch <- prometheus.MustNewConstMetric(c.max, prometheus.GaugeValue, float64(c.maxBytes))
	for _, sev := range []string{"INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL"} {
		var n uint64
		for s, v := range st.Dropped {
			if s.ShortName() == sev {
				n = v
			}
		}
		ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(n), sev)
	}
}
