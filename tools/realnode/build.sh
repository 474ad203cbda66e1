#!/usr/bin/env bash
# Builds (or reuses) everything a real single-node cluster needs, cached per version under
# ~/.cache/flame_k8s_backend (FLAME_K8S_CACHE) and never in the clone:
#
#   - Debian packages: containerd, runc, the CNI plugins, nftables, conntrack, ... (apt, as root)
#   - kube-apiserver, kubelet, kube-scheduler, kube-controller-manager, kube-proxy and etcd from
#     their Go modules (tools/control-plane/build.sh)
#   - CoreDNS from its Go module (only the plugins the node uses)
#   - a static pause binary compiled from k8s.io/kubernetes' build/pause/linux/pause.c, and
#     a static busybox (Debian's busybox-static), each as a one-layer OCI image archive
#
#   tools/realnode/build.sh
#
# Progress goes to stderr. stdout gets `KEY=value` lines (also written to
# $FLAME_K8S_CACHE/realnode/build.env, which tools/realnode/up reads).
#
# Env: KUBE_VERSION (v1.36.3), COREDNS_VERSION (v1.15.0), FLAME_K8S_CACHE.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

COREDNS_VERSION="${COREDNS_VERSION:-v1.15.0}"
PACKAGES=(containerd runc containernetworking-plugins debootstrap nftables conntrack socat iproute2
  gcc libc6-dev openssl curl python3 busybox-static)
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
for dir in /usr/local/go/bin "$HOME/go/bin"; do [ -d "$dir" ] && PATH="$PATH:$dir"; done

started=$SECONDS
step() { log "$* ($((SECONDS - started))s)"; }
die() { log "build failed: $*"; exit 1; }

# 1. Debian packages
missing=()
for p in "${PACKAGES[@]}"; do
  [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing Debian packages (${missing[*]}); install them as root"
  step "apt-get install ${missing[*]}"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  fi
else
  step "Debian packages present"
fi
command -v go >/dev/null || die "go is not installed (needs Go >= 1.26)"

# 2. Kubernetes components and etcd
step "kube components: tools/control-plane/build.sh"
KUBE_BIN_DIR="$("$REALNODE_ROOT/tools/control-plane/build.sh" kubelet kube-scheduler kube-controller-manager kube-proxy | tail -n 1)"
for b in etcd kube-apiserver kubelet kube-scheduler kube-controller-manager kube-proxy; do
  [ -x "$KUBE_BIN_DIR/$b" ] || die "$KUBE_BIN_DIR/$b missing after tools/control-plane/build.sh"
done

mkdir -p "$REALNODE_CACHE"

# 3. CoreDNS: a main package of our own that links only the plugins the node's Corefile uses
# (the upstream main links ~60 plugins, cloud SDKs included).
COREDNS="$REALNODE_CACHE/coredns-$COREDNS_VERSION/coredns"
if [ -x "$COREDNS" ]; then
  step "coredns $COREDNS_VERSION cached"
else
  step "coredns $COREDNS_VERSION: resolving modules"
  work="$(mktemp -d "$REALNODE_CACHE/coredns-build.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  cat > "$work/go.mod" <<EOF
module flamek8s.local/corednsbuild

go 1.26
EOF
  cat > "$work/main.go" <<'EOF'
// CoreDNS for the flame_k8s_backend real node: the cluster domain from the API server, nothing
// forwarded anywhere.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	// Same relative order as upstream's plugin.cfg.
	dnsserver.Directives = []string{"bind", "ready", "health", "errors", "log", "kubernetes"}
}

func main() { coremain.Run() }
EOF
  (cd "$work" && go get "github.com/coredns/coredns@$COREDNS_VERSION" >&2)
  step "coredns $COREDNS_VERSION: compiling"
  mkdir -p "$(dirname "$COREDNS")"
  (cd "$work" && go build -trimpath -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" -o "$COREDNS.tmp" .)
  mv "$COREDNS.tmp" "$COREDNS"
  rm -rf "$work"
  trap - EXIT
  step "coredns built: $COREDNS"
fi

# 4. The pause image (the sandbox image containerd runs for every pod)
PAUSE_IMAGE="flame-k8s.local/pause:$KUBE_VERSION"
PAUSE_DIR="$REALNODE_CACHE/pause-$KUBE_VERSION"
PAUSE_ARCHIVE="$PAUSE_DIR/pause.oci.tar"
if [ -f "$PAUSE_ARCHIVE" ]; then
  step "pause image cached"
else
  kmod_dir="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  src="$kmod_dir/build/pause/linux/pause.c"
  [ -f "$src" ] || die "$src not found (k8s.io/kubernetes@$KUBE_VERSION in the Go module cache)"
  step "pause: gcc -static $src"
  rm -rf "$PAUSE_DIR.tmp"
  mkdir -p "$PAUSE_DIR.tmp/rootfs"
  gcc -Os -static -Wall -DVERSION="$KUBE_VERSION-flame" -o "$PAUSE_DIR.tmp/rootfs/pause" "$src"
  strip "$PAUSE_DIR.tmp/rootfs/pause"
  "$PYTHON" "$REALNODE_HERE/oci_image.py" "$PAUSE_DIR.tmp/rootfs" "$PAUSE_IMAGE" \
    "$PAUSE_DIR.tmp/pause.oci.tar" /pause >&2
  rm -rf "$PAUSE_DIR"
  mv "$PAUSE_DIR.tmp" "$PAUSE_DIR"
fi

# 5. A busybox image for tests that need a shell (exit codes, DNS lookups from a pod)
bb_version="$(dpkg-query -W -f='${Version}' busybox-static | sed 's/^[0-9]*://; s/[^A-Za-z0-9_.-]/_/g')"
BUSYBOX_IMAGE="flame-k8s.local/busybox:$bb_version"
BUSYBOX_DIR="$REALNODE_CACHE/busybox-$bb_version"
BUSYBOX_ARCHIVE="$BUSYBOX_DIR/busybox.oci.tar"
if [ -f "$BUSYBOX_ARCHIVE" ]; then
  step "busybox image cached"
else
  step "busybox image from /bin/busybox ($bb_version)"
  rm -rf "$BUSYBOX_DIR.tmp"
  root="$BUSYBOX_DIR.tmp/rootfs"
  mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/proc" "$root/sys" "$root/dev"
  chmod 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $("$root/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
  "$PYTHON" "$REALNODE_HERE/oci_image.py" --cmd /bin/sh "$root" "$BUSYBOX_IMAGE" \
    "$BUSYBOX_DIR.tmp/busybox.oci.tar" >&2
  rm -rf "$BUSYBOX_DIR"
  mv "$BUSYBOX_DIR.tmp" "$BUSYBOX_DIR"
fi

env_lines="KUBE_BIN_DIR=$KUBE_BIN_DIR
COREDNS=$COREDNS
PAUSE_IMAGE=$PAUSE_IMAGE
PAUSE_ARCHIVE=$PAUSE_ARCHIVE
BUSYBOX_IMAGE=$BUSYBOX_IMAGE
BUSYBOX_ARCHIVE=$BUSYBOX_ARCHIVE"
printf '%s\n' "$env_lines" > "$BUILD_ENV.tmp"
mv "$BUILD_ENV.tmp" "$BUILD_ENV"
step "done: $BUILD_ENV"
printf '%s\n' "$env_lines"
