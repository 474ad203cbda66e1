defmodule FLAME.Terminator do
  @moduledoc """
  Runner side: connects to the parent node, announces itself with `{ref, {:remote_up, pid}}`,
  and calls the backend's `system_shutdown/0` when idle, when the parent goes away, or when no
  parent connection is made within the failsafe timeout.
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

  @impl true
  def init(opts) do
    case Keyword.get(opts, :parent) || FLAME.Parent.get() do
      nil ->
        :ignore

      parent ->
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

  def handle_info({:DOWN, ref, :process, _pid, _reason}, state) do
    state = %{state | calls: Map.delete(state.calls, ref)}
    {:noreply, maybe_schedule_idle(state)}
  end

  def handle_info({:idle, timer}, %{idle_timer: timer, calls: calls, parent: parent} = state)
      when map_size(calls) == 0 do
    send(parent.pid, {parent.ref, {:remote_shutdown, :idle}})
    {:noreply, stop_system(state, "idle")}
  end

  def handle_info({:idle, _stale}, state), do: {:noreply, state}

  @impl true
  def handle_call({:deadline, pid, _timeout}, _from, state) do
    ref = Process.monitor(pid)
    {:reply, :ok, %{state | calls: Map.put(state.calls, ref, pid), idle_timer: nil}}
  end

  def handle_call({:schedule_idle_shutdown, idle_after, _check, _single_use}, _from, state) do
    {:reply, :ok, maybe_schedule_idle(%{state | idle_after: idle_after})}
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
