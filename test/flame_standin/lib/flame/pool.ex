defmodule FLAME.Pool do
  @moduledoc """
  A pool of runners, as FLAME 0.5.3's.

  Started as a child spec (`{FLAME.Pool, opts}`), which starts `FLAME.Pool.Supervisor`: it
  gives the pool its `:runner_sup`, `:task_sup`, `:terminator_sup`, `:cleaner` and
  `:child_placement_sup`. `FLAME.Pool.start_link/1` called directly lacks them and the pool's
  start raises (`KeyError`).

  Options (others raise): `:name`, `:min` and `:max` (both required; `:min` is 0 on a runner),
  `:max_concurrency` (100), `:backend`, `:log` (`false`), `:single_use`, `:timeout`,
  `:boot_timeout` (30 s), `:shutdown_timeout`, `:idle_shutdown_after` (30 s),
  `:min_idle_shutdown_after` (`:infinity`), `:on_grow_start`, `:on_grow_end`, `:on_shrink`,
  `:code_sync` (see `FLAME.CodeSync`) and `:track_resources` (accepted; nothing is tracked).

  What a backend sees:

    * **Its options.** `backend: {module, opts}` gets `opts` with the pool's `:log` (default
      `false`) and `:terminator_sup` merged **over** them: `log:` given in `opts` never
      arrives. A bare `backend: module` gets only those two (the app's
      `config :flame, module` is not read); with no `:backend` at all, the configured
      `config :flame, :backend` (default `FLAME.LocalBackend`) gets its config merged under
      them. The runner adds `:boot_timeout` under all of it.
    * **A failed boot.** Runners beyond `:min` boot in a task (one at a time while callers
      wait for it). When the boot fails, the task exits with FLAME's own reason
      (`{{:shutdown, backend_reason}, {GenServer, :call, _}}`, or the runner's crash), which
      only `:on_grow_end` receives, as `{:exit, reason}`; the pool boots again a second later
      while callers still wait. A caller never sees the backend's reason: it waits up to its
      `:timeout` (default: the pool's `:boot_timeout`) for a runner, then exits with
      `{:timeout, {FLAME.Pool, :call, [pool, func, opts]}}`. A failed boot of a `:min` runner
      crashes the pool's start.
    * **A runner that goes down** takes the callers holding it along (they are killed).
  """
  use GenServer

  alias FLAME.{CodeSync, Runner}

  @keys [
    :name,
    :runner_sup,
    :task_sup,
    :cleaner,
    :terminator_sup,
    :child_placement_sup,
    :idle_shutdown_after,
    :min_idle_shutdown_after,
    :min,
    :max,
    :max_concurrency,
    :backend,
    :log,
    :single_use,
    :timeout,
    :boot_timeout,
    :shutdown_timeout,
    :on_grow_start,
    :on_grow_end,
    :on_shrink,
    :code_sync,
    :track_resources
  ]

  @retry_boot_after 1_000

  def child_spec(opts) do
    %{
      id: {__MODULE__, Keyword.fetch!(opts, :name)},
      start: {FLAME.Pool.Supervisor, :start_link, [opts]},
      type: :supervisor
    }
  end

  def start_link(opts) do
    Keyword.validate!(opts, @keys)
    CodeSync.validate!(opts[:code_sync] || [])
    GenServer.start_link(__MODULE__, opts, name: Keyword.fetch!(opts, :name))
  end

  @doc false
  def call(name, func, opts \\ []) when is_function(func, 0) and is_list(opts),
    do: do_call(name, func, self(), opts)

  defp do_call(name, func, caller, opts) do
    checkout!(name, opts, :call, [name, func, opts], fn runner, remaining, track? ->
      opts =
        opts |> Keyword.put_new(:timeout, remaining) |> Keyword.put_new(:track_resources, track?)

      {:cancel, :ok, Runner.call(runner, caller, func, opts)}
    end)
  end

  @doc false
  def cast(name, func, opts) when is_function(func, 0) and is_list(opts) do
    %{task_sup: task_sup} = meta(name)
    caller = self()
    opts = Keyword.put_new(opts, :timeout, :infinity)

    fun = fn ->
      func.()
      :ok
    end

    {:ok, _pid} =
      Task.Supervisor.start_child(task_sup, fn -> do_call(name, fun, caller, opts) end)

    :ok
  end

  @doc false
  def place_child(name, child_spec, opts) do
    checkout!(name, opts, :place_child, [name, child_spec, opts], fn runner, remaining, track? ->
      opts =
        opts
        |> Keyword.put(:track_resources, track?)
        |> Keyword.put_new(:timeout, remaining)
        |> Keyword.put_new(:link, true)

      case Runner.place_child(runner, child_spec, opts) do
        {{:ok, child}, []} = result ->
          if Keyword.fetch!(opts, :link), do: Process.link(child)
          {:cancel, {:replace, [child]}, result}

        {:error, _reason} = result ->
          {:cancel, :ok, result}
      end
    end)
  end

  # The caller waits for a runner up to its :timeout, or the pool's :boot_timeout.
  defp checkout!(name, opts, fun_name, args, fun) do
    %{boot_timeout: boot_timeout, track_resources: track?} = meta(name)
    track? = Keyword.get(opts, :track_resources, track?)
    timeout = opts[:timeout] || boot_timeout
    pool = Process.whereis(name) || exit({:noproc, {__MODULE__, fun_name, args}})
    ref = Process.monitor(pool)
    started = System.monotonic_time()
    deadline = if timeout == :infinity, do: :infinity, else: started + ms_to_native(timeout)
    Process.send(pool, {:"$gen_call", {self(), ref}, {:checkout, deadline}}, [:noconnect])

    receive do
      {^ref, runner} ->
        try do
          Process.demonitor(ref, [:flush])
          fun.(runner, remaining(opts, started), track?)
        catch
          kind, reason ->
            send(pool, {:cancel, ref, self(), :catch})
            :erlang.raise(kind, reason, __STACKTRACE__)
        else
          {:cancel, :ok, {result, [_ | _] = pids}} ->
            send(pool, {:cancel, ref, self(), {:replace, pids}})
            result

          {:cancel, how, {result, []}} ->
            send(pool, {:cancel, ref, self(), how})
            result
        end

      {:DOWN, ^ref, _, _, reason} ->
        exit({reason, {__MODULE__, fun_name, args}})
    after
      timeout ->
        send(pool, {:cancel, ref, self(), :timeout})
        Process.demonitor(ref, [:flush])
        exit({:timeout, {__MODULE__, fun_name, args}})
    end
  end

  defp remaining(opts, started) do
    case Keyword.fetch(opts, :timeout) do
      {:ok, ms} when is_integer(ms) ->
        ms - System.convert_time_unit(System.monotonic_time() - started, :native, :millisecond)

      {:ok, :infinity} ->
        :infinity

      _nil_or_unset ->
        nil
    end
  end

  defp meta(name), do: :ets.lookup_element(name, :meta, 2)

  @impl true
  def init(opts) do
    name = Keyword.fetch!(opts, :name)
    task_sup = Keyword.fetch!(opts, :task_sup)
    boot_timeout = Keyword.get(opts, :boot_timeout, 30_000)
    track? = Keyword.get(opts, :track_resources, false)
    :ets.new(name, [:set, :public, :named_table, read_concurrency: true])
    meta = %{boot_timeout: boot_timeout, task_sup: task_sup, track_resources: track?}
    :ets.insert(name, {:meta, meta})

    terminator_sup = Keyword.fetch!(opts, :terminator_sup)
    cleaner = Keyword.fetch!(opts, :cleaner)
    _ = Keyword.fetch!(opts, :child_placement_sup)
    runner_opts = runner_opts(opts, terminator_sup)
    # A runner never boots runners of its own.
    min = if FLAME.Parent.get(), do: 0, else: Keyword.fetch!(opts, :min)

    base_package =
      if code_sync = opts[:code_sync] do
        package =
          code_sync
          |> CodeSync.new()
          |> CodeSync.compute_changed_paths()
          |> CodeSync.package_to_stream()

        # No archive (nothing to copy) has no path: this raises, as in FLAME 0.5.3.
        :ok = FLAME.Pool.Cleaner.watch_path(cleaner, package.stream.path)
        package
      end

    state = %{
      name: name,
      runner_sup: Keyword.fetch!(opts, :runner_sup),
      task_sup: task_sup,
      min: min,
      max: Keyword.fetch!(opts, :max),
      max_concurrency: Keyword.get(opts, :max_concurrency, 100),
      boot_timeout: boot_timeout,
      min_idle_shutdown_after: Keyword.get(opts, :min_idle_shutdown_after, :infinity),
      on_grow_start: opts[:on_grow_start],
      on_grow_end: opts[:on_grow_end],
      on_shrink: opts[:on_shrink],
      runner_opts: runner_opts,
      base_package: base_package,
      callers: %{},
      waiting: [],
      runners: %{},
      pending: %{},
      retry_timer: nil
    }

    {:ok, boot_min_runners(state)}
  end

  defp runner_opts(opts, terminator_sup) do
    pool_defaults = [terminator_sup: terminator_sup, log: Keyword.get(opts, :log, false)]
    runner_opts = Keyword.take(opts, FLAME.Runner.keys())

    backend =
      case Keyword.fetch(opts, :backend) do
        {:ok, {backend, backend_opts}} -> {backend, Keyword.merge(backend_opts, pool_defaults)}
        {:ok, backend} -> {backend, pool_defaults}
        :error -> configured_backend(pool_defaults)
      end

    Keyword.put(runner_opts, :backend, backend)
  end

  defp configured_backend(pool_defaults) do
    backend = FLAME.Backend.impl()
    {backend, Keyword.merge(Application.get_env(:flame, backend) || [], pool_defaults)}
  end

  # The :min runners boot before the pool has started; any failure crashes the start.
  defp boot_min_runners(%{min: 0} = state), do: state

  defp boot_min_runners(state) do
    0..(state.min - 1)
    |> Task.async_stream(
      fn _ -> start_runner(state, idle_shutdown_after: state.min_idle_shutdown_after) end,
      max_concurrency: 10,
      timeout: state.boot_timeout
    )
    |> Enum.reduce(state, fn
      {:ok, {:ok, runner}}, acc -> acc |> add_runner(runner) |> elem(1)
      {:exit, reason}, _acc -> raise "failed to boot runner: #{inspect(reason)}"
    end)
  end

  defp start_runner(state, extra_opts \\ []) do
    opts = Keyword.merge(state.runner_opts, extra_opts)
    id = Module.concat(state.name, "Runner#{map_size(state.runners) + 1}")
    spec = %{id: id, start: {Runner, :start_link, [opts]}, restart: :temporary}
    {:ok, runner} = DynamicSupervisor.start_child(state.runner_sup, spec)

    # Only a throw is caught here: the runner's exit (a failed boot) ends the caller.
    try do
      case Runner.remote_boot(runner, state.base_package) do
        :ok -> {:ok, runner}
        {:error, reason} -> {:error, reason}
      end
    catch
      {:exit, reason} -> {:error, {:exit, reason}}
    end
  end

  @impl true
  def handle_call({:checkout, deadline}, from, state),
    do: {:noreply, checkout(state, deadline, from)}

  # No catch-all: an unexpected message crashes the pool, as in FLAME.
  @impl true
  def handle_info({:DOWN, _ref, :process, _pid, _reason} = down, state),
    do: {:noreply, handle_down(state, down)}

  def handle_info({ref, {:ok, runner}}, state) when is_reference(ref),
    do: {:noreply, runner_booted(state, runner, ref)}

  def handle_info(:retry_boot, state), do: {:noreply, boot_async(%{state | retry_timer: nil})}

  def handle_info({:cancel, ref, caller, {:replace, [child]}}, state),
    do: {:noreply, replace_caller(state, ref, caller, child)}

  def handle_info({:cancel, ref, caller, how}, state) when how in [:ok, :timeout, :catch],
    do: {:noreply, checkin(state, ref, caller, how)}

  defp checkout(state, deadline, from, monitor \\ nil) do
    least_busy = least_busy(state)

    cond do
      least_busy && least_busy.count < state.max_concurrency ->
        hand_out(state, least_busy, from, monitor)

      runner_count(state) < state.max ->
        # One boot serves max_concurrency waiting callers; a retry already scheduled waits.
        if state.retry_timer ||
             map_size(state.pending) * state.max_concurrency > length(state.waiting),
           do: wait(state, deadline, from),
           else: state |> boot_async() |> wait(deadline, from)

      true ->
        wait(state, deadline, from)
    end
  end

  defp wait(state, deadline, {pid, _tag} = from) do
    entry = %{pid: pid, from: from, monitor: Process.monitor(pid), deadline: deadline}
    %{state | waiting: state.waiting ++ [entry]}
  end

  defp hand_out(state, runner, {pid, tag} = from, monitor) do
    monitor = monitor || Process.monitor(pid)
    GenServer.reply(from, runner.pid)
    caller = %{checkout_ref: tag, monitor: monitor, runner_ref: runner.ref}
    state = %{state | callers: Map.put(state.callers, pid, caller)}
    update_count(state, runner.ref, &(&1 + 1))
  end

  defp boot_async(state) do
    count = runner_count(state) + 1
    %{on_grow_start: on_grow_start, name: name} = state

    task =
      Task.Supervisor.async_nolink(state.task_sup, fn ->
        if on_grow_start, do: on_grow_start.(%{count: count, name: name, pid: self()})
        start_runner(state)
      end)

    %{state | pending: Map.put(state.pending, task.ref, task.pid)}
  end

  defp runner_booted(state, runner, ref) do
    %{^ref => task_pid} = state.pending
    Process.demonitor(ref, [:flush])
    {runner_ref, state} = add_runner(%{state | pending: Map.delete(state.pending, ref)}, runner)
    state = grow_end(state, task_pid, :ok)

    Enum.reduce_while(1..state.max_concurrency, state, fn _, acc ->
      with %{} = booted <- acc.runners[runner_ref],
           {%{} = next, acc} <- next_waiting(acc) do
        {:cont, hand_out(acc, booted, next.from, next.monitor)}
      else
        {nil, acc} -> {:halt, acc}
        nil -> {:halt, acc}
      end
    end)
  end

  defp handle_down(state, {:DOWN, ref, :process, pid, reason}) do
    state = drop_waiting(state, pid)

    state =
      case state.callers do
        %{^pid => %{monitor: ^ref} = caller} -> drop_caller(state, pid, caller)
        %{} -> state
      end

    state = if Map.has_key?(state.runners, ref), do: drop_runner(state, ref), else: state

    if Map.has_key?(state.pending, ref) do
      state = %{state | pending: Map.delete(state.pending, ref)}
      state = grow_end(state, pid, {:exit, reason})
      if unmet_demand?(state), do: schedule_retry(state), else: state
    else
      state
    end
  end

  defp replace_caller(state, ref, caller_pid, child) do
    %{^caller_pid => %{checkout_ref: ^ref} = caller} = state.callers
    Process.demonitor(caller.monitor, [:flush])
    replacement = %{caller | monitor: Process.monitor(child)}
    callers = state.callers |> Map.delete(caller_pid) |> Map.put(child, replacement)
    %{state | callers: callers}
  end

  defp checkin(state, ref, caller_pid, how) do
    case state.callers do
      %{^caller_pid => %{checkout_ref: ^ref} = caller} ->
        Process.demonitor(caller.monitor, [:flush])
        drop_caller(state, caller_pid, caller)

      %{} when how == :timeout ->
        drop_waiting(state, caller_pid)

      %{} ->
        raise ArgumentError,
              "expected to checkin runner for #{inspect(caller_pid)} that does not exist"
    end
  end

  defp drop_caller(state, pid, caller) do
    state = %{state | callers: Map.delete(state.callers, pid)}
    state = update_count(state, caller.runner_ref, &(&1 - 1))

    case next_waiting(state) do
      {nil, state} -> state
      {next, state} -> checkout(state, next.deadline, next.from, next.monitor)
    end
  end

  # The callers holding a runner that went down are killed.
  defp drop_runner(state, ref) do
    Process.demonitor(ref, [:flush])

    state =
      Enum.reduce(state.callers, state, fn
        {pid, %{runner_ref: ^ref, monitor: monitor}}, acc ->
          Process.demonitor(monitor, [:flush])
          Process.exit(pid, :kill)
          %{acc | callers: Map.delete(acc.callers, pid)}

        _other, acc ->
          acc
      end)

    state = %{state | runners: Map.delete(state.runners, ref)}
    if state.on_shrink, do: state.on_shrink.(%{count: runner_count(state), name: state.name})
    state
  end

  defp drop_waiting(state, pid),
    do: %{state | waiting: Enum.reject(state.waiting, &(&1.pid == pid))}

  # The first waiting caller still alive and within its deadline.
  defp next_waiting(%{waiting: []} = state), do: {nil, state}

  defp next_waiting(%{waiting: [next | rest]} = state) do
    if Process.alive?(next.pid) and not expired?(next.deadline) do
      {next, %{state | waiting: rest}}
    else
      Process.demonitor(next.monitor, [:flush])
      next_waiting(%{state | waiting: rest})
    end
  end

  defp expired?(:infinity), do: false
  defp expired?(deadline), do: System.monotonic_time() >= deadline

  defp unmet_demand?(state) do
    length(state.waiting) > map_size(state.pending) * state.max_concurrency and
      runner_count(state) < state.max
  end

  defp schedule_retry(state) do
    if state.retry_timer, do: Process.cancel_timer(state.retry_timer)
    %{state | retry_timer: Process.send_after(self(), :retry_boot, @retry_boot_after)}
  end

  defp grow_end(state, pid, result) do
    if state.on_grow_end,
      do: state.on_grow_end.(result, %{count: runner_count(state), name: state.name, pid: pid})

    state
  end

  defp add_runner(state, pid) do
    ref = Process.monitor(pid)
    {ref, %{state | runners: Map.put(state.runners, ref, %{count: 0, pid: pid, ref: ref})}}
  end

  defp update_count(state, ref, fun) do
    %{state | runners: Map.update!(state.runners, ref, &%{&1 | count: fun.(&1.count)})}
  end

  defp least_busy(%{runners: runners}) when map_size(runners) == 0, do: nil
  defp least_busy(%{runners: runners}), do: runners |> Map.values() |> Enum.min_by(& &1.count)

  defp runner_count(state), do: map_size(state.runners) + map_size(state.pending)

  defp ms_to_native(ms), do: System.convert_time_unit(ms, :millisecond, :native)
