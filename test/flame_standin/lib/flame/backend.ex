defmodule FLAME.Backend do
  @moduledoc "The backend behaviour, as FLAME 0.4/0.5 defines it."

  @callback init(opts :: keyword()) :: {:ok, state :: term()} | {:error, term()}
  @callback remote_boot(state :: term()) ::
              {:ok, remote_terminator_pid :: pid(), new_state :: term()} | {:error, term()}
  @callback remote_spawn_monitor(state :: term(), func :: function() | term()) ::
              {:ok, {pid(), reference()}} | {:error, term()}
  @callback system_shutdown() :: no_return()
  @callback handle_info(msg :: term(), state :: term()) :: {:noreply, term()}
  @optional_callbacks handle_info: 2
end
