#!/usr/bin/env bash
# falcosidekick.sh installs falcosidekick (pinned version) for the end-to-end
# test of the falcosidekick output (collector/output,
# TestFalcosidekickReemitsEvent) at $(go env GOPATH)/bin/falcosidekick, where
# the test looks after $LOUPE_FALCOSIDEKICK and PATH. Idempotent: returns at
# once when that binary already reports the pinned version.
#
# falcosidekick cannot be `go install`ed from the Go module proxy (its tags,
# e.g. "2.34.1", are not Go semver and the proxy refuses the module), so it
# is built from a source checkout of the pinned tag given as
# FALCOSIDEKICK_SRC; its dependencies come from the Go module proxy (about
# 4 minutes on 2 cores, ~100 MB binary). Without a checkout the script says
# so and exits 0 (the test then skips), or 1 with LOUPE_REQUIRE_FALCOSIDEKICK=1.
set -euo pipefail

VERSION=2.34.1
BIN=${FALCOSIDEKICK_BIN:-$(go env GOPATH)/bin/falcosidekick}

if [[ -x $BIN ]] && "$BIN" --version 2>/dev/null | grep -Eq "^GitVersion: +$VERSION\$"; then
  echo "falcosidekick $VERSION: present at $BIN"
  exit 0
fi

src=${FALCOSIDEKICK_SRC:-}
if [[ -z $src ]]; then
  echo "falcosidekick $VERSION: not installed (set FALCOSIDEKICK_SRC to a checkout of tag $VERSION to build it); its test will skip" >&2
  [[ ${LOUPE_REQUIRE_FALCOSIDEKICK:-} == 1 ]] && exit 1
  exit 0
fi
if ! grep -q '^module github.com/falcosecurity/falcosidekick$' "$src/go.mod" 2>/dev/null; then
  echo "falcosidekick: $src is not a falcosidekick source tree" >&2
  exit 1
fi
if tag=$(git -C "$src" describe --tags --exact-match 2>/dev/null) && [[ $tag != "$VERSION" ]]; then
  echo "falcosidekick: $src is at $tag, want $VERSION" >&2
  exit 1
fi

echo "falcosidekick $VERSION: building from $src into $BIN"
mkdir -p "$(dirname "$BIN")"
(cd "$src" && GOTOOLCHAIN=local GOFLAGS="-buildvcs=false -mod=mod" CGO_ENABLED=0 \
  nice -n 15 go build -trimpath -ldflags "-s -w -X main.GitVersion=$VERSION" -o "$BIN.tmp" .)
mv "$BIN.tmp" "$BIN"
"$BIN" --version 2>/dev/null | grep -E '^(GitVersion|GoVersion):'
