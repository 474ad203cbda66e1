defmodule FLAME.Application do
  @moduledoc false
  use Application

  # On a runner (FLAME_PARENT set) the terminator connects back to the parent at boot.
  def start(_type, _args) do
    children = [{FLAME.Terminator, name: FLAME.Terminator}]
    Supervisor.start_link(children, strategy: :one_for_one, name: FLAME.Supervisor)
  end
end
