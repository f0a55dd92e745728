#!/usr/bin/env bash
# kernels.sh runs the tests of ./bpf on other kernels, in qemu (TCG: no KVM
# needed), booting Debian's kernel packages with a busybox initramfs.
#
#   scripts/kernels.sh fetch        resolve and cache the kernels of test/kernels/kernels.txt
#   scripts/kernels.sh run [ARGS]   build the bpf tests once, boot every kernel, report per kernel
#
# The kernels are named in one place, test/kernels/kernels.txt: one line per
# kernel, an id and an apt package pattern; the newest package matching the
# pattern is used, cached under $LOUPE_KERNEL_CACHE (default
# /var/cache/loupe/kernels) as <package>_<version>/vmlinuz. Adding a kernel is
# one line there. ARGS go to the test binary (e.g. -test.run TestVerifierBudget).
# In the guest, /init mounts proc, sysfs, devtmpfs, cgroup2, tracefs, bpffs and a
# tmpfs /tmp, runs the test binary with LOUPE_REQUIRE_E2E=1 and prints a result
# marker; the host collects each serial log into $LOUPE_KERNEL_LOGS (default
# bin/kernels). A kernel fails when a test fails or skips, or no marker appears.
set -euo pipefail
cd "$(dirname "$0")/.."
list=test/kernels/kernels.txt
cache=${LOUPE_KERNEL_CACHE:-/var/cache/loupe/kernels}
logs=${LOUPE_KERNEL_LOGS:-bin/kernels}
vm_timeout=${LOUPE_KERNEL_TIMEOUT:-900}

die() { echo "kernels: $*" >&2; exit 1; }

# resolve fills resolved[] with "id package version" for each line of the
# list (apt-cache is slow: once per invocation).
resolved=()
resolve() {
  ((${#resolved[@]})) && return
  local id pattern pkg ver
  while read -r id pattern; do
    [[ -z $id || $id == \#* ]] && continue
    pkg=$(apt-cache pkgnames linux-image- 2>/dev/null | grep -E "^${pattern}$" | sort -V | tail -n1 || true)
    [[ -n $pkg ]] || die "no Debian package matches '$pattern' ($id): run 'apt-get update', or fix $list"
    ver=$(apt-cache show --no-all-versions "$pkg" 2>/dev/null | sed -n 's/^Version: //p' | head -n1)
    [[ -n $ver ]] || die "no version of $pkg in the package lists: run 'apt-get update'"
    resolved+=("$id $pkg $ver")
  done <"$list"
}

fetch() {
  resolve
  local id pkg ver dir tmp entry
  for entry in "${resolved[@]}"; do
    read -r id pkg ver <<<"$entry"
    dir=$cache/${pkg}_${ver}
    [[ -s $dir/vmlinuz ]] && continue
    echo "kernels: fetching $pkg $ver ($id)" >&2
    tmp=$(mktemp -d); chmod 755 "$tmp"
    (cd "$tmp" && apt-get download -qq "$pkg=$ver" 2>/dev/null) || { rm -rf "$tmp"; die "apt-get download $pkg=$ver failed"; }
    dpkg-deb -x "$tmp"/*.deb "$tmp/x"
    mkdir -p "$dir"
    cp "$tmp"/x/boot/vmlinuz-* "$dir/vmlinuz.tmp" && mv "$dir/vmlinuz.tmp" "$dir/vmlinuz"
    rm -rf "$tmp"
  done
}

# initramfs builds the guest's root: busybox with its applets, the test binary, /init.
initramfs() {
  local bin=$1 out=$2 root
  root=$(mktemp -d); chmod 755 "$root"
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,etc}
  cp /bin/busybox "$root/bin/busybox"
  for a in $(/bin/busybox --list); do
    [[ $a == busybox ]] || ln -s busybox "$root/bin/$a"
  done
  cp "$bin" "$root/bpf.test"
  cat >"$root/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
export PATH=/bin LOUPE_REQUIRE_E2E=1 HOME=/tmp TMPDIR=/tmp
echo "LOUPE-VM-KERNEL $(uname -r)"
cd /tmp && /bpf.test -test.v -test.count=1 -test.timeout=10m $(cat /args)
echo "LOUPE-VM-RESULT rc=$?"
poweroff -f
INIT
  chmod +x "$root/init"
  printf '%s\n' "$EXTRA_ARGS" >"$root/args"
  (cd "$root" && find . | cpio -o -H newc --quiet) >"$out"
  rm -rf "$root"
}

run() {
  command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing: run 'make deps'"
  fetch
  mkdir -p "$logs"
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  echo "kernels: building the bpf tests (static)" >&2
  CGO_ENABLED=0 go test -c -o "$work/bpf.test" ./bpf
  EXTRA_ARGS="$*" initramfs "$work/bpf.test" "$work/initrd"
  local -a ids pids
  local id pkg ver entry start=$SECONDS
  for entry in "${resolved[@]}"; do
    read -r id pkg ver <<<"$entry"
    ids+=("$id|$pkg $ver")
    timeout "$vm_timeout" qemu-system-x86_64 -nographic -no-reboot -m 1024 -smp 1 -cpu max \
      -kernel "$cache/${pkg}_${ver}/vmlinuz" -initrd "$work/initrd" \
      -append "console=ttyS0 panic=-1 quiet" </dev/null >"$logs/$id.log" 2>&1 &
    pids+=($!)
  done
  echo "kernels: booted ${#pids[@]} VM(s); logs in $logs/" >&2
  for p in "${pids[@]}"; do wait "$p" || true; done
  local failed=0 entry log pass fail skip status
  for entry in "${ids[@]}"; do
    id=${entry%%|*}; log=$logs/$id.log
    tr -d '\r' <"$log" >"$log.tmp" && mv "$log.tmp" "$log"
    pass=$(grep -c '^--- PASS' "$log" || true); fail=$(grep -c '^--- FAIL' "$log" || true)
    skip=$(grep -c '^--- SKIP' "$log" || true)
    if grep -q '^LOUPE-VM-RESULT rc=0$' "$log" && ((fail == 0 && skip == 0 && pass > 0)); then status=PASS
    else status=FAIL; failed=1; fi
    echo "kernel $id (${entry#*|}, $(grep -ao 'LOUPE-VM-KERNEL .*' "$log" | cut -d" " -f2)): $status $pass passed, $fail failed, $skip skipped"
    grep '^LOUPE-TABLE ' "$log" | sed 's/^/  /' || true
    if [[ $status == FAIL ]]; then
      grep -q '^LOUPE-VM-RESULT' "$log" || echo "  no result marker: the VM timed out or panicked; see $log"
      grep -A15 '^--- \(FAIL\|SKIP\)' "$log" | sed 's/^/  /' | head -80 || true
      echo "  full log: $log"
    fi
  done
  echo "kernels: $(( SECONDS - start ))s"
  return $failed
}

case ${1:-} in
  fetch) fetch ;;
  run) shift; [[ ${1:-} == -- ]] && shift; run "$@" ;;
  *) die "usage: scripts/kernels.sh fetch | run [-- test args]" ;;
esac
