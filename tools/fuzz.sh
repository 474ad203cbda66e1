#!/usr/bin/env bash
# Runs each cargo-fuzz target of the NIF's pure core (native/flame_k8s_native/fuzz) for a fixed
# time: manifest conversion, pod status classification, secret redaction.
#
#   tools/fuzz.sh                 # every target, 30 s each
#   FUZZ_SECONDS=300 tools/fuzz.sh manifest
#
# Needs a nightly Rust toolchain and cargo-fuzz: installs them (rustup, crates.io) when they are
# missing. The corpus grows under $FUZZ_WORK (default ~/.cache/flame_k8s_backend/fuzz), seeded
# from fuzz/seeds; a crash leaves its input in fuzz/artifacts/<target>/ and fails the script
# with libFuzzer's report (reproduce: cargo +nightly fuzz run <target> <that file>).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tools/ensure-toolchains.sh
. tools/ensure-toolchains.sh

seconds="${FUZZ_SECONDS:-30}"
work="${FUZZ_WORK:-$HOME/.cache/flame_k8s_backend/fuzz}"
# Its own target directory: sanitizer-coverage builds with nightly share nothing with the NIF's.
target_dir="${FUZZ_TARGET_DIR:-$HOME/.cache/flame_k8s_backend/fuzz-target}"
fuzz_dir=native/flame_k8s_native/fuzz
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(manifest classify redact)

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "installing the nightly toolchain (rustup, minimal profile)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz (crates.io)"
  cargo install cargo-fuzz --locked
fi

# No sanitizer: the core is safe Rust, and what is looked for is a panic (failed assertion,
# overflow with debug assertions, out-of-bounds slice) or a stack overflow, which libFuzzer
# reports by itself; -s none builds and runs several times faster than ASan.
build=(--sanitizer none --target-dir "$target_dir")

(cd native/flame_k8s_native && cargo +nightly fuzz build "${build[@]}")

status=0
for t in "${targets[@]}"; do
  corpus="$work/corpus/$t"
  mkdir -p "$corpus" "$fuzz_dir/artifacts/$t"
  log="$work/$t.log"
  echo "==== fuzz $t for ${seconds}s (corpus $corpus)"
  if (cd native/flame_k8s_native && cargo +nightly fuzz run "${build[@]}" "$t" \
    "$corpus" "fuzz/seeds/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 >"$log" 2>&1); then
    # libFuzzer's final stats: executions and what it covered.
    execs=$(awk '/stat::number_of_executed_units/ {print $2; exit}' "$log")
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 || true)
    echo "$t: ${execs:-?} executions in ${seconds}s, ${cov:-cov: ?}, corpus $(find "$corpus" -type f | wc -l) inputs, no crash"
  else
    status=1
    echo "$t: FAILED; libFuzzer's report:"
    grep -vE '^#[0-9]+ +(NEW|REDUCE|pulse|INITED|RELOAD)' "$log" | tail -40
  fi
done
exit "$status"
