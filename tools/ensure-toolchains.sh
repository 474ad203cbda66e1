# Sourced by bin/test, bin/demo and .ci/run: puts the toolchains on PATH (Elixir >= 1.15, from
# Debian trixie when the host has none: tools/modern-elixir.sh), installs the few host tools the
# tests use from apt, and keeps build caches outside the clone.
# shellcheck shell=bash

# shellcheck source=modern-elixir.sh
. "$(dirname "${BASH_SOURCE[0]}")/modern-elixir.sh"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flame_k8s_backend/target}"
export GOTOOLCHAIN=local
for dir in "$HOME/.cargo/bin" /usr/local/go/bin; do
  if [ -d "$dir" ]; then export PATH="$dir:$PATH"; fi
done

ensure_toolchains() {
  ensure_modern_elixir || return 1
  local missing=()
  # The tests lint the example scripts with it.
  command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "missing: ${missing[*]} (install them: sudo apt-get install ${missing[*]})" >&2
      return 1
    fi
    echo "installing from apt: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  command -v cargo >/dev/null 2>&1 || {
    echo "cargo not found: the NIF needs a Rust toolchain (https://rustup.rs)" >&2
    return 1
  }
  command -v go >/dev/null 2>&1 || {
    echo "go not found: Go >= 1.26 builds the local control plane (kube-apiserver, etcd, localkube)" >&2
    return 1
  }
}
