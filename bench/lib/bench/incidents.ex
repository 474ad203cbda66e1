defmodule Bench.Incidents do
  @moduledoc """
  Incidents worth reading next to the numbers: warnings logged during the run (e.g. a reaper
  that could not delete a pod) and the bench's own observations (a pod not gone in time).
  """

  alias Bench.LogMessage

  @doc "Starts the list and the `:logger` handler that adds every warning to it."
  def start do
    {:ok, _} = Agent.start(fn -> %{incidents: [], left_over: []} end, name: __MODULE__)
    :ok = :logger.add_handler(:bench_incidents, __MODULE__, %{level: :warning})
  end

  def record(text) do
    at = DateTime.utc_now() |> DateTime.truncate(:millisecond) |> DateTime.to_iso8601()
    Agent.update(__MODULE__, &%{&1 | incidents: [at <> " " <> text | &1.incidents]})
  end

  @doc "A runner pod (`\"namespace/name\"`) not gone after its teardown: its kubelet log goes in the report."
  def pod_left_over(key, text) do
    record(text)
    Agent.update(__MODULE__, &%{&1 | left_over: [key | &1.left_over]})
  end

  def all, do: __MODULE__ |> Agent.get(& &1.incidents) |> Enum.reverse()
  def left_over_pods, do: __MODULE__ |> Agent.get(& &1.left_over) |> Enum.reverse() |> Enum.uniq()

  @doc false
  # :logger handler callback.
  def log(event, _config) do
    text = with "" <- LogMessage.text(event), do: inspect(event.msg)
    record("logged: " <> String.slice(text, 0, 500))
  end
end
