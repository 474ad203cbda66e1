defmodule FLAME.Terminator.Caller do
  @moduledoc false
  # A process the terminator waits for: a call's remote process, a placed child, or the caller
  # that placed one (the two refer to each other).
  defstruct pid: nil, timer: nil, child_ref: nil, caller_ref: nil, link?: false
end

defmodule FLAME.Terminator do
  @moduledoc """
  Runner side, as FLAME 0.5.3's terminator:

    * It traps exits, and handles only the messages it expects: any other one (an
      `{:EXIT, pid, reason}` of a process linked to it, e.g. a `Task.async/1` run inside one of
      its callbacks) crashes it with a `FunctionClauseError`. Its supervisor allows no restart:
      the crash takes down `FLAME.Terminator.Supervisor`, which the application's supervisor
      then starts again (a new terminator, connecting to the parent anew).
    * It connects to the parent node (retrying every 100 ms), monitors the parent process and
      sends `{ref, {:remote_up, terminator}}`; without a connection within the failsafe timeout
      (default 20 s) it stops the system.
    * It stops the system by calling the backend's `system_shutdown/0` **in its own process**,
      at most once per terminator (it then counts as stopping): when the parent process or
      node goes down, when idle (after telling the parent `{ref, {:remote_shutdown, :idle}}`),
      when a call ends on a single-use runner, on `system_shutdown/1`, and in `terminate/2`
      when it has not stopped the system yet.
    * Calls register with `deadline_me/2`: a call still running at its deadline is killed.
      Placed children count as calls without a deadline, as do the callers that placed them
      (a linked child is stopped when its caller goes down).
    * `watch_path/2` keeps only the last path given, and `terminate/2` removes it and then
      raises (FLAME 0.5.3 stores the path list on top of the watchers map).
  """
  use GenServer

  require Logger

  alias FLAME.Terminator.Caller

  @keys [:name, :parent, :child_placement_sup, :failsafe_timeout, :log]

  def child_spec(opts) do
    %{
      id: {FLAME.Terminator.Supervisor, Keyword.fetch!(opts, :name)},
      start: {FLAME.Terminator.Supervisor, :start_link, [opts]},
      type: :supervisor
    }
  end

  def start_link(opts) do
    Keyword.validate!(opts, @keys)
    GenServer.start_link(__MODULE__, opts, name: opts[:name])
  end

  def watch(terminator, pids), do: GenServer.call(terminator, {:watch, pids})

  def watch_path(terminator, path), do: GenServer.call(terminator, {:watch_path, path})

  @doc "Registers the calling process as a running call, killed after `timeout` ms."
  def deadline_me(terminator, timeout), do: GenServer.call(terminator, {:deadline, timeout})

  def schedule_idle_shutdown(terminator, idle_after, idle_check, single_use?) do
    GenServer.call(terminator, {:schedule_idle, idle_after, idle_check, single_use?})
  end

  def system_shutdown(terminator) when is_pid(terminator),
    do: GenServer.call(terminator, :system_shutdown)

  @doc """
  Starts `child_spec` under the terminator's child placement supervisor; the child registers
  with the terminator from inside the supervisor, with the caller's group leader.
  """
  def place_child(terminator, caller, link?, child_spec)
      when is_pid(caller) and is_boolean(link?) do
    sup = FLAME.Terminator.Supervisor.child_placement_sup_name(terminator)
    spec = Supervisor.child_spec(child_spec, [])
    args = [spec.start, terminator, caller, link?, Process.group_leader()]
    DynamicSupervisor.start_child(sup, %{spec | start: {__MODULE__, :start_placed, args}})
  end

  @doc false
  def start_placed({mod, fun, args}, terminator, caller, link?, group_leader) do
    previous = Process.group_leader()
    Process.group_leader(self(), group_leader)

    try do
      result = apply(mod, fun, args)

      case result do
        {:ok, pid} -> GenServer.call(terminator, {:placed_child, caller, pid, link?})
        {:ok, pid, _info} -> GenServer.call(terminator, {:placed_child, caller, pid, link?})
        _ -> :ok
      end

      result
    after
      Process.group_leader(self(), previous)
    end
  end

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)
    log = Keyword.get(opts, :log, false)

    case opts[:parent] || FLAME.Parent.get() do
      nil ->
        if log, do: Logger.log(log, "no parent found, :ignore")
        :ignore

      %FLAME.Parent{} = parent ->
        :global_group.monitor_nodes(true)

        sup =
          case Keyword.fetch!(opts, :child_placement_sup) do
            pid when is_pid(pid) -> pid
            name when is_atom(name) -> Process.whereis(name)
          end

        state = %{
          parent: parent,
          parent_monitor: nil,
          placement_sup: sup,
          log: log,
          status: :connecting,
          single_use: false,
          calls: %{},
          watchers: %{},
          paths: [],
          failsafe:
            Process.send_after(self(), :failsafe_shutdown, opts[:failsafe_timeout] || 20_000),
          connect_timer: nil,
          idle_after: nil,
          idle_check: nil,
          idle_timer: {nil, nil}
        }

        log(state, "starting with parent #{inspect(parent)}")
        {:ok, state, {:continue, :connect}}
    end
  end

  @impl true
  def handle_continue(:connect, state), do: {:noreply, connect(state)}

  # The clauses below are all there is: anything else crashes the terminator, as in FLAME.
  @impl true
  def handle_info(:connect, state) do
    if state.parent_monitor, do: {:noreply, state}, else: {:noreply, connect(state)}
  end

  def handle_info({:timeout, ref}, state) do
    case state.calls do
      %{^ref => %Caller{pid: pid}} ->
        Process.demonitor(ref)
        Process.exit(pid, :kill)
        {:noreply, drop_call(state, ref)}

      %{} ->
        {:noreply, state}
    end
  end

  def handle_info({:DOWN, ref, :process, pid, reason}, state) do
    cond do
      pid == state.parent.pid ->
        {:noreply, stop_system(state, "parent #{inspect(pid)} down: #{inspect(reason)}")}

      Map.has_key?(state.watchers, ref) ->
        {:noreply, maybe_idle(%{state | watchers: Map.delete(state.watchers, ref)})}

      true ->
        {:noreply, drop_call(state, ref)}
    end
  end

  def handle_info({:nodeup, node}, state) do
    if state.parent_monitor == nil and node == node(state.parent.pid),
      do: {:noreply, connect(state)},
      else: {:noreply, state}
  end

  def handle_info({:nodedown, node}, state) do
    if node == node(state.parent.pid),
      do: {:noreply, stop_system(state, "nodedown #{inspect(node)}")},
      else: {:noreply, state}
  end

  def handle_info(:failsafe_shutdown, state),
    do: {:noreply, stop_system(state, "no parent connection within the failsafe timeout")}

  def handle_info({:idle_shutdown, timer_ref}, state) do
    {_timer, current} = state.idle_timer

    if timer_ref == current and state.idle_check.() do
      send(state.parent.pid, {state.parent.ref, {:remote_shutdown, :idle}})
      {:noreply, stop_system(state, "idle")}
    else
      {:noreply, schedule_idle(state)}
    end
  end

  @impl true
  def handle_call({:placed_child, caller, child, link?}, _from, state) do
    {child_ref, state} = add_call(state, child, :infinity)
    {caller_ref, state} = add_call(state, caller, :infinity)

    calls =
      state.calls
      |> Map.update!(child_ref, &%{&1 | caller_ref: caller_ref, link?: link?})
      |> Map.update!(caller_ref, &%{&1 | child_ref: child_ref, link?: link?})

    {:reply, {:ok, child}, %{state | calls: calls}}
  end

  def handle_call({:watch, pids}, _from, state) do
    watchers = Map.new(pids, &{Process.monitor(&1), []})
    {:reply, :ok, cancel_idle(%{state | watchers: Map.merge(state.watchers, watchers)})}
  end

  def handle_call({:watch_path, path}, _from, state) do
    {:reply, :ok, %{state | paths: [path | state.watchers]}}
  end

  def handle_call(:system_shutdown, _from, state) do
    {:reply, :ok, stop_system(state, "system shutdown asked by #{inspect(state.parent.pid)}")}
  end

  def handle_call({:deadline, timeout}, {pid, _tag}, state) do
    {_ref, state} = add_call(state, pid, timeout)
    {:reply, :ok, state}
  end

  def handle_call({:schedule_idle, idle_after, idle_check, single_use?}, _from, state) do
    state = %{state | single_use: single_use?, idle_after: idle_after, idle_check: idle_check}
    {:reply, :ok, schedule_idle(state)}
  end

  @impl true
  def terminate(_reason, state) do
    state = state |> cancel_idle() |> stop_system("terminating")
    # A list on top of a map: after the first path, this raises (as FLAME 0.5.3's does).
    Enum.each(state.paths, &File.rm_rf/1)

    # The VM goes once every running call has ended (the supervisor's shutdown timeout bounds
    # this); callers that placed a child run on the parent and are not waited for.
    for {ref, %Caller{child_ref: nil}} <- state.calls do
      receive do
        {:DOWN, ^ref, :process, _pid, _reason} -> :ok
      end
    end

    :ok
  end

  defp add_call(state, pid, timeout) do
    ref = Process.monitor(pid)
    timer = if is_integer(timeout), do: Process.send_after(self(), {:timeout, ref}, timeout)
    state = %{state | calls: Map.put(state.calls, ref, %Caller{pid: pid, timer: timer})}
    {ref, cancel_idle(state)}
  end

  defp drop_call(state, ref) do
    {%Caller{} = call, calls} = Map.pop!(state.calls, ref)
    if call.timer, do: Process.cancel_timer(call.timer)
    state = %{state | calls: calls}

    # A caller that placed a linked child went down: the child goes too.
    state =
      with child_ref when is_reference(child_ref) <- call.child_ref,
           %{^child_ref => %Caller{link?: true} = child} <- state.calls do
        if child.timer, do: Process.cancel_timer(child.timer)
        Process.demonitor(child_ref, [:flush])
        DynamicSupervisor.terminate_child(state.placement_sup, child.pid)
        %{state | calls: Map.delete(state.calls, child_ref)}
      else
        _ -> state
      end

    # A placed child went down: its caller is no longer waited for.
    state =
      with caller_ref when is_reference(caller_ref) <- call.caller_ref,
           %{^caller_ref => %Caller{} = caller} <- state.calls do
        if caller.timer, do: Process.cancel_timer(caller.timer)
        Process.demonitor(caller_ref, [:flush])
        %{state | calls: Map.delete(state.calls, caller_ref)}
      else
        _ -> state
      end

    state = if state.single_use, do: stop_system(state, "single use completed"), else: state
    maybe_idle(state)
  end

  defp maybe_idle(state) do
    if map_size(state.calls) == 0 and map_size(state.watchers) == 0,
      do: schedule_idle(state),
      else: state
  end

  defp schedule_idle(state) do
    state = cancel_idle(state)
    marker = make_ref()

    case state.idle_after do
      after_ms when is_integer(after_ms) ->
        timer = Process.send_after(self(), {:idle_shutdown, marker}, after_ms)
        %{state | idle_timer: {timer, marker}}

      _none_or_infinity ->
        %{state | idle_timer: {nil, marker}}
    end
  end

  defp cancel_idle(%{idle_timer: {timer, _marker}} = state) do
    if timer, do: Process.cancel_timer(timer)
    %{state | idle_timer: {nil, make_ref()}}
  end

  defp connect(%{parent: parent} = state) do
    if state.connect_timer, do: Process.cancel_timer(state.connect_timer)
    connected? = Node.connect(node(parent.pid))
    log(state, "connect #{inspect(node(parent.pid))}: #{inspect(connected?)}")

    if connected? do
      if state.failsafe, do: Process.cancel_timer(state.failsafe)
      monitor = Process.monitor(parent.pid)
      send(parent.pid, {parent.ref, {:remote_up, self()}})
      %{state | status: :connected, parent_monitor: monitor, failsafe: nil, connect_timer: nil}
    else
      %{state | connect_timer: Process.send_after(self(), :connect, 100)}
    end
  end

  defp stop_system(%{status: :stopping} = state, _why), do: state

  defp stop_system(state, why) do
    log(state, "#{inspect(__MODULE__)} system stop: #{why}")
    state.parent.backend.system_shutdown()
    %{state | status: :stopping}
  end

  defp log(%{log: false}, _message), do: :ok
  defp log(%{log: level}, message), do: Logger.log(level, message)
