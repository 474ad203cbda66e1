defmodule FlameDemo.TelemetryForward do
  @moduledoc """
  Forwards telemetry events of this VM to a process, here or on a connected node: how the
  real-node tests see what the backend in the parent pod reports.

      FlameDemo.TelemetryForward.attach([[:flame_k8s_backend, :runner, :down]], self())
      # receive {:telemetry, event, measurements, metadata}
  """

  @doc "Attaches a handler for `events` that sends each to `pid`; returns the handler id."
  def attach(events, pid) do
    id = {__MODULE__, make_ref()}
    :ok = :telemetry.attach_many(id, events, &__MODULE__.handle/4, pid)
    id
  end

  @doc "Detaches a handler `attach/2` returned."
  def detach(id), do: :telemetry.detach(id)

  @doc false
  def handle(event, measurements, metadata, pid),
    do: send(pid, {:telemetry, event, measurements, metadata})
end
