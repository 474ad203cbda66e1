defmodule FLAME.Application do
  @moduledoc false
  use Application

  # On a runner (FLAME_PARENT set) the terminator connects back to the parent at boot; children
  # placed with FLAME.place_child/3 run under FLAME.ChildPlacementSup.
  def start(_type, _args) do
    children = [
      {DynamicSupervisor, name: FLAME.ChildPlacementSup, strategy: :one_for_one},
      {FLAME.Terminator, name: FLAME.Terminator}
    ]

    Supervisor.start_link(children, strategy: :one_for_one, name: FLAME.Supervisor)
  end
end