end

defmodule FLAME.Terminator.Supervisor do
  @moduledoc false
  # As FLAME 0.5.3's: the child placement supervisor and the terminator, one for all, and no
  # restart allowed (a terminator crash stops this supervisor; its own parent may restart it).
  use Supervisor

  def start_link(opts) do
    name = Module.concat(Keyword.fetch!(opts, :name), "Supervisor")
    Supervisor.start_link(__MODULE__, opts, name: name)
  end

  def child_placement_sup_name(terminator) when is_pid(terminator) do
    {:registered_name, name} = Process.info(terminator, :registered_name)
    child_placement_sup_name(name)
  end

  def child_placement_sup_name(name) when is_atom(name),
    do: Module.concat(name, "ChildPlacementSup")

  @impl true
  def init(opts) do
    {shutdown, opts} = Keyword.pop(opts, :shutdown_timeout, 30_000)
    placement_sup = child_placement_sup_name(Keyword.fetch!(opts, :name))

    children = [
      {DynamicSupervisor, name: placement_sup, strategy: :one_for_one},
      %{
        id: FLAME.Terminator,
        start:
          {FLAME.Terminator, :start_link,
           [Keyword.put(opts, :child_placement_sup, placement_sup)]},
        shutdown: shutdown
      }
    ]

    Supervisor.init(children, strategy: :one_for_all, max_restarts: 0)
  end
end
