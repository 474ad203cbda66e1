defmodule FlameDemo.BootFailures do
  @moduledoc """
  The last failed runner boot of each pool, as reported to FLAME's `on_grow_end`. By pool: a
  pool may go on booting (and failing) after the call that started it gave up, and its failure
  must not be taken for another pool's.
  """
  use Agent

  def start_link(_opts), do: Agent.start_link(fn -> %{} end, name: __MODULE__)

  @doc "FLAME.Pool `:on_grow_end` hook."
  def on_grow_end({:exit, reason}, %{name: pool}),
    do: Agent.update(__MODULE__, &Map.put(&1, pool, reason))

  def on_grow_end(_result, _meta), do: :ok

  def last(pool), do: Agent.get(__MODULE__, &Map.get(&1, pool))
  def clear(pool), do: Agent.update(__MODULE__, &Map.delete(&1, pool))
end
