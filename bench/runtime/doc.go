// Package runtimebench benchmarks the container registry (runtime/containerd)
// against a private containerd with 50 running CRI containers:
//
//	go test -run '^$' -bench . -benchtime 60x ./bench/runtime/
//
// ColdStart/registry is the time from New to a synced registry (connect,
// subscribe, list and inspect every container); ColdStart/baseline-list is a
// bare containerd Containers() call on the same daemon. TaskStartToEntry is the
// delay from containerd's /tasks/start event timestamp to the registry's
// EventStart over b.N container starts (p50/p99), next to the delay to a bare
// containerd event subscriber (baseline). Results go to docs/performance.md.
package runtimebench
