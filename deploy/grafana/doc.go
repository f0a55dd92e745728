// Package grafana holds Loupe's Grafana dashboard (loupe-fleet.json) and the
// test that checks it: valid dashboard JSON, every query valid PromQL (parsed
// by promtool) and every metric documented in docs/metrics.md.
package grafana
