#!/usr/bin/env bash
# demo.sh — Loupe end to end on this machine (run by `make demo` after set-up and build, as root):
# a private containerd, a distroless pod and a debian-like pod created through CRI, `loupe run`
# (agent + embedded collector), then shell attempts as a person would make them, and the findings.
# The narrated steps live in test/demo (they also check each finding arrived); all is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then
  echo "make demo needs root (containerd, eBPF)" >&2
  exit 1
fi
LOUPE_DEMO=1 go test -count=1 -v -timeout 5m -run '^TestDemo$' ./test/demo \
  | grep -v -E '^(=== RUN|--- PASS|PASS$|ok  )'
