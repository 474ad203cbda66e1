defmodule FLAMEK8sBackend.Application do
  @moduledoc false
  use Application

  @impl true
  def start(_type, _args) do
    children = [
      # The names each reaper tracks, which the sweep leaves alone.
      {Registry, keys: :duplicate, name: FLAMEK8sBackend.ReaperRegistry},
      {Registry, keys: :unique, name: FLAMEK8sBackend.SingleFlightRegistry},
      {DynamicSupervisor, name: FLAMEK8sBackend.ReaperSupervisor, strategy: :one_for_one},
      # The last permanent failure of each pool's options, so that boots back off.
      FLAMEK8sBackend.BootBackoff
    ]

    Supervisor.start_link(children, strategy: :one_for_one, name: FLAMEK8sBackend.Supervisor)
  end
end
