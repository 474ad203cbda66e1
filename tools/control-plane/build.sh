#!/usr/bin/env bash
# Builds Kubernetes components and etcd from their upstream Go modules and caches the binaries per
# version outside the clone. A second run with the same versions reuses the cache and builds nothing.
#
#   tools/control-plane/build.sh            # kube-apiserver + etcd; prints the cache directory
#   tools/control-plane/build.sh kubelet kube-scheduler kube-controller-manager kube-proxy
#                                           # + those (the real node); same directory
#
# Env: KUBE_VERSION (default v1.36.3), ETCD_VERSION (default: the etcd server version that
# k8s.io/kubernetes itself requires), FLAME_K8S_CACHE (default ~/.cache/flame_k8s_backend).
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.36.3}"
CACHE="${FLAME_K8S_CACHE:-$HOME/.cache/flame_k8s_backend}"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

log() { printf '[control-plane] %s\n' "$*" >&2; }
step_start=$SECONDS
took() { local t=$((SECONDS - step_start)); step_start=$SECONDS; printf '%dm%02ds' $((t / 60)) $((t % 60)); }

command -v go >/dev/null || { log "go is not installed (needs Go >= 1.26)"; exit 1; }

kube_mod_file() {
  go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p'
}

log "reading k8s.io/kubernetes@$KUBE_VERSION go.mod"
KMOD="$(kube_mod_file)"
[ -f "$KMOD" ] || { log "could not download k8s.io/kubernetes@$KUBE_VERSION"; exit 1; }
if [ -z "${ETCD_VERSION:-}" ]; then
  ETCD_VERSION="$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2; exit}' "$KMOD")"
fi
OUT="$CACHE/control-plane/kube-$KUBE_VERSION-etcd-$ETCD_VERSION"
kube_components=(kube-apiserver)
for component in "$@"; do
  case "$component" in
    kube-apiserver) ;;
    kubelet | kube-scheduler | kube-controller-manager | kube-proxy) kube_components+=("$component") ;;
    *) log "unknown component: $component (kubelet, kube-scheduler, kube-controller-manager, kube-proxy)"; exit 2 ;;
  esac
done
mkdir -p "$OUT"
# Test runs in several clones or worktrees share this cache: one builds, the others wait for it
# here and then find the binaries.
exec 9>"$OUT/.build.lock"
flock 9
missing=()
for component in "${kube_components[@]}"; do
  [ -x "$OUT/$component" ] || missing+=("$component")
done
if [ "${#missing[@]}" -eq 0 ] && [ -x "$OUT/etcd" ]; then
  log "cached: $OUT"
  echo "$OUT"
  exit 0
fi

minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
patch="${KUBE_VERSION##*.}"
staging_version="v0.$minor.$patch"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ "${#missing[@]}" -gt 0 ]; then
  step_start=$SECONDS
  mkdir -p "$work/kube"
  {
    echo "module flamek8s.local/kubebuild"
    echo
    echo "go $(awk '$1 == "go" {print $2; exit}' "$KMOD")"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    # Every staging module k8s.io/kubernetes replaces with ./staging/... is published on its own as
    # v0.<minor>.<patch>; point the replace there instead.
    awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print "replace " $1 " => " $1 " '"$staging_version"'"}' "$KMOD"
  } > "$work/kube/go.mod"
  packages=()
  for component in "${missing[@]}"; do packages+=("k8s.io/kubernetes/cmd/$component"); done
  log "${missing[*]} $KUBE_VERSION: $(grep -c '^replace' "$work/kube/go.mod") staging modules at $staging_version"
  log "${missing[*]}: resolving modules (first run downloads ~1 GB of sources)"
  (cd "$work/kube" && go get "${packages[@]/%/@$KUBE_VERSION}" >&2)
  log "${missing[*]}: compiling (first run takes 8-20 minutes on 2 cores)"
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  # One go build for all of them: their shared packages compile once.
  mkdir -p "$work/out"
  (cd "$work/kube" && go build -trimpath -ldflags "$ldflags" -o "$work/out/" "${packages[@]}")
  for component in "${missing[@]}"; do mv "$work/out/$component" "$OUT/$component"; done
  log "${missing[*]}: built in $(took)"
fi

if [ ! -x "$OUT/etcd" ]; then
  step_start=$SECONDS
  mkdir -p "$work/etcd"
  printf 'module flamek8s.local/etcdbuild\n\ngo 1.24\n' > "$work/etcd/go.mod"
  log "etcd $ETCD_VERSION: resolving modules"
  (cd "$work/etcd" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2)
  log "etcd $ETCD_VERSION: compiling"
  (cd "$work/etcd" && go build -trimpath -ldflags "-s -w" -o "$work/etcd.bin" go.etcd.io/etcd/server/v3)
  mv "$work/etcd.bin" "$OUT/etcd"
  log "etcd: built in $(took)"
fi

log "built: $OUT"
echo "$OUT"
