defmodule FLAME.Runner do
  @moduledoc """
  Parent side of one runner: initialises the backend, boots the runner through it, and runs
  calls there. Like FLAME's, it stops when the remote terminator goes down or reports
  `{:remote_shutdown, reason}`.
  """
  use GenServer

  def start(opts), do: GenServer.start(__MODULE__, opts)

  def remote_boot(runner), do: GenServer.call(runner, :remote_boot, :infinity)

  def call(runner, func, timeout) do
    {backend, backend_state, terminator} = GenServer.call(runner, :checkout)
    ref = make_ref()
    parent = self()

    {:ok, {pid, monitor}} =
      backend.remote_spawn_monitor(backend_state, fn ->
        :ok = FLAME.Terminator.deadline_me(terminator, timeout)
        send(parent, {ref, func.()})
      end)

    receive do
      {^ref, result} ->
        Process.demonitor(monitor, [:flush])
        result

      {:DOWN, ^monitor, :process, ^pid, reason} ->
        exit(reason)
    after
      timeout ->
        Process.exit(pid, :kill)
        exit(:timeout)
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
           idle_shutdown_after: Keyword.get(opts, :idle_shutdown_after, 30_000),
           single_use: Keyword.get(opts, :single_use, false)
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
        :ok = schedule_idle_shutdown(state)
        {:reply, :ok, state}

      {:error, reason} ->
        {:stop, {:shutdown, reason}, state}
    end
  end

  def handle_call(:checkout, _from, state) do
    {:reply, {state.backend, state.backend_state, state.terminator}, state}
  end

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

  defp schedule_idle_shutdown(state) do
    %{terminator: terminator, idle_shutdown_after: idle, single_use: single_use} = state
    parent = self()
    ref = make_ref()

    {:ok, {_pid, monitor}} =
      state.backend.remote_spawn_monitor(state.backend_state, fn ->
        send(
          parent,
          {ref,
           FLAME.Terminator.schedule_idle_shutdown(terminator, idle, fn -> true end, single_use)}
        )
      end)

    receive do
      {^ref, result} ->
        Process.demonitor(monitor, [:flush])
        result

      {:DOWN, ^monitor, :process, _, reason} ->
        exit(reason)
    end
  end
end
