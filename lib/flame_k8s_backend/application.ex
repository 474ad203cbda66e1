defmodule FLAMEK8sBackend.Application do
  @moduledoc false
  use Application

  @impl true
  def start(_type, _args) do
    children = [
      {DynamicSupervisor, name: FLAMEK8sBackend.ReaperSupervisor, strategy: :one_for_one}
    ]

    Supervisor.start_link(children, strategy: :one_for_one, name: FLAMEK8sBackend.Supervisor)
  end
end
