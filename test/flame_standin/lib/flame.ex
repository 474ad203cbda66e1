defmodule FLAME do
  @moduledoc """
  Stand-in for FLAME's public API, for tests where hex.pm is unreachable.

  `call/3` runs a function on a runner of a `FLAME.Pool`, booting one through the pool's
  backend when none has capacity; `cast/3` does so without waiting; `place_child/3` starts a
  child process on a runner, which keeps the runner (and its slot in the pool) until the child
  exits.

  Options of all three: `:timeout` (default: the pool's `:timeout`) and `:link` (default
  `true`: the caller is linked to the remote process or child, so neither outlives the other).
  """

  @doc "Runs `func` on a runner of `pool` and returns its result."
  @spec call(atom(), (-> any()), keyword()) :: any()
  def call(pool, func, opts \\ [])
      when is_atom(pool) and is_function(func, 0) and is_list(opts) do
    FLAME.Pool.call(pool, func, opts)
  end

  @doc "Runs `func` on a runner of `pool` without waiting for it. Returns `:ok`."
  @spec cast(atom(), (-> any()), keyword()) :: :ok
  def cast(pool, func, opts \\ [])
      when is_atom(pool) and is_function(func, 0) and is_list(opts) do
    FLAME.Pool.cast(pool, func, opts)
  end

  @doc """
  Starts `child_spec` on a runner of `pool`, as a temporary child (never restarted there).
  Returns `{:ok, pid}` or the start's error.

      {:ok, pid} = FLAME.place_child(MyRunner, {MyWorker, []})
  """
  @spec place_child(atom(), Supervisor.child_spec() | {module(), term()} | module(), keyword()) ::
          DynamicSupervisor.on_start_child()
  def place_child(pool, child_spec, opts \\ []) when is_atom(pool) and is_list(opts) do
    FLAME.Pool.place_child(pool, child_spec, opts)
  end
end
