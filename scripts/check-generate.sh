#!/usr/bin/env bash
# check-generate.sh regenerates the protobuf code into a temporary directory and
# fails when it differs from the committed files.
set -euo pipefail
export PATH=$(go env GOPATH)/bin:$PATH
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
protoc -I api/v1 --go_out="$tmp" --go_opt=paths=source_relative \
  --go-grpc_out="$tmp" --go-grpc_opt=paths=source_relative api/v1/loupe.proto
for f in loupe.pb.go loupe_grpc.pb.go; do
  if ! cmp -s "$tmp/$f" "api/v1/$f"; then
    echo "api/v1/$f is stale: run 'make generate' and commit the result" >&2
    exit 1
  fi
done
echo "generated code is up to date"
