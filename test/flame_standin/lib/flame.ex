defmodule FLAME do
  @moduledoc """
  Stand-in for FLAME's public API, for tests where hex.pm is unreachable.

  `call/3` runs a function on a runner of a `FLAME.Pool`, booting one through the pool's
  backend when none has capacity.
  """

  @doc "Runs `func` on a runner of `pool` and returns its result."
  def call(pool, func, opts \\ []) when is_function(func, 0) do
    timeout = Keyword.get(opts, :timeout, 30_000)

    case FLAME.Pool.checkout(pool) do
      {:ok, runner} ->
        try do
          FLAME.Runner.call(runner, func, timeout)
        after
          FLAME.Pool.checkin(pool, runner)
        end

      {:error, reason} ->
        exit({reason, {__MODULE__, :call, [pool, func, opts]}})
    end
  end
end
