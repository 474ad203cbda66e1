defmodule FLAME do
  @moduledoc """
  A stand-in for FLAME, for the tests of this repository, where hex.pm is unreachable.

  It mirrors **FLAME 0.5.3** wherever a backend can tell the difference: the pool, runner,
  terminator, code sync and parent modules behave as FLAME 0.5.3's do for the options and
  messages this repository uses, FLAME's own failure modes included (the terminator's crash on
  an unexpected message, a failed boot that reaches callers only as a timeout, the pool's
  `:log` over the backend's, the code_sync setups the pool rejects, a single-use runner that
  may be gone when its caller checks it in, the terminator's `watch_path/2` keeping one path).
  Its code is this repository's own, written from reading FLAME 0.5.3's sources side by side
  with it. It was checked by running the suite against the real FLAME 0.5.3 (`FLAME_PATH`, see
  the README's Tests) on the local control plane, first by the lead and again with this
  version; `test/unit/flame_standin_test.exs` and the e2e tests (`flame_features_test.exs`,
  `requests_per_boot_test.exs`) hold each behaviour found, and pass on both. Not mirrored:
  `:track_resources` (accepted; nothing is tracked), FLAME's backends other than
  `FLAME.LocalBackend`, and its verbose logging.

  `call/3` runs a function on a runner of a `FLAME.Pool`, booting one through the pool's
  backend when none has capacity; `cast/3` does so without waiting; `place_child/3` starts a
  child process on a runner, which keeps the runner (and its slot in the pool) until the child
  exits. Options: `:timeout` (for a runner and for the call; default: the pool's
  `:boot_timeout` to get a runner, the pool's `:timeout` for the call) and `:link` (default
  `true`: the caller is linked to the remote process or child).
  """

  @doc "Runs `func` on a runner of `pool` and returns its result."
  def call(pool, func, opts \\ []) when is_atom(pool) and is_function(func, 0) and is_list(opts),
    do: FLAME.Pool.call(pool, func, opts)

  @doc "Runs `func` on a runner of `pool` without waiting for it. Returns `:ok`."
  def cast(pool, func, opts \\ []) when is_atom(pool) and is_function(func, 0) and is_list(opts),
    do: FLAME.Pool.cast(pool, func, opts)

  @doc """
  Starts `child_spec` on a runner of `pool`, as a temporary child (never restarted there).
  Returns `{:ok, pid}`.

      {:ok, pid} = FLAME.place_child(MyRunner, {MyWorker, []})
  """
  def place_child(pool, child_spec, opts \\ []) when is_atom(pool) and is_list(opts),
    do: FLAME.Pool.place_child(pool, child_spec, opts)
end
