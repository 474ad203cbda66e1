#!/usr/bin/env bash
# Builds the flame_demo image for the real node, without Docker or a registry: a `mix release`
# (MIX_ENV=prod, ERTS included) of examples/kind/flame_demo with this library and its NIF in the
# release's priv/, on a Debian trixie minbase rootfs (the Debian suite whose Elixir and OTP the
# tools use: tools/modern-elixir.sh), packed as a one-layer OCI archive that
# `ctr -n k8s.io images import` accepts. The same image runs the parent pod and the runner pods.
#
#   tools/realnode/image.sh [--rev REV] [--force] [--no-check]
#
#   --rev REV    build from git revision REV (e.g. HEAD) instead of the working tree, so that
#                uncommitted edits in a shared checkout stay out of the image
#   --force      rebuild even when an image for the current inputs is cached
#   --no-check   skip the smoke test of a new image (the release run from the unpacked layer)
#
# Progress goes to stderr. The LAST line on stdout is `<image ref> <absolute path of the .tar>`,
# e.g. `docker.io/library/flame-demo:0123456789ab /root/.cache/.../flame-demo-0123456789ab.tar`.
# The tag is a hash of every input: lib/, native/ (with native/mix/), mix.exs, Cargo.*, the FLAME used
# (the stand-in in test/flame_standin, or $FLAME_PATH), the demo app's files, the Erlang, Elixir
# and Rust versions, the rootfs recipe and these scripts. Same inputs, same tag: nothing is rebuilt.
#
# The image: /app holds the release (owned by uid 1000, the image's user), Entrypoint
# /app/bin/flame_demo, Cmd start, WorkingDir /app, LANG=C.UTF-8. The release's VM runs as PID 1
# and stops on SIGTERM; its node name and cookie come from RELEASE_NODE / RELEASE_DISTRIBUTION /
# RELEASE_COOKIE or POD_IP (examples/kind/flame_demo/rel/env.sh.eex).
#
# Needs root (debootstrap, chroot, unshare), Elixir + Erlang, cargo, python3, GNU tar and the
# Debian mirror of apt's own sources (or DEBIAN_MIRROR). No hex.pm: the app is built with
# FLAME_DEMO_OFFLINE=1 (see examples/kind/flame_demo/mix.exs).
#
# Builds happen in a copy of the inputs under the cache, in which a file changes (and gets a new
# mtime) only when its content does; Mix's _build and cargo's target dir for that copy are kept
# there too (images/build/), so a change rebuilds only what it touches and mtime-based freshness
# (cargo, the NIF compiler) is always right. The first build seeds that cargo target dir from the
# project's shared one ($CARGO_TARGET_DIR, see tools/ensure-toolchains.sh) when it exists, so the
# NIF's dependencies are not compiled twice.
#
# Env: FLAME_K8S_CACHE (default ~/.cache/flame_k8s_backend; images under images/), DEBIAN_MIRROR,
# FLAME_PATH, IMAGE_KEEP (how many flame-demo archives to keep, default 3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tools/realnode"
CACHE="${FLAME_K8S_CACHE:-$HOME/.cache/flame_k8s_backend}"
IMAGES="$CACHE/images"
BUILD="$IMAGES/build"
NAME=flame-demo
APP=flame_demo
SUITE=trixie
# crypto.so links libcrypto.so.3 (libssl3t64); everything else ERTS and the NIF link (libc, libm,
# libtinfo6, zlib1g, libstdc++6, libgcc-s1, and libsystemd0 for epmd) is in minbase already.
# Checked on every build: each ELF file of the release must resolve all its libraries.
ROOTFS_PACKAGES=libssl3t64
# Bump when the rootfs recipe below changes (the package list is part of the key already).
ROOTFS_RECIPE=1
APP_UID=1000
KEEP="${IMAGE_KEEP:-3}"
FORCE=0
CHECK=1
REV=""

while [ $# -gt 0 ]; do
  case "$1" in
    --force) FORCE=1 ;;
    --no-check) CHECK=0 ;;
    --rev)
      [ $# -ge 2 ] || { echo "image.sh: --rev needs a value" >&2; exit 2; }
      REV="$2"
      shift
      ;;
    -h | --help)
      sed -n '2,42p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "image.sh: unknown argument: $1 (see --help)" >&2
      exit 2
      ;;
  esac
  shift
