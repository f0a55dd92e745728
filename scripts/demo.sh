#!/usr/bin/env bash
# demo.sh — Loupe end to end on this machine (run by `make demo`, after set-up and build).
# Starts a collector with an embedded SQLite store, sends it findings, and
# shows what a SOC analyst sees. Everything runs on loopback and is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin
work=$(mktemp -d /tmp/loupe-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

grpc_port=$(free_port); http_port=$(free_port)
export LOUPE_COLLECTOR=127.0.0.1:$grpc_port LOUPE_INSECURE=1

say "Starting loupe-collector (gRPC 127.0.0.1:$grpc_port, metrics 127.0.0.1:$http_port, SQLite in $work)"
"$BIN/loupe-collector" --insecure --grpc-listen "127.0.0.1:$grpc_port" --http-listen "127.0.0.1:$http_port" \
  --db "sqlite://$work/collector.db" >"$work/collector.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -fsS "http://127.0.0.1:$http_port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "http://127.0.0.1:$http_port/readyz" >/dev/null || { cat "$work/collector.log"; exit 1; }

say "Replaying recorded findings (docs/examples/findings.jsonl) through the Ingest API"
"$BIN/loupe" ingest docs/examples/findings.jsonl --node demo
say "Replaying them again: ingestion is idempotent by finding id"
"$BIN/loupe" ingest docs/examples/findings.jsonl --node demo

say "All findings, newest first:  loupe query --since ''"
"$BIN/loupe" query --since ''
say "Shell attempts on distroless pods:  loupe query --since '' --kind exec_failed --kind runtime_exec_failed"
"$BIN/loupe" query --since '' --kind exec_failed --kind runtime_exec_failed
say "Where did this binary run?  loupe query --since '' --sha256 9f86d0… -o jsonl"
"$BIN/loupe" query --since '' --sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 -o jsonl | cut -c1-160
say "Agents known to the collector:  loupe nodes"
"$BIN/loupe" nodes
say "Collector metrics (excerpt)"
curl -fsS "http://127.0.0.1:$http_port/metrics" | grep -E '^loupe_' | head -n 20
