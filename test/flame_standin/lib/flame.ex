defmodule FLAME do
  @moduledoc """
  A stand-in for FLAME, for the tests of this repository, where hex.pm is unreachable.

  It mirrors **FLAME 0.5.3** wherever a backend can tell the difference: the pool, runner,
  terminator, code sync and parent modules behave as FLAME 0.5.3's do for the options and
  messages this repository uses, including FLAME's own failure modes (the terminator's crash
  on an unexpected message, a failed boot that reaches callers only as a timeout, the pool's
  `:log` over the backend's, the code_sync setups the pool rejects). Its code is this
  repository's own, written from reading FLAME 0.5.3's sources side by side with it; the
  suite was then run against the real FLAME 0.5.3 (`FLAME_PATH`, see the README's Tests) on
  the local control plane, and each difference found there is held by a test of its own
  (`test/unit/flame_standin_test.exs`). Not mirrored: `:track_resources` (accepted; nothing
  is tracked) and FLAME's own backends other than `FLAME.LocalBackend`.

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
