#!/usr/bin/env bash
# demo.sh — Loupe end to end on this machine (run by `make demo` after set-up and build, as root):
# a private containerd, a distroless pod and a debian-like pod created through CRI, `loupe run`
# (agent + embedded collector + web console), then shell attempts as a person would make them, and
# the findings. The narrated steps live in test/demo (they also check each finding arrived); all is
# removed at the end. LOUPE_DEMO_KEEP=1 keeps everything up, console included, until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then
  echo "make demo needs root (containerd, eBPF)" >&2
  exit 1
fi
quiet() { grep --line-buffered -v -E '^(=== RUN|--- PASS|PASS$|ok  )'; }
if [[ ${LOUPE_DEMO_KEEP:-} != 1 ]]; then
  LOUPE_DEMO=1 go test -count=1 -v -timeout 5m -run '^TestDemo$' ./test/demo | quiet
  exit "${PIPESTATUS[0]}"
fi
# Keep mode: Ctrl-C must reach the demo alone, not the containerd and agent it started (they
# share the terminal's process group otherwise), so the demo runs in its own session and this
# script hands the interrupt over; the demo then cleans up as usual.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go test -c -o "$tmp/demo.test" ./test/demo
cd test/demo
LOUPE_DEMO=1 LOUPE_DEMO_KEEP=1 setsid "$tmp/demo.test" -test.v -test.run '^TestDemo$' -test.timeout 0 \
  > >(trap '' INT; quiet) 2>&1 &
pid=$!
trap 'kill -INT "$pid" 2>/dev/null || true' INT
rc=0
while kill -0 "$pid" 2>/dev/null; do
  wait "$pid" && rc=0 || rc=$?
done
exit "$rc"
