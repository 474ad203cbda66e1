# Shared by tools/realnode/{build.sh,up,down,check-clean,can-run}: names, addresses, paths.
# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables are for the scripts that source this file

REALNODE_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REALNODE_ROOT="$(cd "$REALNODE_HERE/../.." && pwd)"

KUBE_VERSION="${KUBE_VERSION:-v1.36.3}"
CACHE="${FLAME_K8S_CACHE:-$HOME/.cache/flame_k8s_backend}"
REALNODE_CACHE="$CACHE/realnode"
BUILD_ENV="$REALNODE_CACHE/build.env"

# One node per machine: the bridge, these addresses and ports and the kubepods cgroups are global.
BRIDGE=flk8s-br0
BRIDGE_IP=10.244.0.1
POD_CIDR=10.244.0.0/24
POD_RANGE_START=10.244.0.10
SERVICE_CIDR=10.96.0.0/12
SERVICE_IP=10.96.0.1
# `up --ipv6`: IPv6 first (pods, Services, the node), IPv4 beside it. Unique local addresses.
BRIDGE_IP6=fd00:10:244::1
POD_CIDR6=fd00:10:244::/64
POD_RANGE_START6=fd00:10:244::10
SERVICE_CIDR6=fd00:10:96::/112
SERVICE_IP6=fd00:10:96::1
NODE_NAME=flame-realnode
CLUSTER_DOMAIN=cluster.local
APISERVER_PORT_DEFAULT=16443
ETCD_CLIENT_PORT=23790
ETCD_PEER_PORT=23800
ETCD_METRICS_PORT=23810
KUBELET_PORT=10250
KUBELET_HEALTHZ_PORT=10248
PROXY_HEALTHZ_PORT=10256
PROXY_METRICS_PORT=10249
KCM_PORT=10257
SCHEDULER_PORT=10259
COREDNS_HEALTH_PORT=18080
COREDNS_READY_PORT=18181
# Every registry pull goes here and is refused at once (no registry, nothing leaves the machine).
BLACKHOLE=http://127.0.0.1:1

STATE_DEFAULT="${FLAME_K8S_REALNODE_DIR:-/var/lib/flame_k8s_backend/realnode}"

# Processes `up` starts, in the order `down` stops them (the kubelet first: it would restart
# what the others lose; containerd last but one: its shims and tasks are handled around it).
COMPONENTS=(watchdog kubelet kube-proxy coredns kube-scheduler kube-controller-manager kube-apiserver etcd containerd)

# Paths the kubelet, containerd and the CNI plugins write outside the configured dirs
# (hard-coded or defaults). `down` removes those that did not exist before `up`.
OUTSIDE_PATHS=(/var/lib/kubelet /var/log/containers /var/log/pods /usr/libexec/kubernetes
  /run/containerd /var/lib/cni /run/netns /etc/cni /opt/cni /var/lib/containerd /opt/containerd
  /run/flannel /etc/kubernetes)

# sysctls that change on their own (counters, random, load): never compared or restored.
SYSCTL_VOLATILE='^(fs\.(dentry-state|file-nr|inode-nr|inode-state|quota\.)|kernel\.(random\.|ns_last_pid|pty\.nr|tainted|sched_domain)|net\.netfilter\.nf_conntrack_count|net\.ipv[46]\.(route\.gc|conf\.|neigh\.)|vm\.(stat_refresh|drop_caches|compact_memory)|dev\.|user\.)'

set_state_dir() {
  STATE="$1"
  RUN="$STATE/run"
  LOGS="$STATE/logs"
  PKI="$STATE/pki"
  ETC="$STATE/etc"
  BASELINE="$STATE/baseline"
  CTRD="$STATE/containerd"
  CTRD_SOCK="$CTRD/containerd.sock"
  KUBELET_DIR="$STATE/kubelet"
}

PYTHON="$(command -v /usr/bin/python3 || command -v python3 || echo python3)"

log() { printf '[realnode] %s\n' "$*" >&2; }

ctr_() { ctr --address "$CTRD_SOCK" -n k8s.io "$@"; }

pid_of() { # component -> pid (empty when no pid file)
  if [ -f "$RUN/$1.pid" ]; then cat "$RUN/$1.pid"; fi
}

alive() { # pid -> true if that process exists (and is not a zombie)
  [ -n "$1" ] && [ -d "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null
}

# Stops one component by the PID in its pid file: TERM, up to $2 tenths of a second, then KILL.
stop_component() {
  local name=$1 tenths=${2:-50} pid i
  pid="$(pid_of "$name")"
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < tenths; i++)); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
      log "$name (pid $pid) ignored TERM; KILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
    fi
  fi
  rm -f "$RUN/$name.pid"
}

# The stable sysctls, `key = value` per line (what the baseline and check-clean compare).
sysctl_snapshot() {
  { sysctl -a 2>/dev/null || true; } | { grep -Ev "$SYSCTL_VOLATILE" || true; } | LC_ALL=C sort
}

# Per hierarchy, the cgroups the kubelet and containerd make (kubepods, kubepods/burstable, ...,
# k8s.io), two levels deep. (Other cgroups come and go with other software.)
cgroup_snapshot() {
  local h
  for h in /sys/fs/cgroup/ /sys/fs/cgroup/*/; do
    [ -d "$h" ] || continue
    find "$h" -mindepth 1 -maxdepth 2 -type d \( -path '*/kubepods*' -o -path '*/k8s.io*' \) 2>/dev/null || true
  done | LC_ALL=C sort
}

mount_snapshot() { awk '{print $2, $3}' /proc/mounts | LC_ALL=C sort; }

ruleset_snapshot() {
  # Tables and chains, not rules: counters and handles change; names do not.
  { nft list tables 2>/dev/null || true; } | LC_ALL=C sort
  local t
  for t in iptables ip6tables; do
    command -v "$t-save" >/dev/null 2>&1 || continue
    "$t-save" 2>/dev/null | { grep -E '^(\*|:|-A)' || true; } | sed 's/\[[0-9:]*\]//' | sed "s/^/$t /" | LC_ALL=C sort
  done
  return 0
}
