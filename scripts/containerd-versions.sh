#!/usr/bin/env bash
# containerd-versions.sh builds the containerd daemons of the runtime test
# matrix (internal/testenv/containerd-versions.txt) from their Go modules, so
# no registry of binaries is needed:
#
#   scripts/containerd-versions.sh build     build the missing ones (skipped when present)
#   scripts/containerd-versions.sh list      print "id version bindir" for every entry
#   scripts/containerd-versions.sh run [IDS] the runtime matrix: the tests whose
#                                            result depends on the daemon, once per
#                                            version other than the default (or IDS)
#
# Each version goes to $LOUPE_CONTAINERD_CACHE (default /var/cache/loupe/containerd)
# /<version>/bin: containerd and containerd-shim-runc-v2, built from the
# module's source (go mod download, through the Go proxy), CGO_ENABLED=0 with the
# tags no_btrfs,no_devmapper,no_zfs, the version stamped with -ldflags as the
# release Makefile does. A build is skipped when `containerd --version` of the
# cached binary names the version. "debian" entries use the containerd on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
list=internal/testenv/containerd-versions.txt
cache=${LOUPE_CONTAINERD_CACHE:-/var/cache/loupe/containerd}

die() { echo "containerd-versions: $*" >&2; exit 1; }

entries() { grep -Ev '^[[:space:]]*(#|$)' "$list"; }

bindir() {
  local ver=$1
  if [[ $ver == debian ]]; then dirname "$(command -v containerd)"; else echo "$cache/$ver/bin"; fi
}

present() {
  local ver=$1 dir
  dir=$(bindir "$ver")
  [[ -x $dir/containerd && -x $dir/containerd-shim-runc-v2 ]] &&
    "$dir/containerd" --version 2>/dev/null | grep -qF " ${ver} "
}

build_one() {
  local ver=$1 mod dir tmp
  case $ver in
    v1.*) mod=github.com/containerd/containerd ;;
    v2.*) mod=github.com/containerd/containerd/v2 ;;
    *) die "unknown module version $ver" ;;
  esac
  dir=$cache/$ver
  tmp=$(mktemp -d "$cache/.build-$ver.XXXXXX")
  echo "containerd-versions: building containerd $ver (about 1.5 min)" >&2
  local start=$SECONDS
  # containerd's go.mod has exclude directives, which `go install mod@version`
  # refuses: build it as the main module, from a copy of the module's source.
  local src
  src=$(go mod download -json "$mod@$ver" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -d $src ]] || { rm -rf "$tmp"; die "go mod download $mod@$ver failed"; }
  cp -r "$src" "$tmp/src"; chmod -R u+w "$tmp/src"
  if ! (cd "$tmp/src" && CGO_ENABLED=0 GOFLAGS='-buildvcs=false -mod=mod' GOWORK=off nice -n 10 go build -trimpath \
      -tags no_btrfs,no_devmapper,no_zfs \
      -ldflags "-s -w -X $mod/version.Version=$ver -X $mod/version.Revision=go-module -X $mod/version.Package=$mod" \
      -o "$tmp/bin/" ./cmd/containerd ./cmd/containerd-shim-runc-v2); then
    rm -rf "$tmp"
    die "build of containerd $ver failed"
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  mv "$tmp/bin" "$dir/bin"
  rm -rf "$tmp"
  present "$ver" || die "built containerd $ver but '$dir/bin/containerd --version' does not name it"
  echo "containerd-versions: containerd $ver built in $((SECONDS - start)) s" >&2
}

# What runs once per extra version (`make test` already ran everything on the
# default one): the harness itself, the registry's tests (events, snapshot
# mounts, runc's log.json, sandboxes, labels, restart, exec PIDs — everything
# the daemon version can change) and the CRI end-to-end scenarios (distroless
# pod, failed kubectl exec, shell, drift). The e2e fault, compliance and
# enforcement tests exercise the agent and collector, not the daemon: once is enough.
matrix_pkgs=(./internal/testenv/ ./runtime/containerd/)
matrix_e2e_run='^TestScenarios$'

run() {
  local ids=("$@") id ver dir failed=() passed=() start
  if ((${#ids[@]} == 0)); then
    while read -r id ver _; do [[ $ver == debian ]] || ids+=("$id"); done < <(entries)
  fi
  for id in "${ids[@]}"; do
    ver=$(entries | awk -v id="$id" '$1 == id {print $2}')
    [[ -n $ver ]] || die "no entry $id in $list"
    if ! present "$ver"; then
      if [[ ${LOUPE_REQUIRE_E2E:-} == 1 ]]; then
        failed+=("$id (containerd $ver not built)"); continue
      fi
      echo "containerd-versions: SKIP $id: containerd $ver is not built (scripts/containerd-versions.sh build)" >&2
      continue
    fi
    echo "containerd-versions: running the runtime matrix on containerd $id ($ver)" >&2
    start=$SECONDS
    if LOUPE_CONTAINERD=$id go test -count=1 -timeout 20m "${matrix_pkgs[@]}" &&
       LOUPE_CONTAINERD=$id go test -count=1 -timeout 20m -run "$matrix_e2e_run" ./test/e2e/; then
      passed+=("$id ($ver, $((SECONDS - start)) s)")
    else
      failed+=("$id ($ver)")
    fi
  done
  ((${#passed[@]})) && echo "containerd-versions: passed: ${passed[*]}" >&2
  if ((${#failed[@]})); then echo "containerd-versions: FAILED: ${failed[*]}" >&2; exit 1; fi
  return 0
}

case ${1:-build} in
  build)
    mkdir -p "$cache"
    command -v go >/dev/null || die "go is not on PATH"
    while read -r id ver _; do
      [[ $ver == debian ]] && continue
      present "$ver" || build_one "$ver"
    done < <(entries)
    ;;
  list)
    while read -r id ver _; do echo "$id $ver $(bindir "$ver")"; done < <(entries)
    ;;
  run) shift; run "$@" ;;
  *) die "usage: $0 build|list|run [IDS]" ;;
esac
