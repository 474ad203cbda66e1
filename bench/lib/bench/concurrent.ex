defmodule Bench.Concurrent do
  @moduledoc "Runs one process per item at once, as a storm of boots or pods starts."

  @doc "`fun` applied to every item in its own task; a task not done by the timeout is killed."
  def map(items, fun, timeout_ms) do
    items
    |> Enum.map(fn item -> Task.async(fn -> fun.(item) end) end)
    |> Task.yield_many(timeout_ms)
    |> Enum.map(fn
      {_task, {:ok, result}} -> result
      {task, _} -> Task.shutdown(task, :brutal_kill) && %{error: :bench_timeout}
    end)
  end
end
