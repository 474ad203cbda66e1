defmodule FLAME.Terminator do
  @moduledoc """
  Runner side: connects to the parent node, announces itself with `{ref, {:remote_up, pid}}`,
  and calls the backend's `system_shutdown/0` when idle (no call running and no placed child
  alive), after its first call on a single-use runner, when the parent goes away, or when no
  parent connection is made within the failsafe timeout. Paths given to `watch_path/2` (code
  sync's extraction) are removed when it terminates.
  """
  use GenServer

  require Logger

  @failsafe_timeout 20_000
  @connect_retry 100

  def start_link(opts) do
    GenServer.start_link(__MODULE__, opts, Keyword.take(opts, [:name]))
  end

  @doc "Registers the calling process as a running call; the runner is not idle until it ends."
  def deadline_me(terminator, timeout),
    do: GenServer.call(terminator, {:deadline, self(), timeout})

  def schedule_idle_shutdown(terminator, idle_after, idle_check, single_use) do
    GenServer.call(terminator, {:schedule_idle_shutdown, idle_after, idle_check, single_use})
  end

  @doc "Removes `path` when the terminator terminates (the runner stops)."
  def watch_path(terminator, path), do: GenServer.call(terminator, {:watch_path, path})

  @doc """
  Starts `child_spec` under the runner's child placement supervisor and keeps the runner busy
  while the child lives; with `link?`, the child is stopped when `caller` goes down.
  """
  def place_child(terminator, caller, link?, child_spec) do
    with {:ok, pid} <- DynamicSupervisor.start_child(FLAME.ChildPlacementSup, child_spec) do
      :ok = GenServer.call(terminator, {:placed_child, caller, pid, link?})
      {:ok, pid}
    end
  end

  @impl true
  def init(opts) do
    case Keyword.get(opts, :parent) || FLAME.Parent.get() do
      nil ->
        :ignore

      parent ->
        # terminate/2 removes the watched paths when the VM stops.
        Process.flag(:trap_exit, true)
        :ok = :net_kernel.monitor_nodes(true)

        failsafe =
          Process.send_after(
            self(),
            :failsafe,
            Keyword.get(opts, :failsafe_timeout, @failsafe_timeout)
          )

        {:ok,
         %{
           parent: parent,
           failsafe: failsafe,
           calls: %{},
           placed: %{},
           paths: [],
           single_use: false,
           idle_after: :infinity,
           idle_timer: nil,
           stopping: false
         }, {:continue, :connect}}
    end
  end

  @impl true
  def handle_continue(:connect, state), do: {:noreply, connect(state)}

  @impl true
  def handle_info(:connect, state), do: {:noreply, connect(state)}

  def handle_info(:failsafe, state), do: {:noreply, stop_system(state, "no parent connection")}

  def handle_info({:nodedown, node}, %{parent: parent} = state) do
    if node == node(parent.pid),
      do: {:noreply, stop_system(state, "parent node down")},
      else: {:noreply, state}
  end

  def handle_info({:nodeup, _node}, state), do: {:noreply, state}

  def handle_info({:DOWN, _ref, :process, pid, _reason}, %{parent: %{pid: pid}} = state) do
    {:noreply, stop_system(state, "parent process down")}
  end

  # A placed child's caller went down: the child goes with it.
  def handle_info({:DOWN, ref, :process, _pid, _reason}, %{placed: placed} = state)
      when is_map_key(placed, ref) do
    {child, placed} = Map.pop(placed, ref)
    _ = DynamicSupervisor.terminate_child(FLAME.ChildPlacementSup, child)
    {:noreply, %{state | placed: placed}}
  end

  def handle_info({:DOWN, ref, :process, _pid, _reason}, state) do
    state = %{state | calls: Map.delete(state.calls, ref)}

    if state.single_use,
      do: {:noreply, stop_system(state, "single use completed")},
      else: {:noreply, maybe_schedule_idle(state)}
  end

  def handle_info({:idle, timer}, %{idle_timer: timer, calls: calls, parent: parent} = state)
      when map_size(calls) == 0 do
    send(parent.pid, {parent.ref, {:remote_shutdown, :idle}})
    {:noreply, stop_system(state, "idle")}
  end

  def handle_info({:idle, _stale}, state), do: {:noreply, state}

  def handle_info({:EXIT, _pid, _reason}, state), do: {:noreply, state}

  @impl true
  def handle_call({:deadline, pid, _timeout}, _from, state) do
    ref = Process.monitor(pid)
    {:reply, :ok, %{state | calls: Map.put(state.calls, ref, pid), idle_timer: nil}}
  end

  # The child counts as a running call for as long as it lives.
  def handle_call({:placed_child, caller, child, link?}, _from, state) do
    state = %{state | calls: Map.put(state.calls, Process.monitor(child), child), idle_timer: nil}

    state =
      if link?,
        do: %{state | placed: Map.put(state.placed, Process.monitor(caller), child)},
        else: state

    {:reply, :ok, state}
  end

  def handle_call({:schedule_idle_shutdown, idle_after, _check, single_use}, _from, state) do
    state = %{state | idle_after: idle_after, single_use: single_use}
    {:reply, :ok, maybe_schedule_idle(state)}
  end

  def handle_call({:watch_path, path}, _from, state) do
    {:reply, :ok, %{state | paths: [path | state.paths]}}
  end

  @impl true
  def terminate(_reason, state) do
    Enum.each(state.paths, &File.rm_rf/1)
  end

  defp connect(%{parent: parent} = state) do
    if Node.connect(node(parent.pid)) do
      if state.failsafe, do: Process.cancel_timer(state.failsafe)
      Process.monitor(parent.pid)
      send(parent.pid, {parent.ref, {:remote_up, self()}})
      %{state | failsafe: nil}
    else
      Process.send_after(self(), :connect, @connect_retry)
      state
    end
  end

  defp maybe_schedule_idle(%{calls: calls, idle_after: after_ms} = state)
       when map_size(calls) == 0 and is_integer(after_ms) do
    timer = make_ref()
    Process.send_after(self(), {:idle, timer}, after_ms)
    %{state | idle_timer: timer}
  end

  defp maybe_schedule_idle(state), do: state

  defp stop_system(%{stopping: true} = state, _why), do: state

  defp stop_system(%{parent: parent} = state, why) do
    Logger.info("FLAME.Terminator: system shutdown (#{why})")
    parent.backend.system_shutdown()
    %{state | stopping: true}
  end
end
