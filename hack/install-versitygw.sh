#!/usr/bin/env bash
# Build versitygw (Versity's S3 gateway, Apache-2.0) from its Go module and cache the binary
# outside the repository, keyed by version: the embedded S3-compatible object store that local
# runs and the tests start (docs/decisions/0012-object-store-versitygw.md says why this one).
#
# Why build instead of download: this machine reaches only package registries, and the Go module
# proxy carries versitygw's source. A warm machine pays the build (a few minutes on two cores)
# once: ~/.cache/trading-platform/bin/versitygw-<version>.
#
# Usage: hack/install-versitygw.sh               build if missing, print the binary path
#        VERSITYGW_VERSION=v1.x.y hack/...        another pinned version
set -euo pipefail

VERSITYGW_VERSION="${VERSITYGW_VERSION:-v1.8.0}"
CACHE="${TRADING_DEV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trading-platform}"
BIN_DIR="$CACHE/bin"
TARGET="$BIN_DIR/versitygw-$VERSITYGW_VERSION"

if [ -x "$TARGET" ]; then
  echo "$TARGET"
  exit 0
fi

. "$(dirname "${BASH_SOURCE[0]}")/find-go.sh" install-versitygw "versitygw $VERSITYGW_VERSION"

mkdir -p "$BIN_DIR"
GOBIN_TMP="$(mktemp -d "$BIN_DIR/.versitygw-build.XXXXXX")"
trap 'rm -rf "$GOBIN_TMP"' EXIT
LOG="$CACHE/build-versitygw-$VERSITYGW_VERSION.log"
echo "install-versitygw: building versitygw $VERSITYGW_VERSION from Go modules, about 2-6 minutes cold on two cores (log: $LOG)" >&2
STARTED=$SECONDS
# -p 1: one package at a time, the machine's two cores are shared.
if ! (cd "${TMPDIR:-/tmp}" && GOBIN="$GOBIN_TMP" CGO_ENABLED=0 GOFLAGS=-mod=mod \
    "$GO" install -p 1 -trimpath -ldflags="-s -w" \
    "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION") >"$LOG" 2>&1; then
  echo "install-versitygw: go install failed; last output:" >&2
  tail -n 40 "$LOG" >&2
  exit 1
fi
# Atomic rename: a concurrent caller sees either no binary or a whole one.
mv "$GOBIN_TMP/versitygw" "$TARGET.partial"
mv "$TARGET.partial" "$TARGET"
echo "install-versitygw: built in $((SECONDS - STARTED))s: $TARGET" >&2
echo "$TARGET"
