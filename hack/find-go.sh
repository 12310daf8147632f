# Sourced by the install scripts: sets GO to the Go toolchain, or explains and exits.
# GO may name the toolchain explicitly; otherwise PATH, then the usual install locations.
# Usage: . hack/find-go.sh "<who>" "<what it builds>"
GO="${GO:-$(command -v go || true)}"
for candidate in /usr/local/go/bin/go /usr/lib/go/bin/go; do
  [ -n "$GO" ] && break
  [ -x "$candidate" ] && GO="$candidate"
done
if [ -z "$GO" ] || [ ! -x "$GO" ]; then
  echo "$1: the Go toolchain was not found on PATH; install Go (1.24 or newer) to build $2" >&2
  exit 1
fi
