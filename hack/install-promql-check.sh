#!/usr/bin/env bash
# Build hack/promql-check (Prometheus' own PromQL parser behind a 30-line main) and cache it
# outside the repository, keyed by the hash of its sources, so the chart tests can check that
# every alert expression and dashboard query really parses. Prints the binary's path.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/promql-check" && pwd)"
CACHE="${TRADING_DEV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trading-platform}"
KEY="$(cat "$HERE/main.go" "$HERE/go.mod" "$HERE/go.sum" | sha256sum | cut -c1-12)"
TARGET="$CACHE/bin/promql-check-$KEY"

if [ -x "$TARGET" ]; then
  echo "$TARGET"
  exit 0
fi

. "$(dirname "${BASH_SOURCE[0]}")/find-go.sh" install-promql-check "the PromQL checker"

mkdir -p "$CACHE/bin"
LOG="$CACHE/build-promql-check.log"
echo "install-promql-check: building from Go modules (the first time only: a minute or two; log: $LOG)" >&2
if ! (cd "$HERE" && CGO_ENABLED=0 "$GO" build -mod=readonly -trimpath -ldflags="-s -w" \
      -o "$TARGET.partial" .) >"$LOG" 2>&1; then
  echo "install-promql-check: go build failed; last output:" >&2
  tail -n 40 "$LOG" >&2
  rm -f "$TARGET.partial"
  exit 1
fi
mv "$TARGET.partial" "$TARGET"
echo "$TARGET"
