defmodule FLAME.Runner do
  @moduledoc """
  Parent side of one runner, as FLAME 0.5.3's:

    * `init/1` validates the options and calls the backend's `init/1` (the backend gets
      `:boot_timeout` under its own options); an `{:error, reason}` stops the runner with
      `reason`.
    * `remote_boot/3` calls the backend's `remote_boot/1` in this process. On
      `{:error, reason}` the runner stops with `{:shutdown, reason}` **without replying**: the
      caller exits with `{{:shutdown, reason}, {GenServer, :call, _}}`. Once booted it
      monitors the terminator and, on the runner, within `:boot_timeout`: starts the release's
      application (`RELEASE_NAME`), extracts the pool's code package and the `:sync_beams`
      package, and schedules the idle shutdown. A failure there crashes this process.
    * Each checkout first sends the `:sync_beams` files that changed since the last one.
    * A call's remote process is not killed when the caller's timeout passes (the
      terminator's deadline does that); a remote process killed is reported as `:timeout`.
    * It stops when the terminator goes down (with its reason), on
      `{ref, {:remote_shutdown, reason}}` (with `{:shutdown, reason}`), and on a single-use
      runner when a checkout's process goes down. Other messages go to the backend's
      `handle_info/2`.
  """
  use GenServer

  require Logger

  alias FLAME.{CodeSync, Terminator}

  @keys [
    :backend,
    :log,
    :single_use,
    :timeout,
    :boot_timeout,
    :shutdown_timeout,
    :idle_shutdown_after,
    :code_sync
  ]

  @doc false
  # The options a runner takes: the pool hands each runner these of its own.
  def keys, do: @keys

  def start_link(opts \\ []), do: GenServer.start_link(__MODULE__, opts)

  def shutdown(runner, timeout \\ nil) when is_pid(runner),
    do: GenServer.call(runner, {:runner_shutdown, timeout})

  def remote_boot(runner, base_package, timeout \\ nil) when is_pid(runner) do
    GenServer.call(runner, {:remote_boot, base_package, timeout}, timeout || :infinity)
  end

  @doc "Runs `func` on the runner; returns `{value, trackable_pids}` (always `[]` here)."
  def call(runner, caller, func, opts \\ [])
      when is_pid(runner) and is_pid(caller) and is_function(func) and is_list(opts) do
    link? = Keyword.get(opts, :link, true)
    {ref, config, backend_state} = GenServer.call(runner, :checkout)
    timeout = opts[:timeout] || config.timeout
    terminator = config.terminator

    result =
      remote_call(config, backend_state, timeout, fn ->
        if link?, do: Process.link(caller)
        :ok = Terminator.deadline_me(terminator, timeout)
        if is_function(func, 1), do: func.(terminator), else: func.()
      end)

    :ok = GenServer.call(runner, {:checkin, ref, []})

    case result do
      {:ok, value} -> {value, []}
      {:exit, reason} -> exit(reason)
    end
  end

  @doc "Places `child_spec`, made `:temporary`, on the runner (see `FLAME.place_child/3`)."
  def place_child(runner, child_spec, opts) when is_pid(runner) and is_list(opts) do
    spec = Supervisor.child_spec(child_spec, restart: :temporary)
    caller = self()
    link? = Keyword.get(opts, :link, true)

    call(runner, caller, &Terminator.place_child(&1, caller, link?, spec), opts)
  end

  @impl true
  def init(opts) do
    config = new(opts)

    case config.backend_init do
      {:ok, backend_state} ->
        release = System.get_env("RELEASE_NAME")

        {:ok,
         %{
           config: config,
           backend_state: backend_state,
           checkouts: %{},
           otp_app: if(release, do: String.to_atom(release))
         }}

      {:error, reason} ->
        {:stop, reason}
    end
  end

  @impl true
  def handle_call({:remote_boot, base_package, _timeout}, _from, %{config: config} = state) do
    case config.status do
      :booted ->
        {:reply, {:error, :already_booted}, state}

      :awaiting_boot ->
        timed(config, "runner connect", fn -> boot(state, base_package) end)
    end
  end

  def handle_call(:checkout, {pid, _tag}, state) do
    state = sync_changed_beams(state)
    ref = Process.monitor(pid)
    state = %{state | checkouts: Map.put(state.checkouts, ref, pid)}
    {:reply, {ref, state.config, state.backend_state}, state}
  end

  def handle_call({:checkin, ref, _trackable}, _from, state) do
    Process.demonitor(ref, [:flush])
    {:reply, :ok, %{state | checkouts: Map.delete(state.checkouts, ref)}}
  end

  def handle_call({:runner_shutdown, timeout}, _from, state) do
    timeout = timeout || state.config.shutdown_timeout
    state = drain(state, timeout)
    parent = self()
    ref = make_ref()
    terminator = state.config.terminator

    {:ok, {pid, monitor}} =
      state.config.backend.remote_spawn_monitor(state.backend_state, fn ->
        :ok = Terminator.system_shutdown(terminator)
        send(parent, {ref, :ok})
      end)

    receive do
      {^ref, :ok} ->
        {:stop, :normal, :ok, state}

      {:DOWN, ^monitor, :process, ^pid, reason} ->
        {:stop, {:shutdown, reason}, {:error, reason}, state}
    after
      timeout -> exit(:timeout)
    end
  end

  @impl true
  def handle_info({:DOWN, ref, :process, pid, reason} = msg, state) do
    cond do
      pid == state.config.terminator ->
        {:stop, reason, state}

      Map.has_key?(state.checkouts, ref) ->
        state = %{state | checkouts: Map.delete(state.checkouts, ref)}
        if state.config.single_use, do: {:stop, reason, state}, else: {:noreply, state}

      true ->
        {:noreply, backend_handle_info(state, msg)}
    end
  end

  def handle_info({_ref, {:remote_shutdown, reason}}, state),
    do: {:stop, {:shutdown, reason}, state}

  def handle_info(msg, state), do: {:noreply, backend_handle_info(state, msg)}

  defp boot(state, base_package) do
    %{config: config, backend_state: backend_state} = state

    case config.backend.remote_boot(backend_state) do
      {:ok, terminator, backend_state} when is_pid(terminator) ->
        Process.monitor(terminator)
        config = %{config | terminator: terminator, status: :booted}
        state = %{state | config: config, backend_state: backend_state}
        {state, beams_package} = package_sync_beams(state)
        otp_app = state.otp_app

        remote_call!(config, backend_state, config.boot_timeout, fn ->
          # The release's app may still be starting when the terminator connected.
          if otp_app, do: {:ok, _} = Application.ensure_all_started(otp_app)

          for package <- [base_package, beams_package], package do
            if dir = CodeSync.extract_packaged_stream(package),
              do: Terminator.watch_path(terminator, dir)
          end

          :ok =
            Terminator.schedule_idle_shutdown(
              terminator,
              config.idle_shutdown_after,
              config.idle_shutdown_check,
              config.single_use
            )
        end)

        {:reply, :ok, state}

      {:error, reason} ->
        {:stop, {:shutdown, reason}, state}

      other ->
        raise ArgumentError,
              "expected #{inspect(config.backend)}.remote_boot/1 to return {:ok, remote_terminator_pid, new_state} | {:error, reason}, got: #{inspect(other)}"
    end
  end

  defp package_sync_beams(%{config: %{code_sync_opts: false}} = state), do: {state, nil}
  defp package_sync_beams(%{config: %{code_sync_opts: nil}} = state), do: {state, nil}

  defp package_sync_beams(%{config: config} = state) do
    code_sync = config.code_sync_opts |> CodeSync.new() |> CodeSync.compute_sync_beams()
    package = CodeSync.package_to_stream(code_sync)
    {%{state | config: %{config | code_sync: code_sync}}, package}
  end

  defp sync_changed_beams(%{config: %{code_sync: nil}} = state), do: state

  defp sync_changed_beams(%{config: config} = state) do
    code_sync = CodeSync.diff(config.code_sync)
    state = %{state | config: %{config | code_sync: code_sync}}

    if CodeSync.changed?(code_sync) do
      package = CodeSync.package_to_stream(code_sync)
      terminator = config.terminator

      remote_call!(config, state.backend_state, config.boot_timeout, fn ->
        if dir = CodeSync.extract_packaged_stream(package),
          do: Terminator.watch_path(terminator, dir)
      end)

      CodeSync.rm_packaged_stream(package)
    end

    state
  end

  defp backend_handle_info(state, msg) do
    backend = state.config.backend

    if function_exported?(backend, :handle_info, 2) do
      case backend.handle_info(msg, state.backend_state) do
        {:noreply, backend_state} ->
          %{state | backend_state: backend_state}

        other ->
          raise ArgumentError,
                "expected #{inspect(backend)}.handle_info/2 to return {:noreply, state}, got: #{inspect(other)}"
      end
    else
      state
    end
  end

  defp drain(%{checkouts: checkouts} = state, _timeout) when checkouts == %{}, do: state

  defp drain(state, timeout) do
    Process.send_after(self(), :drain_timeout, timeout)

    Enum.reduce(state.checkouts, state, fn {ref, _pid}, acc ->
      receive do
        {:DOWN, ^ref, :process, _pid, _reason} ->
          %{acc | checkouts: Map.delete(acc.checkouts, ref)}

        :drain_timeout ->
          exit(:timeout)
      end
    end)
  end

  defp remote_call!(config, backend_state, timeout, fun) do
    case remote_call(config, backend_state, timeout, fun) do
      {:ok, value} -> value
      {:exit, reason} -> exit(reason)
    end
  end

  defp remote_call(config, backend_state, timeout, fun) do
    parent = self()
    ref = make_ref()

    {:ok, {pid, monitor}} =
      config.backend.remote_spawn_monitor(backend_state, fn ->
        send(parent, {ref, fun.()})
        :ok
      end)

    receive do
      {^ref, result} ->
        Process.demonitor(monitor, [:flush])
        {:ok, result}

      {:DOWN, ^monitor, :process, ^pid, :killed} ->
        {:exit, :timeout}

      {:DOWN, ^monitor, :process, ^pid, reason} ->
        {:exit, reason}
    after
      timeout -> {:exit, :timeout}
    end
  end

  defp timed(%{log: false}, _label, fun), do: fun.()

  defp timed(%{log: level}, label, fun) do
    Logger.log(level, "#{label}: start")
    {micros, result} = :timer.tc(fun)
    Logger.log(level, "#{label}: completed in #{div(micros, 1000)}ms")
    result
  end

  @doc false
  def new(opts) when is_list(opts) do
    opts = Keyword.validate!(opts, @keys)
    _ = CodeSync.validate!(opts[:code_sync] || [])

    {idle_after, idle_check} =
      case Keyword.get(opts, :idle_shutdown_after) do
        :infinity -> {:infinity, fn -> false end}
        ms when is_integer(ms) -> {ms, fn -> true end}
        {ms, check} when is_integer(ms) and is_function(check, 0) -> {ms, check}
        nil -> {30_000, fn -> true end}
      end

    backend_base = Keyword.take(opts, [:boot_timeout])

    {backend, backend_init} =
      case Keyword.fetch!(opts, :backend) do
        {backend, backend_opts} when is_atom(backend) and is_list(backend_opts) ->
          {backend, backend.init(Keyword.merge(backend_base, backend_opts))}

        backend when is_atom(backend) ->
          app_opts = Application.get_env(:flame, backend) || []
          {backend, backend.init(Keyword.merge(backend_base, app_opts))}
      end

    %{
      backend: backend,
      backend_init: backend_init,
      status: :awaiting_boot,
      terminator: nil,
      log: Keyword.get(opts, :log, false),
      single_use: Keyword.get(opts, :single_use, false),
      timeout: opts[:timeout] || 30_000,
      boot_timeout: opts[:boot_timeout] || 30_000,
      shutdown_timeout: opts[:shutdown_timeout] || 30_000,
      idle_shutdown_after: idle_after,
      idle_shutdown_check: idle_check,
      code_sync_opts: Keyword.get(opts, :code_sync, false),
      code_sync: nil
    }
  end
end
