defmodule FLAME.Runner do
  @moduledoc """
  Parent side of one runner: initialises the backend, boots the runner through it (then, on
  the runner, extracts the pool's `:code_sync` package and schedules the idle shutdown), and
  runs calls and placed children there. Like FLAME's, it stops when the remote terminator goes
  down or reports `{:remote_shutdown, reason}` (on a `:single_use` runner, the terminator
  stops the runner after its first call).
  """
  use GenServer, restart: :temporary

  alias FLAME.{CodeSync, Terminator}

  def start_link(opts), do: GenServer.start_link(__MODULE__, opts)

  def remote_boot(runner), do: GenServer.call(runner, :remote_boot, :infinity)

  @doc "Runs `func` on the runner; the remote process is linked to the caller when `link?`."
  def call(runner, func, timeout, link?) do
    {backend, backend_state, terminator} = GenServer.call(runner, :checkout)
    caller = self()

    result =
      remote_call(backend, backend_state, timeout, fn ->
        if link?, do: Process.link(caller)
        :ok = Terminator.deadline_me(terminator, timeout)
        func.()
      end)

    GenServer.cast(runner, :checkin)

    case result do
      {:ok, value} -> value
      {:exit, reason} -> exit(reason)
    end
  end

  @doc """
  Starts `child_spec` (made temporary) under the runner's child placement supervisor; the
  terminator keeps the runner up while the child lives. Linked to the caller when `link?`.
  """
  def place_child(runner, child_spec, timeout, link?) do
    {backend, backend_state, terminator} = GenServer.call(runner, :checkout)
    caller = self()
    spec = Supervisor.child_spec(child_spec, restart: :temporary)

    result =
      remote_call(backend, backend_state, timeout, fn ->
        Terminator.place_child(terminator, caller, link?, spec)
      end)

    GenServer.cast(runner, :checkin)

    case result do
      {:ok, {:ok, pid}} ->
        if link?, do: Process.link(pid)
        {:ok, pid}

      {:ok, other} ->
        other

      {:exit, reason} ->
        exit(reason)
    end
  end

  @impl true
  def init(opts) do
    base = Keyword.take(opts, [:boot_timeout])

    {backend, backend_opts} =
      case Keyword.fetch!(opts, :backend) do
        {backend, backend_opts} -> {backend, Keyword.merge(base, backend_opts)}
        backend -> {backend, Keyword.merge(base, Application.get_env(:flame, backend) || [])}
      end

    case backend.init(backend_opts) do
      {:ok, backend_state} ->
        {:ok,
         %{
           backend: backend,
           backend_state: backend_state,
           terminator: nil,
           boot_timeout: Keyword.get(opts, :boot_timeout, 30_000),
           idle_shutdown_after: Keyword.get(opts, :idle_shutdown_after, 30_000),
           single_use: Keyword.get(opts, :single_use, false),
           code_sync: Keyword.get(opts, :code_sync)
         }}

      {:error, reason} ->
        {:stop, reason}
    end
  end

  @impl true
  def handle_call(:remote_boot, _from, state) do
    case state.backend.remote_boot(state.backend_state) do
      {:ok, terminator, backend_state} when is_pid(terminator) ->
        Process.monitor(terminator)
        state = %{state | terminator: terminator, backend_state: backend_state}
        :ok = after_boot(state)
        {:reply, :ok, state}

      {:error, reason} ->
        {:stop, {:shutdown, reason}, state}
    end
  end

  def handle_call(:checkout, _from, state) do
    {:reply, {state.backend, state.backend_state, state.terminator}, state}
  end

  @impl true
  def handle_cast(:checkin, state), do: {:noreply, state}

  @impl true
  def handle_info({:DOWN, _ref, :process, pid, reason}, %{terminator: pid} = state) do
    {:stop, reason, state}
  end

  def handle_info({_ref, {:remote_shutdown, reason}}, state) do
    {:stop, {:shutdown, reason}, state}
  end

  def handle_info(msg, %{backend: backend} = state) do
    if function_exported?(backend, :handle_info, 2) do
      case backend.handle_info(msg, state.backend_state) do
        {:noreply, backend_state} ->
          {:noreply, %{state | backend_state: backend_state}}

        other ->
          raise ArgumentError,
                "expected #{inspect(backend)}.handle_info/2 to return {:noreply, state}, got: #{inspect(other)}"
      end
    else
      {:noreply, state}
    end
  end

  # On the runner, as FLAME does once booted: the code first (packed here, extracted there;
  # a failure crashes the boot), then the idle shutdown.
  defp after_boot(state) do
    %{terminator: terminator, idle_shutdown_after: idle, single_use: single_use} = state
    package = if state.code_sync, do: CodeSync.package(state.code_sync)

    result =
      remote_call(state.backend, state.backend_state, state.boot_timeout, fn ->
        if package do
          if dir = CodeSync.extract(package), do: :ok = Terminator.watch_path(terminator, dir)
        end

        Terminator.schedule_idle_shutdown(terminator, idle, fn -> true end, single_use)
      end)

    case result do
      {:ok, :ok} -> :ok
      {:exit, reason} -> exit(reason)
    end
  end

  defp remote_call(backend, backend_state, timeout, fun) do
    parent = self()
    ref = make_ref()

    {:ok, {pid, monitor}} =
      backend.remote_spawn_monitor(backend_state, fn -> send(parent, {ref, fun.()}) end)

    receive do
      {^ref, result} ->
        Process.demonitor(monitor, [:flush])
        {:ok, result}

      {:DOWN, ^monitor, :process, ^pid, reason} ->
        {:exit, reason}
    after
      timeout ->
        Process.exit(pid, :kill)
        {:exit, :timeout}
    end
  end
end
