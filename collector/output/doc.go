// Package output pushes the collector's findings to the tools a SOC runs:
// an HTTP webhook (the finding as JSON), a syslog server (RFC 5424 over TCP
// or TLS) and falcosidekick (a Falco event, so that its outputs — Slack,
// PagerDuty, Elasticsearch, Loki and the rest — work unchanged).
//
// Every output has a filter (minimum severity, kinds, namespaces) and a
// durable outbox: a spool (agent/spool) in its own directory under the
// collector's state directory. Enqueue appends the matching findings to each
// outbox and returns: a receiver that is down never slows ingest. One
// goroutine per output sends what its outbox holds and removes a finding
// only once it was delivered, or given up (too old, rejected by the
// receiver, unencodable, or dropped to keep the outbox under its bound),
// each give-up counted by reason. Delivery is therefore at least once:
// receivers dedupe by finding id.
package output
