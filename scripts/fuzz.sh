#!/usr/bin/env bash
# fuzz.sh runs every Go fuzz target of the project for a short time each
# (the seed corpora already run as ordinary tests in `go test`).
#
# Go's fuzzer can end a short run with "context deadline exceeded" when the
# time runs out while it is still minimizing a new *interesting* (not failing)
# input; that says nothing about the code. Minimization of interesting inputs
# is off (-fuzzminimizetime=0), and such a run is retried once; a real
# failure (a "Failing input" written to testdata) always fails.
set -euo pipefail
t=${1:-5s}
log=$(mktemp); trap 'rm -f "$log"' EXIT
run() { go test -run='^$' -fuzz="^$2\$" -fuzztime="$t" -fuzzminimizetime=0 "$1" >"$log" 2>&1; }
while IFS= read -r line; do
  file=${line%%:*}; name=${line#*func }; name=${name%%(*}
  pkg=./$(dirname "$file")
  echo "fuzz: $pkg $name ($t)"
  if ! run "$pkg" "$name"; then
    if grep -q "context deadline exceeded" "$log" && ! grep -q "Failing input written" "$log"; then
      echo "fuzz: $name ended on the fuzzer's own deadline, not on a failure; running it again"
      run "$pkg" "$name" || { cat "$log"; exit 1; }
    else
      cat "$log"; exit 1
    fi
  fi
done < <(git grep -n '^func Fuzz' -- '*_test.go' 2>/dev/null || grep -rn '^func Fuzz' --include='*_test.go' .)
