defmodule FlameDemo.BootFailures do
  @moduledoc "The last failed runner boot of a pool, as reported to FLAME's `on_grow_end`."
  use Agent

  def start_link(_opts), do: Agent.start_link(fn -> nil end, name: __MODULE__)

  @doc "FLAME.Pool `:on_grow_end` hook."
  def on_grow_end(:ok, _meta), do: :ok
  def on_grow_end({:exit, reason}, _meta), do: Agent.update(__MODULE__, fn _ -> reason end)
  def on_grow_end(_other, _meta), do: :ok

  def last, do: Agent.get(__MODULE__, & &1)
  def clear, do: Agent.update(__MODULE__, fn _ -> nil end)
end
