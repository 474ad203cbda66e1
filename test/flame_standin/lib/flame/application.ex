defmodule FLAME.Application do
  @moduledoc false
  use Application

  # As FLAME 0.5.3's: only the terminator (and its child placement supervisor), configured by
  # `config :flame, :terminator` (`:shutdown_timeout`, default 30 s, `:failsafe_timeout`,
  # `:log`). It ignores itself where no FLAME_PARENT is set.
  @impl true
  def start(_type, _args) do
    opts = Application.get_env(:flame, :terminator, [])
    shutdown = Keyword.get(opts, :shutdown_timeout, 30_000)
    terminator = {FLAME.Terminator, Keyword.put(opts, :name, FLAME.Terminator)}

    Supervisor.start_link([Supervisor.child_spec(terminator, shutdown: shutdown)],
      strategy: :one_for_one,
      name: FLAME.Supervisor
    )
  end
end
