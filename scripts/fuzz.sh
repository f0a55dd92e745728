#!/usr/bin/env bash
# fuzz.sh runs every Go fuzz target of the project for a short time each
# (the seed corpora already run as ordinary tests in `go test`).
set -euo pipefail
t=${1:-5s}
while IFS= read -r line; do
  file=${line%%:*}; name=${line#*func }; name=${name%%(*}
  pkg=./$(dirname "$file")
  echo "fuzz: $pkg $name ($t)"
  go test -run='^$' -fuzz="^${name}\$" -fuzztime="$t" "$pkg" >/tmp/loupe-fuzz.log 2>&1 || { cat /tmp/loupe-fuzz.log; exit 1; }
done < <(git grep -n '^func Fuzz' -- '*_test.go' 2>/dev/null || grep -rn '^func Fuzz' --include='*_test.go' .)
