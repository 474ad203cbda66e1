#!/usr/bin/env bash
# Checks and tests localkube: gofmt, go vet, unit tests, and the end-to-end tests against real
# etcd + kube-apiserver (built or reused via tools/control-plane/build.sh).
#
#   tools/localkube/test.sh          # everything
#   tools/localkube/test.sh --unit   # skip the end-to-end tests
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT/tools/localkube"
export GOTOOLCHAIN=local CGO_ENABLED=0

unformatted="$(gofmt -l .)"
if [ -n "$unformatted" ]; then
  echo "gofmt needed: $unformatted" >&2
  exit 1
fi
go vet ./...
if [ "${1:-}" = "--unit" ]; then
  go test -count=1 ./...
else
  LOCALKUBE_E2E=1 LOCALKUBE_CONTROL_PLANE_DIR="$("$ROOT/tools/control-plane/build.sh")" go test -count=1 -v ./... 2>&1 |
    grep -v '^=== RUN'
fi
