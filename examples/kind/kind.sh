#!/usr/bin/env bash
# Runs the kind scenarios (test/e2e/kind_test.exs) against a real cluster: creates a kind cluster, builds the
# flame_demo image and loads it into the cluster, deploys it with examples/kubernetes/*.yaml
# (adapted to the demo), then runs `mix test --only kind` from this repository.
#
#   examples/kind/kind.sh [--keep] [--name CLUSTER]
#   examples/kind/kind.sh --render-manifests DIR
#
#   --keep          leave the cluster running afterwards (its kubeconfig path is printed)
#   --name CLUSTER  kind cluster name (default flame-k8s); an existing cluster is reused (and
#                   never deleted)
#   --render-manifests DIR
#                   only write the manifests it would apply into DIR, and exit (CI checks them)
#
# Needs docker (with a running daemon), kind, kubectl, git, and Elixir + Rust for the tests
# themselves (they list pods through this library's NIF). Your ~/.kube/config is not touched:
# the cluster's kubeconfig is written to ~/.cache/flame_k8s_backend/kind-CLUSTER.kubeconfig.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CLUSTER=flame-k8s
KEEP=0
RENDER_ONLY=
IMAGE=flame-demo:dev
NAMESPACE=default
BAD_IMAGE=registry.invalid/flame-demo:missing

while [ $# -gt 0 ]; do
  case "$1" in
    --keep) KEEP=1 ;;
    --name | --render-manifests)
      [ $# -ge 2 ] || { echo "kind.sh: $1 needs a value" >&2; exit 2; }
      if [ "$1" = --name ]; then CLUSTER="$2"; else RENDER_ONLY="$2"; fi
      shift
      ;;
    -h | --help)
      sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "kind.sh: unknown argument: $1 (see --help)" >&2
      exit 2
      ;;
  esac
  shift
done

# The example manifests, renamed for the demo app, with a fresh cookie and a single replica (the
# tests exec into deploy/flame-demo and expect that to be the parent they talk about).
render_manifests() {
  local out="$1" file cookie
  cookie="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
  mkdir -p "$out"
  for file in "$ROOT"/examples/kubernetes/*.yaml; do
    sed -e "s|image: my-app:1.0.0|image: $IMAGE|" \
      -e 's|my_app@|flame_demo@|' \
      -e 's|my-app|flame-demo|g' \
      -e 's|replicas: 2|replicas: 1|' \
      -e "s|PLACEHOLDER-replace-with-a-long-random-string|$cookie|" \
      -e "s|namespace: default|namespace: $NAMESPACE|" \
      "$file" >"$out/$(basename "$file")"
  done
  if grep -q -e PLACEHOLDER-replace -e my-app -e my_app "$out"/*.yaml; then
    echo "kind.sh: examples/kubernetes changed in a way the renaming above misses" >&2
    exit 1
  fi
}

if [ -n "$RENDER_ONLY" ]; then
  render_manifests "$RENDER_ONLY"
  exit 0
fi

log() { printf '\n==== %s\n' "$*" >&2; }

need() {
  command -v "$1" >/dev/null 2>&1 || {
    echo "kind.sh: '$1' is required but not on PATH. Install it: $2" >&2
    exit 1
  }
}
need docker "https://docs.docker.com/get-docker/"
need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need kubectl "https://kubernetes.io/docs/tasks/tools/"
need git "your package manager"
need mix "https://elixir-lang.org/install.html (the tests run on this machine)"
need cargo "https://rustup.rs (the tests load this library's NIF)"
docker info >/dev/null 2>&1 || {
  echo "kind.sh: docker is installed but its daemon is not reachable ('docker info' failed)" >&2
  exit 1
}

CACHE="${FLAME_K8S_CACHE:-$HOME/.cache/flame_k8s_backend}"
mkdir -p "$CACHE"
export KUBECONFIG="$CACHE/kind-$CLUSTER.kubeconfig"
WORK="$(mktemp -d)"
CREATED=0

cleanup() {
  local status=$?
  rm -rf "$WORK"
  if [ "$KEEP" = 1 ] || [ "$CREATED" = 0 ]; then
    echo "kind.sh: cluster $CLUSTER left running; export KUBECONFIG=$KUBECONFIG" >&2
  else
    log "deleting kind cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" >&2 || true
    rm -f "$KUBECONFIG"
  fi
  exit "$status"
}
trap cleanup EXIT

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  log "reusing kind cluster $CLUSTER"
  kind export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG" >&2
else
  log "creating kind cluster $CLUSTER"
  CREATED=1
  kind create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" --wait 120s >&2
fi

# A clean build context: the files git knows (tracked, or new and not ignored) and that exist,
# so no _build, deps or cargo target dir is sent to docker.
log "building image $IMAGE"
mkdir -p "$WORK/context"
(
  cd "$ROOT"
  git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' file; do
      if [ -f "$file" ]; then printf '%s\0' "$file"; fi
    done |
    tar --null -T - -cf - |
    tar -xf - -C "$WORK/context"
)
docker build -f "$WORK/context/examples/kind/Dockerfile" -t "$IMAGE" "$WORK/context" >&2

log "loading $IMAGE into $CLUSTER"
kind load docker-image "$IMAGE" --name "$CLUSTER" >&2

log "deploying examples/kubernetes/*.yaml as flame-demo"
render_manifests "$WORK/manifests"
existed=0
kubectl get -n "$NAMESPACE" deployment/flame-demo >/dev/null 2>&1 && existed=1
kubectl apply -n "$NAMESPACE" -f "$WORK/manifests" >&2
if [ "$existed" = 1 ]; then
  # A rebuilt image under the same tag is not a changed spec: restart to run the new build.
  kubectl rollout restart -n "$NAMESPACE" deployment/flame-demo >&2
fi
kubectl rollout status -n "$NAMESPACE" deployment/flame-demo --timeout=180s >&2

log "waiting for the flame_demo node to answer"
for attempt in $(seq 1 60); do
  answer="$(kubectl exec -n "$NAMESPACE" deploy/flame-demo -- bin/flame_demo rpc 'IO.puts(:pong)' 2>/dev/null || true)"
  case "$answer" in *pong*) break ;; esac
  if [ "$attempt" = 60 ]; then
    echo "kind.sh: flame_demo did not answer rpc within 60 s; its log:" >&2
    kubectl logs -n "$NAMESPACE" deploy/flame-demo --tail=50 >&2 || true
    exit 1
  fi
  sleep 1
done

log "mix test --only kind"
cd "$ROOT"
# The tests talk to the kind cluster only: --only kind starts no local control plane.
FLAME_DEMO_NAMESPACE="$NAMESPACE" \
  FLAME_DEMO_DEPLOYMENT=flame-demo \
  FLAME_DEMO_BAD_IMAGE="$BAD_IMAGE" \
  mix test --only kind test/e2e/kind_test.exs
