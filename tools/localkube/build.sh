#!/usr/bin/env bash
# Builds the localkube binary (tools/localkube) into a cache outside the clone, keyed by a
# hash of its sources and the Go version, and prints its path. Reruns with unchanged sources build
# nothing.
#
#   tools/localkube/build.sh        # -> ~/.cache/flame_k8s_backend/bin/localkube-<hash>
#
# Env: FLAME_K8S_CACHE (default ~/.cache/flame_k8s_backend).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SRC="$ROOT/tools/localkube"
CACHE="${FLAME_K8S_CACHE:-$HOME/.cache/flame_k8s_backend}"
export GOTOOLCHAIN=local CGO_ENABLED=0

log() { printf '[localkube-build] %s\n' "$*" >&2; }
command -v go >/dev/null || { log "go is not installed (needs Go >= 1.26)"; exit 1; }

hash="$(
  cd "$SRC"
  {
    go version
    find . -type f \( -name '*.go' ! -name '*_test.go' -o -name go.mod -o -name go.sum \) -print0 |
      LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-16
)"
OUT="$CACHE/bin/localkube-$hash"
if [ -x "$OUT" ]; then
  log "cached: $OUT"
  echo "$OUT"
  exit 0
fi
mkdir -p "$CACHE/bin"
log "compiling $SRC"
(cd "$SRC" && go build -trimpath -ldflags "-s -w" -o "$OUT.tmp.$$" .)
mv "$OUT.tmp.$$" "$OUT"
log "built: $OUT"
echo "$OUT"
