#!/usr/bin/env bash
# Build helm v3 from its Go module and cache the binary outside the repository.
#
# Why build instead of download: this machine reaches only package registries,
# and the Go module proxy carries helm's source. The binary is cached keyed by
# version (~/.cache/trading-platform/bin/helm-<version>), so a warm machine
# pays the build (a few minutes on two cores) once.
#
# Usage: hack/install-helm.sh            build if missing, print the binary path
#        HELM_VERSION=v3.x.y hack/...     another pinned version
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.21.4}"
CACHE="${TRADING_DEV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trading-platform}"
BIN_DIR="$CACHE/bin"
TARGET="$BIN_DIR/helm-$HELM_VERSION"

if [ -x "$TARGET" ]; then
  echo "$TARGET"
  exit 0
fi

. "$(dirname "${BASH_SOURCE[0]}")/find-go.sh" install-helm "helm $HELM_VERSION"

# Helm's own Makefile stamps the Kubernetes version its client-go speaks into the binary (the
# default capabilities of `helm template` and `helm lint`); without it they assume v1.20.
MODINFO="$(cd "${TMPDIR:-/tmp}" && "$GO" mod download -json "helm.sh/helm/v3@$HELM_VERSION")" || {
  echo "install-helm: cannot fetch helm.sh/helm/v3@$HELM_VERSION from the Go module proxy" >&2
  exit 1
}
GOMOD_FILE="$(printf '%s\n' "$MODINFO" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
CLIENT_GO="$(sed -n 's/^[[:space:]]*k8s\.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$GOMOD_FILE" | head -n 1)"
if [ -z "$CLIENT_GO" ]; then
  echo "install-helm: could not read the k8s.io/client-go version from $GOMOD_FILE" >&2
  exit 1
fi
LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  LDFLAGS="$LDFLAGS -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$CLIENT_GO"
done

mkdir -p "$BIN_DIR"
GOBIN_TMP="$(mktemp -d "$BIN_DIR/.helm-build.XXXXXX")"
trap 'rm -rf "$GOBIN_TMP"' EXIT
LOG="$CACHE/build-helm-$HELM_VERSION.log"
echo "install-helm: building helm $HELM_VERSION from Go modules (the first time only: a few minutes on two cores; log: $LOG)" >&2
if ! GOBIN="$GOBIN_TMP" CGO_ENABLED=0 GOFLAGS=-mod=mod \
    "$GO" install -trimpath -ldflags="$LDFLAGS" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >"$LOG" 2>&1; then
  echo "install-helm: go install failed; last output:" >&2
  tail -n 40 "$LOG" >&2
  exit 1
fi
# Atomic rename: a concurrent caller sees either no binary or a whole one.
mv "$GOBIN_TMP/helm" "$TARGET.partial"
mv "$TARGET.partial" "$TARGET"
echo "$TARGET"
