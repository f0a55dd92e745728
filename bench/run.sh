#!/usr/bin/env bash
# run.sh runs every benchmark of the project, one after the other (they are
# sensitive to load: run them on an otherwise idle machine, as root), and
# prints their figures. docs/performance.md holds the latest figures and the
# per-benchmark commands this script runs.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) -eq 0 ]] || { echo "benchmarks need root (containerd, eBPF, drop_caches)" >&2; exit 1; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "collector ingest and queries (bench/ingest)"
go run ./bench/ingest
step "runtime registry (bench/runtime), on containerd 1.6 (Debian) and 2.x (internal/testenv/containerd-versions.txt)"
go test -c -o /tmp/loupe-benchruntime ./bench/runtime/
for round in 1 2 3; do
  for v in 1.6 2.x; do LOUPE_CONTAINERD=$v /tmp/loupe-benchruntime -test.run '^$' -test.bench . -test.benchtime 60x; done
done
step "exec tracer (bench/exec)"
go build -o /tmp/loupe-benchexec ./bench/exec && /tmp/loupe-benchexec -n 50000 -rounds 10
step "inspection (bench/scan)"
go run ./bench/scan
step "compliance (bench/compliance)"
go build -o /tmp/loupe-benchcompliance ./bench/compliance && /tmp/loupe-benchcompliance
step "agent end to end (bench/agent)"
LOUPE_BENCH=1 go test -count=1 -v -run TestAgentBench ./bench/agent