end

defmodule FLAME.Pool.Supervisor do
  @moduledoc false
  # As FLAME 0.5.3's: the pool's helpers, then the pool, one for all.
  use Supervisor

  def start_link(opts) do
    Supervisor.start_link(__MODULE__, opts,
      name: Module.concat(Keyword.fetch!(opts, :name), "PoolSup")
    )
  end

  @impl true
  def init(opts) do
    name = Keyword.fetch!(opts, :name)
    cleaner = Module.concat(name, "Cleaner")
    task_sup = Module.concat(name, "TaskSup")
    runner_sup = Module.concat(name, "RunnerSup")
    terminator_sup = Module.concat(name, "TerminatorSup")

    pool_opts =
      Keyword.merge(opts,
        task_sup: task_sup,
        cleaner: cleaner,
        runner_sup: runner_sup,
        terminator_sup: terminator_sup,
        child_placement_sup: Keyword.get(opts, :child_placement_sup, FLAME.ChildPlacementSup)
      )

    children = [
      {FLAME.Pool.Cleaner, name: cleaner},
      {Task.Supervisor, name: task_sup, strategy: :one_for_one},
      {DynamicSupervisor, name: runner_sup, strategy: :one_for_one},
      {DynamicSupervisor, name: terminator_sup, strategy: :one_for_one},
      %{id: {FLAME.Pool, name}, start: {FLAME.Pool, :start_link, [pool_opts]}, type: :worker}
    ]

    Supervisor.init(children, strategy: :one_for_all)
  end
end

defmodule FLAME.Pool.Cleaner do
  @moduledoc false
  # Removes the pool's code_sync archive when the pool stops (File.rm!: a file already gone
  # makes that raise, as in FLAME 0.5.3).
  use GenServer

  def start_link(opts),
    do: GenServer.start_link(__MODULE__, opts, name: Keyword.fetch!(opts, :name))

  def watch_path(cleaner, path), do: GenServer.call(cleaner, {:watch, path})

  def list_paths(cleaner), do: GenServer.call(cleaner, :list)

  @impl true
  def init(_opts) do
    Process.flag(:trap_exit, true)
    {:ok, []}
  end

  @impl true
  def handle_call({:watch, path}, _from, paths), do: {:reply, :ok, [path | paths]}
  def handle_call(:list, _from, paths), do: {:reply, paths, paths}

  @impl true
  def terminate(_reason, paths), do: Enum.each(paths, &File.rm!/1)
end
