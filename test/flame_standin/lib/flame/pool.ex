defmodule FLAME.Pool do
  @moduledoc """
  A pool of runners, as FLAME's: boots runners on demand up to `:max` (each taking
  `:max_concurrency` callers at once), keeps `:min` runners from the start (booted before
  `start_link/1` returns; never idled down unless `:min_idle_shutdown_after` says so), queues
  callers when all are busy, and forgets runners that stop. On-demand boots run outside the
  pool process. Stopping the pool stops its runners. As in FLAME, the pool itself knows
  nothing of `:single_use`: the runner's terminator stops the runner after its first call,
  and until it is gone the pool may still hand it out.

  Options, as FLAME 0.5's (others raise): `:name` (required), `:backend`, `:min` (default 0,
  and always 0 on a runner), `:max` (1), `:max_concurrency` (100), `:single_use` (its
  runners stop after their first call), `:timeout` (30 s, the default of `FLAME.call/3`),
  `:boot_timeout` (30 s), `:shutdown_timeout`, `:idle_shutdown_after` (30 s),
  `:min_idle_shutdown_after` (`:infinity`), `:log`, `:code_sync` (see `FLAME.CodeSync`), and
  `:track_resources`, `:on_grow_start`, `:on_grow_end`, `:on_shrink`, accepted and ignored.
  """
  use GenServer

  @keys [
    :name,
    :backend,
    :min,
    :max,
    :max_concurrency,
    :single_use,
    :timeout,
    :boot_timeout,
    :shutdown_timeout,
    :idle_shutdown_after,
    :min_idle_shutdown_after,
    :log,
    :code_sync,
    :track_resources,
    :on_grow_start,
    :on_grow_end,
    :on_shrink,
    # Given by FLAME.Pool.Supervisor.
    :runner_sup
  ]

  def child_spec(opts) do
    %{
      id: {__MODULE__, Keyword.fetch!(opts, :name)},
      start: {FLAME.Pool.Supervisor, :start_link, [opts]},
      type: :supervisor
    }
  end

  @doc false
  def start_link(opts),
    do: GenServer.start_link(__MODULE__, opts, name: Keyword.fetch!(opts, :name))

  @doc false
  def call(pool, func, opts) do
    with_runner(pool, :call, opts, fn runner, timeout, link? ->
      {:release, FLAME.Runner.call(runner, func, timeout, link?)}
    end)
  end

  @doc false
  def cast(pool, func, opts) do
    opts = Keyword.put_new(opts, :timeout, :infinity)

    {:ok, _pid} =
      Task.start(fn ->
        call(
          pool,
          fn ->
            _ = func.()
            :ok
          end,
          opts
        )
      end)

    :ok
  end

  @doc false
  def place_child(pool, child_spec, opts) do
    with_runner(pool, :place_child, opts, fn runner, timeout, link? ->
      case FLAME.Runner.place_child(runner, child_spec, timeout, link?) do
        {:ok, pid} = ok -> {{:hold, pid}, ok}
        other -> {:release, other}
      end
    end)
  end

  # The slot is the caller's until it checks in; a placed child holds it until the child exits.
  defp with_runner(pool, fun_name, opts, fun) do
    case GenServer.call(pool, :checkout, :infinity) do
      {:ok, runner, default_timeout} ->
        timeout = Keyword.get(opts, :timeout) || default_timeout
        link? = Keyword.get(opts, :link, true)

        try do
          fun.(runner, timeout, link?)
        catch
          kind, reason ->
            GenServer.cast(pool, {:checkin, runner, :release})
            :erlang.raise(kind, reason, __STACKTRACE__)
        else
          {how, result} ->
            GenServer.cast(pool, {:checkin, runner, how})
            result
        end

      {:error, reason} ->
        exit({reason, {FLAME, fun_name, [pool, opts]}})
    end
  end

  @impl true
  def init(opts) do
    opts = Keyword.validate!(opts, @keys)
    _ = FLAME.CodeSync.validate!(opts[:code_sync] || [])
    # As FLAME's: a runner never boots runners of its own.
    min = if FLAME.Parent.get(), do: 0, else: Keyword.get(opts, :min, 0)
    runner_opts = runner_opts(opts)

    state = %{
      runner_sup: Keyword.fetch!(opts, :runner_sup),
      runner_opts: runner_opts,
      max: Keyword.get(opts, :max, 1),
      max_concurrency: Keyword.get(opts, :max_concurrency, 100),
      timeout: Keyword.get(opts, :timeout, 30_000),
      runners: %{},
      held: %{},
      booting: 0,
      waiting: :queue.new()
    }

    # FLAME boots the min runners before the pool is up, and fails to start without them.
    min_opts =
      Keyword.put(runner_opts, :idle_shutdown_after, opts[:min_idle_shutdown_after] || :infinity)

    state =
      Enum.reduce(1..min//1, state, fn _, acc ->
        case boot_runner(acc.runner_sup, min_opts) do
          {:ok, runner} -> add_runner(acc, runner)
          {:error, reason} -> raise "failed to boot runner: #{inspect(reason)}"
        end
      end)

    {:ok, state}
  end

  # As FLAME's pool does: the backend always gets the pool's :log (default false) and its
  # terminator supervisor, and a bare backend module becomes {module, those options}.
  defp runner_opts(opts) do
    defaults = [terminator_sup: nil, log: Keyword.get(opts, :log, false)]

    backend =
      case Keyword.get(opts, :backend) || Application.get_env(:flame, :backend) do
        {backend, backend_opts} ->
          {backend, Keyword.merge(backend_opts, defaults)}

        backend when is_atom(backend) and not is_nil(backend) ->
          {backend, Keyword.merge(Application.get_env(:flame, backend) || [], defaults)}
      end

    opts
    |> Keyword.take([
      :boot_timeout,
      :idle_shutdown_after,
      :single_use,
      :log,
      :timeout,
      :shutdown_timeout,
      :code_sync
    ])
    |> Keyword.put_new(:boot_timeout, 30_000)
    |> Keyword.put(:backend, backend)
  end

  @impl true
  def handle_call(:checkout, from, state) do
    {:noreply, serve(%{state | waiting: :queue.in(from, state.waiting)})}
  end

  @impl true
  def handle_cast({:checkin, runner, :release}, state) do
    {:noreply, serve(release(state, runner))}
  end

  def handle_cast({:checkin, runner, {:hold, child}}, state) do
    ref = Process.monitor(child)
    {:noreply, %{state | held: Map.put(state.held, ref, runner)}}
  end

  @impl true
  def handle_info({:booted, from, {:ok, runner}}, state) do
    state = %{add_runner(state, runner) | booting: state.booting - 1}
    {:noreply, serve(%{state | waiting: :queue.in_r(from, state.waiting)})}
  end

  def handle_info({:booted, from, {:error, reason}}, state) do
    GenServer.reply(from, {:error, reason})
    {:noreply, serve(%{state | booting: state.booting - 1})}
  end

  def handle_info({:DOWN, ref, :process, _pid, _reason}, %{held: held} = state)
      when is_map_key(held, ref) do
    {runner, held} = Map.pop(held, ref)
    {:noreply, serve(release(%{state | held: held}, runner))}
  end

  def handle_info({:DOWN, _ref, :process, runner, _reason}, state) do
    {:noreply, serve(%{state | runners: Map.delete(state.runners, runner)})}
  end

  defp add_runner(state, runner) do
    Process.monitor(runner)
    %{state | runners: Map.put(state.runners, runner, 0)}
  end

  defp release(state, runner) do
    %{state | runners: Map.replace_lazy(state.runners, runner, &max(&1 - 1, 0))}
  end

  defp serve(state) do
    case :queue.out(state.waiting) do
      {:empty, _} ->
        state

      {{:value, from}, rest} ->
        case available(state) do
          {runner, load} ->
            GenServer.reply(from, {:ok, runner, state.timeout})
            serve(%{state | waiting: rest, runners: Map.put(state.runners, runner, load + 1)})

          nil when map_size(state.runners) + state.booting < state.max ->
            boot_async(from, state)
            serve(%{state | waiting: rest, booting: state.booting + 1})

          nil ->
            state
        end
    end
  end

  defp available(state) do
    Enum.find(state.runners, fn {_runner, load} -> load < state.max_concurrency end)
  end

  defp boot_async(from, state) do
    pool = self()
    %{runner_sup: sup, runner_opts: opts} = state
    spawn(fn -> send(pool, {:booted, from, boot_runner(sup, opts)}) end)
  end

  defp boot_runner(runner_sup, opts) do
    case DynamicSupervisor.start_child(runner_sup, {FLAME.Runner, opts}) do
      {:ok, runner} ->
        try do
          :ok = FLAME.Runner.remote_boot(runner)
          {:ok, runner}
        catch
          :exit, {reason, _} -> {:error, reason}
        end

      {:error, reason} ->
        {:error, reason}
    end
  end
end

defmodule FLAME.Pool.Supervisor do
  @moduledoc false
  # The pool and the supervisor of its runners: stopping the pool stops its runners.
  use Supervisor

  def start_link(opts) do
    Supervisor.start_link(__MODULE__, opts,
      name: Module.concat(Keyword.fetch!(opts, :name), "PoolSup")
    )
  end

  @impl true
  def init(opts) do
    runner_sup = Module.concat(Keyword.fetch!(opts, :name), "RunnerSup")

    children = [
      {DynamicSupervisor, name: runner_sup, strategy: :one_for_one},
      %{
        id: FLAME.Pool,
        start: {FLAME.Pool, :start_link, [Keyword.put(opts, :runner_sup, runner_sup)]}
      }
    ]

    Supervisor.init(children, strategy: :one_for_all)
  end
end
