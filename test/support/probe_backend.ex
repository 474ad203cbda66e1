defmodule FLAMEK8sBackend.Test.ProbeBackend do
  @moduledoc false
  # FLAME.LocalBackend (runners in this VM), telling the test process registered as
  # :flame_probe what FLAME does with a backend: the options init/1 gets, and each
  # system_shutdown/0 with the process it runs in. `fail_boot: reason` makes remote_boot/1
  # return {:error, reason}; on_shutdown/1 names a function system_shutdown/0 runs first (a
  # setting of the VM: for tests that are not async).
  @behaviour FLAME.Backend

  @impl true
  def init(opts) do
    report({:init, opts})
    FLAME.LocalBackend.init(opts)
  end

  @impl true
  def remote_boot(state) do
    report({:remote_boot, self()})

    case state do
      %{fail_boot: reason} -> {:error, reason}
      _ -> FLAME.LocalBackend.remote_boot(state)
    end
  end

  @impl true
  def remote_spawn_monitor(state, fun), do: FLAME.LocalBackend.remote_spawn_monitor(state, fun)

  @impl true
  def system_shutdown do
    case :persistent_term.get({__MODULE__, :shutdown}, nil) do
      nil -> :ok
      fun -> fun.()
    end

    report({:system_shutdown, self()})
  end

  def on_shutdown(fun) when is_function(fun, 0) or is_nil(fun),
    do: :persistent_term.put({__MODULE__, :shutdown}, fun)

  defp report(what) do
    if pid = Process.whereis(:flame_probe), do: send(pid, {__MODULE__, what})
    :ok
  end
end
