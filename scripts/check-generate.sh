#!/usr/bin/env bash
# check-generate.sh regenerates the protobuf code and the BPF objects into a
# temporary directory and fails when they differ from the committed files.
#
# The BPF objects are compared byte for byte when this machine's clang is the
# one that built them (`make generate` writes its version to bpf/clang.version);
# with another clang the bytes differ anyway, so the check says so and skips
# them — except under CI (CI=true), whose machine is the reference.
set -euo pipefail
export PATH=$(go env GOPATH)/bin:$PATH
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
stale=0

protoc -I api/v1 --go_out="$tmp" --go_opt=paths=source_relative \
  --go-grpc_out="$tmp" --go-grpc_opt=paths=source_relative api/v1/loupe.proto
for f in loupe.pb.go loupe_grpc.pb.go; do
  if ! cmp -s "$tmp/$f" "api/v1/$f"; then
    echo "api/v1/$f is stale: run 'make generate' and commit the result" >&2
    stale=1
  fi
done

built_with=$(cat bpf/clang.version)
have=$(clang --version | head -1)
if [[ "$built_with" != "$have" && "${CI:-}" != true ]]; then
  echo "BPF objects not checked: they were built with '$built_with', this machine has '$have'" >&2
else
  mkdir "$tmp/bpf"
  # Run bpf/gen.go's own go:generate lines, writing into $tmp/bpf.
  while IFS= read -r line; do
    cmd=${line#//go:generate }
    cmd=${cmd/bpf2go /bpf2go -output-dir $tmp/bpf }
    (cd bpf && GOPACKAGE=bpf BPF_CFLAGS="${BPF_CFLAGS:--O2 -g -Wall -Werror}" eval "$cmd" >/dev/null)
  done < <(grep '^//go:generate ' bpf/gen.go)
  for f in "$tmp"/bpf/*; do
    name=$(basename "$f")
    if ! cmp -s "$f" "bpf/$name"; then
      echo "bpf/$name is stale (or not built from bpf/exec.bpf.c with '$have'): run 'make generate' and commit the result" >&2
      stale=1
    fi
  done
fi
[[ $stale == 0 ]] || exit 1
echo "generated code is up to date"
