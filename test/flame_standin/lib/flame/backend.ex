defmodule FLAME.Backend do
  @moduledoc """
  The backend behaviour, as FLAME 0.5.3 defines it. `impl/0` is the configured
  `config :flame, :backend` (default `FLAME.LocalBackend`).
  """

  @callback init(opts :: keyword()) :: {:ok, state :: term()} | {:error, term()}
  @callback remote_spawn_monitor(state :: term(), func :: function() | term()) ::
              {:ok, {pid(), reference()}} | {:error, term()}
  @callback system_shutdown() :: no_return()
  @callback remote_boot(state :: term()) ::
              {:ok, remote_terminator_pid :: pid(), new_state :: term()} | {:error, term()}
  @callback handle_info(msg :: term(), state :: term()) ::
              {:noreply, new_state :: term()} | {:stop, term(), new_state :: term()}
  @optional_callbacks handle_info: 2

  def init(opts), do: impl().init(opts)
  def remote_spawn_monitor(state, func), do: impl().remote_spawn_monitor(state, func)
  def system_shutdown, do: impl().system_shutdown()
  def remote_boot(state), do: impl().remote_boot(state)
  def handle_info(msg, state), do: impl().handle_info(msg, state)

  def impl, do: Application.get_env(:flame, :backend, FLAME.LocalBackend)
end
