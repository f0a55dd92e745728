#!/usr/bin/env bash
# deps.sh installs everything Loupe's build, tests and demo need on a fresh
# Debian 12 machine (run as root). Idempotent: when everything is present it
# only checks and returns in well under a second.
set -euo pipefail

# Debian packages and the command each one provides (used to skip apt when present).
declare -A pkgs=(
  [containerd]=containerd
  [runc]=runc
  [clang]=clang
  [llvm]=llvm-strip
  [libbpf-dev]=/usr/include/bpf/bpf_helpers.h
  [bpftool]=bpftool
  [protobuf-compiler]=protoc
  [libprotobuf-dev]=/usr/include/google/protobuf/timestamp.proto
  [prometheus]=promtool
  [busybox-static]=/bin/busybox
  [dash]=/bin/dash
  [qemu-system-x86]=qemu-system-x86_64
  [cpio]=cpio
  [postgresql]=/usr/lib/postgresql/15/bin/postgres
  [chromium]=chromium
)

missing=()
for p in "${!pkgs[@]}"; do
  probe=${pkgs[$p]}
  if [[ $probe == /* ]]; then [[ -e $probe ]] || missing+=("$p")
  else command -v "$probe" >/dev/null 2>&1 || command -v "/usr/sbin/$probe" >/dev/null 2>&1 || missing+=("$p"); fi
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "deps: missing Debian packages: ${missing[*]} (run as root, or install them yourself)" >&2
    exit 1
  fi
  echo "deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # A fresh machine has no package lists; refresh them once when they are absent or stale.
  if [[ -z $(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -n1) ]]; then
    apt-get update -qq
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The prometheus package starts a server; the project only needs promtool.
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
  pkill -x prometheus 2>/dev/null || true
  # The packaged containerd may start a system daemon; tests run their own private one.
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now containerd >/dev/null 2>&1 || true; fi
  # The postgresql package creates and starts a system cluster; tests run private ones (internal/testenv).
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now postgresql >/dev/null 2>&1 || true; fi
  if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters -h 2>/dev/null | awk '$4 == "online" {print $1, $2}' | while read -r v c; do pg_ctlcluster "$v" "$c" stop || true; done
  fi
fi

# Go code generators at pinned versions (protobuf + gRPC stubs).
GOBIN=${GOBIN:-$(go env GOPATH)/bin}
need_go() { [[ -x $GOBIN/$1 ]] && "$GOBIN/$1" --version 2>/dev/null | grep -q "$2"; }
need_go protoc-gen-go v1.36.12 || go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
need_go protoc-gen-go-grpc 1.5.1 || go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
# Kernels of the bpf test matrix (test/kernels/kernels.txt), cached; fast when present.
bash "$(dirname "$0")/kernels.sh" fetch
bash "$(dirname "$0")/containerd-versions.sh" build  # containerd 1.7/2.x of the runtime matrix, cached
exit 0
