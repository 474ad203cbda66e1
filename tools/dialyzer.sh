#!/usr/bin/env bash
# Dialyzer on the library's beams (the test build, _build/test/lib/flame_k8s_backend/ebin) with
# the distribution's dialyzer (Debian: erlang-dialyzer); no hex, no dialyxir. Exits non-zero on
# any warning, unknown functions and types included.
#
# PLTs are cached under ~/.cache/flame_k8s_backend/dialyzer: OTP's and Elixir's, built once
# per OTP and Elixir version (a few minutes), and FLAME's on top of it, rebuilt (seconds) when
# FLAME's beams change (the stand-in, or the checkout FLAME_PATH points at).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v dialyzer >/dev/null 2>&1 || {
  echo "dialyzer not found: install it (Debian: apt-get install erlang-dialyzer)" >&2
  exit 1
}

export MIX_ENV=test
mix compile >&2

# Where mix put the beams (FLAME_PATH builds elsewhere; see mix.exs).
build=$(mix run --no-compile --no-start --no-deps-check -e 'IO.puts(Mix.Project.build_path())')
ebin="$build/lib/flame_k8s_backend/ebin"
flame_ebin="$build/lib/flame/ebin"

elixir_lib=$(elixir -e 'IO.puts(Path.expand(:code.lib_dir(:elixir)))')
versions=$(elixir -e 'IO.write("otp#{:erlang.system_info(:otp_release)}-erts#{:erlang.system_info(:version)}-elixir#{System.version()}")')
cache="${XDG_CACHE_HOME:-$HOME/.cache}/flame_k8s_backend/dialyzer"
mkdir -p "$cache"

# Elixir's beams keep their debug info in Elixir's own format: dialyzer reads it through the
# elixir application, which must be on its code path.
export ERL_LIBS
ERL_LIBS=$(dirname "$elixir_lib")

base_plt="$cache/base-$versions.plt"
if [ ! -f "$base_plt" ]; then
  echo "dialyzer: building the PLT of OTP and Elixir (once per version; a few minutes)" >&2
  dialyzer --build_plt --output_plt "$base_plt.tmp" \
    --apps erts kernel stdlib crypto compiler "$elixir_lib/ebin" "$(dirname "$elixir_lib")/logger/ebin" \
    >&2 || [ $? -eq 2 ] # 2: warnings about OTP's or Elixir's own code, not ours
  mv "$base_plt.tmp" "$base_plt"
fi

flame_hash=$(cat "$flame_ebin"/*.beam | sha256sum | cut -c1-16)
flame_plt="$cache/flame-$versions-$flame_hash.plt"
if [ ! -f "$flame_plt" ]; then
  echo "dialyzer: adding FLAME ($flame_ebin) to a copy of the PLT" >&2
  cp "$base_plt" "$flame_plt.tmp"
  dialyzer --add_to_plt --plt "$flame_plt.tmp" "$flame_ebin" >&2 || [ $? -eq 2 ]
  mv "$flame_plt.tmp" "$flame_plt"
  # Only the newest FLAME PLT of these versions is worth keeping.
  find "$cache" -name "flame-$versions-*.plt" ! -name "$(basename "$flame_plt")" -delete
fi

# In the test build, test/support is compiled into the same ebin; it is not the library.
mapfile -t beams < <(find "$ebin" -name '*.beam' ! -name 'Elixir.FLAMEK8sBackend.Test.*' | sort)

echo "dialyzer: ${#beams[@]} modules of $ebin" >&2
exec dialyzer --no_check_plt --plt "$flame_plt" \
  -Wunmatched_returns -Werror_handling -Wextra_return -Wmissing_return -Wunknown \
  "${beams[@]}"