done

T0=$SECONDS
log() { printf '[image %3ds] %s\n' $((SECONDS - T0)) "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# shellcheck source=tools/ensure-toolchains.sh disable=SC1091
. "$ROOT/tools/ensure-toolchains.sh"

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot and unshare build and test the rootfs)"
for tool in debootstrap tar python3 mix elixir cargo unshare nsenter chroot flock ip; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is not on PATH"
done

mkdir -p "$IMAGES" "$BUILD"
exec 9>"$IMAGES/.lock"
if ! flock -n 9; then
  log "another image.sh is running; waiting for it"
  flock 9
fi

# ---- inputs: a snapshot of exactly the files the build reads, hashed ---------------------------
INCOMING="$BUILD/incoming"
# What `mix release` of the demo reads from this repository (native/ holds the NIF crate and its
# Mix compiler, which mix.exs requires).
CANDIDATES=(mix.exs Cargo.toml Cargo.lock lib native test/flame_standin test/telemetry_standin
  test/flame_checkout/mix.exs examples/kind/flame_demo)
INPUTS=()
rm -rf "$INCOMING"
mkdir -p "$INCOMING"
if [ -n "$REV" ]; then
  git -C "$ROOT" rev-parse --verify --quiet "$REV^{commit}" >/dev/null || die "no such git revision: $REV"
  for path in "${CANDIDATES[@]}"; do
    if git -C "$ROOT" cat-file -e "$REV:$path" 2>/dev/null; then INPUTS+=("$path"); fi
  done
  git -C "$ROOT" archive --format=tar "$REV" -- "${INPUTS[@]}" | tar -xf - --no-same-owner -C "$INCOMING"
else
  for path in "${CANDIDATES[@]}"; do
    if [ -e "$ROOT/$path" ]; then INPUTS+=("$path"); fi
  done
  (
    cd "$ROOT"
    find "${INPUTS[@]}" \( -name _build -o -name deps -o -name target -o -name erl_crash.dump \) -prune \
      -o -type f -print0 | tar --null -T - -cf -
  ) | tar -xf - --no-same-owner -C "$INCOMING"
fi

