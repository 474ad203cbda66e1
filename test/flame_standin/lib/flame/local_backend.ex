defmodule FLAME.LocalBackend do
  @moduledoc """
  As FLAME 0.5.3's: "runners" in this VM. Each boot starts a terminator under the pool's
  `:terminator_sup` (required) whose parent is the calling Runner; `system_shutdown/0` does
  nothing.
  """
  @behaviour FLAME.Backend

  @impl true
  def init(opts) do
    _ = Keyword.fetch!(opts, :terminator_sup)
    {:ok, (Application.get_env(:flame, __MODULE__) || []) |> Keyword.merge(opts) |> Map.new()}
  end

  @impl true
  def remote_spawn_monitor(_state, func) when is_function(func, 0),
    do: {:ok, spawn_monitor(func)}

  def remote_spawn_monitor(_state, {mod, fun, args})
      when is_atom(mod) and is_atom(fun) and is_list(args),
      do: {:ok, spawn_monitor(mod, fun, args)}

  def remote_spawn_monitor(_state, other) do
    raise ArgumentError,
          "expected a null arity function or {mod, func, args}. Got: #{inspect(other)}"
  end

  @impl true
  def system_shutdown, do: :noop

  @impl true
  def remote_boot(state) do
    parent = FLAME.Parent.new(make_ref(), self(), __MODULE__, "nonode", nil)
    name = Module.concat(state.terminator_sup, to_string(System.unique_integer([:positive])))
    terminator = {FLAME.Terminator, name: name, parent: parent, log: state.log}
    spec = Supervisor.child_spec(terminator, restart: :temporary)
    {:ok, _sup} = DynamicSupervisor.start_child(state.terminator_sup, spec)
    {:ok, Process.whereis(name), state}
  end
end
