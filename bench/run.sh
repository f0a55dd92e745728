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
step "runtime registry (bench/runtime)"
go test -run '^$' -bench . -benchtime 60x -count 2 ./bench/runtime/
step "exec tracer (bench/exec)"
go build -o /tmp/loupe-benchexec ./bench/exec && /tmp/loupe-benchexec -n 50000 -rounds 10
step "inspection (bench/scan)"
go run ./bench/scan
step "compliance (bench/compliance)"
go build -o /tmp/loupe-benchcompliance ./bench/compliance && /tmp/loupe-benchcompliance
step "agent end to end (bench/agent)"
LOUPE_BENCH=1 go test -count=1 -v -run TestAgentBench ./bench/agent
