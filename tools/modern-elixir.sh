# Sourced by tools/ensure-toolchains.sh: Elixir 1.18 on Erlang/OTP 27 for a Debian bookworm host,
# from Debian trixie's own packages, without upgrading the host.
# shellcheck shell=bash
#
# FLAME needs Elixir >= 1.15 (its code sync calls Code.prepend_paths/2), and bookworm ships 1.14.
# Installing trixie's packages on bookworm drags in a partial upgrade (libc, dpkg, base-files), so
# they go into a debootstrapped trixie root under the cache instead:
#
#   $ELIXIR_HOME/root   trixie minbase + elixir, erlang-dev, erlang-dialyzer, erlang-proper,
#                       untouched; its ERTS is what the real node's release image ships
#   $ELIXIR_HOME/host   a copy of root's /usr/lib/erlang and /usr/lib/elixir whose executables
#                       and libraries load through root's own glibc (patchelf: interpreter and
#                       rpath), so they run on this host beside its own programs
#
# A host that already has Elixir >= 1.15 on PATH keeps its own (FLAME_K8S_ELIXIR=trixie forces
# this one). Needs root (debootstrap, chroot) and patchelf for the first install; later calls only
# put it on PATH. Env: FLAME_K8S_CACHE, DEBIAN_MIRROR.

MODERN_ELIXIR_SUITE=trixie
MODERN_ELIXIR_PACKAGES="elixir erlang-dev erlang-dialyzer erlang-proper"
# Bump when the recipe below changes (the suite and packages are part of the key already).
MODERN_ELIXIR_RECIPE=1

modern_elixir_home() {
  local key
  key="$(printf '%s\n' "$MODERN_ELIXIR_SUITE $MODERN_ELIXIR_PACKAGES recipe=$MODERN_ELIXIR_RECIPE" |
    sha256sum | cut -c1-12)"
  echo "${FLAME_K8S_CACHE:-$HOME/.cache/flame_k8s_backend}/elixir/$MODERN_ELIXIR_SUITE-$key"
}

# True when `elixir` on PATH is >= 1.15 (without starting a VM: `elixir --version` does).
host_elixir_is_modern() {
  command -v elixir >/dev/null 2>&1 || return 1
  local version
  version="$(elixir --version 2>/dev/null | sed -n 's/^Elixir \([0-9][0-9.]*\).*/\1/p' | head -1)"
  [ -n "$version" ] || return 1
  printf '%s\n%s\n' 1.15.0 "$version" | sort -V -C
}

ensure_modern_elixir() {
  if [ "${FLAME_K8S_ELIXIR:-}" != trixie ] && host_elixir_is_modern; then return 0; fi
  ELIXIR_HOME="$(modern_elixir_home)"
  export ELIXIR_HOME
  if [ ! -f "$ELIXIR_HOME/host/READY" ]; then
    mkdir -p "$(dirname "$ELIXIR_HOME")"
    (
      exec 8>"$ELIXIR_HOME.lock"
      flock 8
      [ -f "$ELIXIR_HOME/host/READY" ] || install_modern_elixir
    ) || return 1
  fi
  export PATH="$ELIXIR_HOME/host/erlang/bin:$ELIXIR_HOME/host/elixir/bin:$PATH"
}

# The Debian mirror of apt's own sources (any suite: they all live there), or DEBIAN_MIRROR.
debian_mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local mirror
  mirror="$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null |
    grep -v security | head -1)"
  echo "${mirror:-http://deb.debian.org/debian}"
}

install_modern_elixir() {
  local started=$SECONDS root="$ELIXIR_HOME/root" host="$ELIXIR_HOME/host"
  if [ "$(id -u)" != 0 ]; then
    echo "Elixir >= 1.15 is needed (FLAME requires it): install it (e.g. with asdf or mise), or run as root once to install Debian $MODERN_ELIXIR_SUITE's Elixir into $ELIXIR_HOME" >&2
    return 1
  fi
  local tool
  for tool in debootstrap patchelf; do
    command -v "$tool" >/dev/null 2>&1 && continue
    echo "installing from apt: $tool" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null
  done
  echo "installing Elixir and Erlang/OTP from Debian $MODERN_ELIXIR_SUITE into $ELIXIR_HOME (about a minute; log: $ELIXIR_HOME.log)" >&2
  if ! (
    set -e
    rm -rf "$root" "$host"
    mkdir -p "$ELIXIR_HOME/debs"
    debootstrap --variant=minbase --cache-dir="$ELIXIR_HOME/debs" "$MODERN_ELIXIR_SUITE" "$root" \
      "$(debian_mirror)"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    # shellcheck disable=SC2086
    chroot "$root" sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends $MODERN_ELIXIR_PACKAGES && apt-get clean"
    : >"$root/etc/resolv.conf"
    mkdir -p "$host"
    cp -a "$root/usr/lib/erlang" "$host/erlang"
    cp -a "$root/usr/lib/elixir" "$host/elixir"
    patch_for_host "$root" "$host/erlang"
    "$host/erlang/bin/erl" -noshell -eval 'erlang:halt(0).'
    PATH="$host/erlang/bin:$host/elixir/bin:$PATH" "$host/elixir/bin/elixir" \
      -e ':crypto.strong_rand_bytes(1); :ok = :application.ensure_started(:crypto)'
  ) >"$ELIXIR_HOME.log" 2>&1; then
    tail -n 30 "$ELIXIR_HOME.log" >&2
    echo "installing Elixir from Debian $MODERN_ELIXIR_SUITE failed (log: $ELIXIR_HOME.log)" >&2
    return 1
  fi
  : >"$host/READY"
  echo "Elixir from Debian $MODERN_ELIXIR_SUITE installed in $((SECONDS - started)) s" >&2
}

# Every ELF file under $2 loads its libraries from root $1 (DT_RPATH, which also applies to what
# the VM loads later, such as crypto.so's libcrypto and this project's NIF's libgcc_s);
# executables also use root's dynamic loader. The scripts that hard-code Debian's ERTS location
# point at $2 instead.
patch_for_host() {
  local root="$1" dir="$2" libs loader file
  libs="$root/usr/lib/x86_64-linux-gnu"
  loader="$libs/ld-linux-x86-64.so.2"
  [ -e "$loader" ] || { echo "no dynamic loader at $loader" >&2; return 1; }
  while IFS= read -r -d '' file; do
    head -c 4 "$file" | grep -q 'ELF' || continue
    if patchelf --print-interpreter "$file" >/dev/null 2>&1; then
      patchelf --set-interpreter "$loader" --force-rpath --set-rpath "$libs" "$file"
    else
      patchelf --force-rpath --set-rpath "$libs" "$file"
    fi
  done < <(find "$dir" -type f \( -perm -u+x -o -name '*.so' \) -print0)
  grep -rlI --null /usr/lib/erlang "$dir/bin" "$dir"/erts-*/bin |
    xargs -0 -r sed -i "s|/usr/lib/erlang|$dir|g"
}
