defmodule FLAMEK8sBackend.Test.CleanupEvents do
  @moduledoc """
  Captures `[:flame_k8s_backend, :cleanup, :delete]` events for a test: `forward!/1` sends the
  calling test process `{:cleanup, measurements, metadata}` for each event whose metadata
  `wanted?` accepts (other tests' events are left out), until the test exits.
  """

  import ExUnit.Callbacks, only: [on_exit: 1]

  @event [:flame_k8s_backend, :cleanup, :delete]

  @doc "Forwards the matching cleanup events to the caller; returns `:ok`."
  def forward!(wanted?) when is_function(wanted?, 1) do
    test = self()
    id = {__MODULE__, make_ref()}

    :ok =
      :telemetry.attach(
        id,
        @event,
        fn _event, measurements, meta, _config ->
          if wanted?.(meta), do: send(test, {:cleanup, measurements, meta})
          :ok
        end,
        nil
      )

    on_exit(fn -> :telemetry.detach(id) end)
  end
end