versions="$(elixir -e 'IO.puts("elixir #{System.version()} otp #{System.otp_release()} erts #{:erlang.system_info(:version)}")')"
ROOTFS_KEY="$(printf '%s\n' "$SUITE minbase include=$ROOTFS_PACKAGES recipe=$ROOTFS_RECIPE uid=$APP_UID" | sha256sum | cut -c1-12)"
HASH="$(
  {
    echo "$versions"
    rustc -V 2>/dev/null || cargo -V
    echo "rootfs $ROOTFS_KEY"
    (cd "$HERE" && sha256sum image.sh oci_image.py sync_tree.py)
    (cd "$INCOMING" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    if [ -n "${FLAME_PATH:-}" ]; then
      echo "FLAME_PATH"
      (cd "$FLAME_PATH" && find mix.exs lib -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    fi
  } | sha256sum | cut -c1-12
)"
REF="docker.io/library/$NAME:$HASH"
OUT="$IMAGES/$NAME-$HASH.tar"

if [ -f "$OUT" ] && [ "$FORCE" = 0 ]; then
  rm -rf "$INCOMING"
  log "cached: $REF ($versions)"
  echo "$REF $OUT"
  exit 0
fi
log "building $REF from ${REV:+git $REV of }$ROOT ($versions)"

# ---- rootfs: debootstrap minbase + libraries, cached per recipe -------------------------------
ROOTFS="$IMAGES/rootfs/$SUITE-minbase-$ROOTFS_KEY"

build_rootfs() {
  local tmp="$ROOTFS.tmp" mirror
  mirror="$(debian_mirror)"
  rm -rf "$tmp"
  mkdir -p "$IMAGES/debootstrap-cache"
  debootstrap --variant=minbase --include="$ROOTFS_PACKAGES" \
    --cache-dir="$IMAGES/debootstrap-cache" "$SUITE" "$tmp" "$mirror"
  # What a container image does not need, and what debootstrap copied from this host.
  rm -rf "$tmp"/usr/share/doc/* "$tmp"/usr/share/man/* "$tmp"/usr/share/info/* \
    "$tmp"/usr/share/locale/* "$tmp"/var/cache/apt/* "$tmp"/var/lib/apt/lists/* \
    "$tmp"/var/cache/debconf/*-old "$tmp"/var/lib/dpkg/*-old
  find "$tmp/var/log" -type f -delete
  : >"$tmp/etc/resolv.conf"
  : >"$tmp/etc/hostname"
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$tmp/etc/hosts"
  # The release's user (the kubelet mounts the service account token world-readable).
  echo "app:x:$APP_UID:$APP_UID:flame_demo:/app:/usr/sbin/nologin" >>"$tmp/etc/passwd"
  echo "app:x:$APP_UID:" >>"$tmp/etc/group"
  echo "app:!:19000:0:99999:7:::" >>"$tmp/etc/shadow"
  mv "$tmp" "$ROOTFS"
}

ROOTFS_PID=""
if [ -d "$ROOTFS" ]; then
  log "rootfs cached: $ROOTFS"
else
  log "debootstrap $SUITE minbase + $ROOTFS_PACKAGES from $(debian_mirror) (in the background; log: $IMAGES/rootfs.log)"
  mkdir -p "$IMAGES/rootfs"
  build_rootfs >"$IMAGES/rootfs.log" 2>&1 &
  ROOTFS_PID=$!
fi

# ---- the release -------------------------------------------------------------------------------
# The NIF is always built from the snapshot (FLAME_K8S_BUILD=1: never a precompiled download),
# with the release profile.
# cargo's target dir for this copy, seeded once from the project's shared one (under cargo's
# lock): the dependencies' artifacts stay valid in a copy; the NIF crate itself is rebuilt here,
# since every file of a new copy is newer than anything built before.
CARGO_TARGET="$BUILD/cargo-target"
SHARED_TARGET="${CARGO_TARGET_DIR:-}"
SRC="$BUILD/src"
if [ ! -d "$CARGO_TARGET/release" ]; then
  # A new target dir goes with a new copy (whose files are all newer than any artifact).
  rm -rf "$SRC" "$CARGO_TARGET"
  if [ -n "$SHARED_TARGET" ] && [ -d "$SHARED_TARGET/release/deps" ]; then
    log "seeding $CARGO_TARGET from $SHARED_TARGET/release"
    rm -rf "$CARGO_TARGET.tmp"
    mkdir -p "$CARGO_TARGET.tmp"
    flock "$SHARED_TARGET/release/.cargo-lock" cp -a "$SHARED_TARGET/release" "$CARGO_TARGET.tmp/"
    mv "$CARGO_TARGET.tmp" "$CARGO_TARGET"
  fi
fi

# The snapshot goes into a fixed copy, file by file (tools/realnode/sync_tree.py): an unchanged
# file keeps its old mtime, a changed or new one gets the current time, a removed one goes (build
# outputs such as priv/native stay). Mix and cargo then rebuild exactly what changed.
python3 "$HERE/sync_tree.py" "$INCOMING" "$SRC" priv _build deps >&2
rm -rf "$INCOMING"

REL="$BUILD/rel"
# Assembled anew each time: `mix release --overwrite` keeps ERTS files of an earlier assembly.
rm -rf "$REL"
log "mix release (MIX_ENV=prod, FLAME_DEMO_OFFLINE=1${FLAME_PATH:+, FLAME_PATH=$FLAME_PATH}; log: $BUILD/mix.log)"
if ! (
  cd "$SRC/examples/kind/$APP"
  export MIX_ENV=prod FLAME_DEMO_OFFLINE=1 MIX_BUILD_ROOT="$BUILD/_build" HEX_OFFLINE=1 \
    CARGO_TARGET_DIR="$CARGO_TARGET" FLAME_K8S_NIF_PROFILE=release FLAME_K8S_BUILD=1
  mix compile
  mix release "$APP" --overwrite --path "$REL"
) >"$BUILD/mix.log" 2>&1; then
  tail -n 40 "$BUILD/mix.log" >&2
  die "mix release failed (full log: $BUILD/mix.log)"
fi
grep -E '^(Compiling|Generated|\* assembling|\s+Finished)' "$BUILD/mix.log" | sed 's/^/    /' >&2 || true
nif="$(find "$REL/lib" -path '*/flame_k8s_backend-*/priv/native/libflame_k8s_native.so' | head -1)"
[ -n "$nif" ] || die "the release has no priv/native/libflame_k8s_native.so"
[ -d "$REL/erts-$(elixir -e 'IO.write(:erlang.system_info(:version))')" ] || die "the release has no ERTS"

if [ -n "$ROOTFS_PID" ]; then
  log "waiting for debootstrap"
  if ! wait "$ROOTFS_PID"; then
    tail -n 20 "$IMAGES/rootfs.log" >&2
    die "debootstrap failed (log: $IMAGES/rootfs.log)"
  fi
  log "rootfs ready: $ROOTFS ($(du -sm "$ROOTFS" | cut -f1) MiB)"
fi

# ---- rootfs + release, checked for missing libraries --------------------------------------------
TREE="$BUILD/rootfs"
rm -rf "$TREE"
cp -a "$ROOTFS" "$TREE"
mkdir "$TREE/app"
cp -a "$REL/." "$TREE/app/"
# With Debian's Elixir from tools/modern-elixir.sh, the release's ERTS and OTP libraries are the
# host copies, patched to load through $ELIXIR_HOME/root's glibc: each file that names that place
# becomes the root's own, unpatched file, which loads through the image's (the same suite's) glibc.
if [ -n "${ELIXIR_HOME:-}" ]; then
  (
    cd "$TREE/app"
    grep -rlF "$ELIXIR_HOME" erts-* lib | while read -r file; do
      pristine="$ELIXIR_HOME/root/usr/lib/erlang/$file"
      if [ -f "$pristine" ]; then cp "$pristine" "$file"; fi
    done
  )
  leftover="$(grep -rlF "$ELIXIR_HOME" "$TREE/app" || true)"
  [ -z "$leftover" ] || die "the release still refers to the host's Elixir in $ELIXIR_HOME: $leftover"
fi
chown -R "$APP_UID:$APP_UID" "$TREE/app"

loader=""
for candidate in lib64/ld-linux-x86-64.so.2 lib/ld-linux-aarch64.so.1; do
  if [ -e "$TREE/$candidate" ]; then loader="$candidate"; fi
done
[ -n "$loader" ] || die "no dynamic loader in the rootfs"
unresolved="$(
  cd "$TREE/app"
  find . -type f \( -name '*.so' -o -perm -u+x \) -print | while read -r file; do
    if [ "$(head -c 4 "$file" | od -An -c | tr -d ' ')" = '177ELF' ]; then
      chroot "$TREE" "/$loader" --list "/app/${file#./}" 2>&1 | sed -n "s|^\s*\(.*not found\)|${file#./}: \1|p"
    fi
  done
)"
[ -z "$unresolved" ] || die "libraries missing from the rootfs:
$unresolved"
log "all shared libraries of the release resolve in the rootfs"

# ---- the OCI archive ---------------------------------------------------------------------------
log "packing $REF"
python3 "$HERE/oci_image.py" --user "$APP_UID:$APP_UID" --workdir /app \
  --env LANG=C.UTF-8 --env HOME=/app --cmd start \
  --label "org.opencontainers.image.title=$APP" \
  "$TREE" "$REF" "$BUILD/image.tar" "/app/bin/$APP" >/dev/null

# ---- smoke test: the release from the unpacked archive ------------------------------------------
# Proves the archive alone has every file and library: `eval` with the NIF and crypto loaded, then
# `start` as PID 1 of its own PID, network and mount namespaces (distributed, at 127.0.0.1), an
# `rpc` into it, and SIGTERM to it.
smoke_test() {
  local check="$BUILD/check" layer pid1="" status=0 t answer
  rm -rf "$check"
  mkdir -p "$check"
  layer="$(python3 - "$BUILD/image.tar" <<'EOF'
import json, sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    index = json.load(t.extractfile("index.json"))
    digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.load(t.extractfile("blobs/sha256/" + digest))
    print("blobs/sha256/" + manifest["layers"][0]["digest"].split(":")[1])
EOF
  )"
  tar -xOf "$BUILD/image.tar" "$layer" | tar -x --numeric-owner -C "$check"
  local env=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    HOME=/app LANG=C.UTF-8 RELEASE_COOKIE=smoke-test POD_IP=127.0.0.1 POD_NAME=smoke)
  local in_image=(chroot --userspec="$APP_UID:$APP_UID" "$check" "${env[@]}")

  answer="$("${in_image[@]}" /app/bin/$APP eval '
    {:ok, _} = Application.ensure_all_started(:crypto)
    16 = byte_size(:crypto.strong_rand_bytes(16))
    nil = FLAMEK8sBackend.Native.load_error()
    {:error, {:config, _}} = FLAMEK8sBackend.Kube.connect(mode: :in_cluster)
    IO.puts("SMOKE eval ok")' 2>&1)" || true
  case "$answer" in
    *"SMOKE eval ok"*) log "smoke: eval ok (crypto, the NIF, in-cluster connect says there is no token)" ;;
    *) printf '%s\n' "$answer" >&2; return 1 ;;
  esac

  # The VM as PID 1 (unshare forks; sh execs chroot, which execs the release, which execs erlexec
  # and beam.smp), with the loopback its only network.
  unshare --pid --net --mount --fork --mount-proc="$check/proc" \
    sh -c 'ip link set lo up && exec "$@"' sh "${in_image[@]}" RELEASE_DISTRIBUTION=name \
    /app/bin/$APP start >"$BUILD/smoke.log" 2>&1 &
  local unshare_pid=$!
  for _ in $(seq 1 100); do
    pid1="$(ps -o pid= --ppid "$unshare_pid" 2>/dev/null | tr -d ' ' | head -1)"
    [ -n "$pid1" ] && break
    sleep 0.1
  done
  [ -n "$pid1" ] || { cat "$BUILD/smoke.log" >&2; return 1; }
  answer=""
  for _ in $(seq 1 60); do
    answer="$(nsenter --target "$pid1" --net --pid --mount "${in_image[@]}" /app/bin/$APP rpc \
      'pool = Enum.find_value(1..100, fn _ -> Process.whereis(FlameDemo.Runner) || Process.sleep(100) && nil end)
       IO.puts("SMOKE #{node()} os_pid=#{System.pid()} #{inspect(is_pid(pool))}")' 2>&1)" || true
    case "$answer" in *SMOKE*) break ;; esac
    sleep 0.5
  done
  case "$answer" in
    *"SMOKE flame_demo@127.0.0.1 os_pid=1 true"*)
      log "smoke: started as PID 1, node flame_demo@127.0.0.1 (name from POD_IP), FLAME pool up, rpc ok" ;;
    *)
      printf 'rpc answered: %s\nrelease log:\n' "$answer" >&2
      cat "$BUILD/smoke.log" >&2
      kill -KILL "$pid1" 2>/dev/null || true
      wait "$unshare_pid" || true
      return 1
      ;;
  esac
  t=$SECONDS
  kill -TERM "$pid1"
  wait "$unshare_pid" || status=$?
  if [ "$status" != 0 ]; then
    cat "$BUILD/smoke.log" >&2
    log "smoke: after SIGTERM the release exited with status $status"
    return 1
  fi
  log "smoke: SIGTERM stopped it cleanly (exit 0, $((SECONDS - t)) s)"
}

if [ "$CHECK" = 1 ]; then
  smoke_test || die "smoke test failed (release log: $BUILD/smoke.log)"
fi

mv "$BUILD/image.tar" "$OUT"
rm -rf "$BUILD/check" "$TREE"
# Keep the newest $KEEP archives.
find "$IMAGES" -maxdepth 1 -name "$NAME-*.tar" -printf '%T@ %p\n' | sort -rn | tail -n +"$((KEEP + 1))" |
  cut -d' ' -f2- | xargs -r rm -f
log "done: $OUT ($(du -m "$OUT" | cut -f1) MiB; import: ctr -n k8s.io images import $OUT)"
echo "$REF $OUT"
