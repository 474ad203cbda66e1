defmodule FLAME.Pool do
  @moduledoc """
  A minimal pool: boots runners on demand (up to `:max`, each taking `:max_concurrency` calls
  at once), queues callers when all are busy, and forgets runners that stop. Boots run
  concurrently, outside the pool process. `:min` must be 0 in this stand-in.

  Options: `:name` (required), `:backend` (required), `:max`, `:max_concurrency`,
  `:boot_timeout`, `:idle_shutdown_after`, `:single_use`, `:log`, `:min`.
  """
  use GenServer

  def child_spec(opts) do
    %{id: Keyword.fetch!(opts, :name), start: {__MODULE__, :start_link, [opts]}}
  end

  def start_link(opts),
    do: GenServer.start_link(__MODULE__, opts, name: Keyword.fetch!(opts, :name))

  def checkout(pool), do: GenServer.call(pool, :checkout, :infinity)
  def checkin(pool, runner), do: GenServer.cast(pool, {:checkin, runner})

  @impl true
  def init(opts) do
    if Keyword.get(opts, :min, 0) != 0,
      do: raise(ArgumentError, "the FLAME stand-in supports only min: 0")

    # As FLAME's pool does: the backend always gets the pool's :log (default false) and its
    # terminator supervisor, and a bare backend module becomes {module, those options}.
    defaults = [terminator_sup: nil, log: Keyword.get(opts, :log, false)]

    backend =
      case Keyword.fetch!(opts, :backend) do
        {backend, backend_opts} -> {backend, Keyword.merge(backend_opts, defaults)}
        backend -> {backend, defaults}
      end

    runner_opts =
      opts
      |> Keyword.take([:boot_timeout, :idle_shutdown_after, :single_use, :log])
      |> Keyword.put_new(:boot_timeout, 30_000)
      |> Keyword.put(:backend, backend)

    {:ok,
     %{
       runner_opts: runner_opts,
       max: Keyword.get(opts, :max, 1),
       max_concurrency: Keyword.get(opts, :max_concurrency, 100),
       runners: %{},
       booting: 0,
       waiting: :queue.new()
     }}
  end

  @impl true
  def handle_call(:checkout, from, state) do
    {:noreply, serve(%{state | waiting: :queue.in(from, state.waiting)})}
  end

  @impl true
  def handle_cast({:checkin, runner}, state) do
    runners = Map.update(state.runners, runner, 0, &max(&1 - 1, 0))
    {:noreply, serve(%{state | runners: runners})}
  end

  @impl true
  def handle_info({:booted, from, {:ok, runner}}, state) do
    Process.monitor(runner)
    GenServer.reply(from, {:ok, runner})

    {:noreply,
     serve(%{state | booting: state.booting - 1, runners: Map.put(state.runners, runner, 1)})}
  end

  def handle_info({:booted, from, {:error, reason}}, state) do
    GenServer.reply(from, {:error, reason})
    {:noreply, serve(%{state | booting: state.booting - 1})}
  end

  def handle_info({:DOWN, _ref, :process, runner, _reason}, state) do
    {:noreply, serve(%{state | runners: Map.delete(state.runners, runner)})}
  end

  defp serve(state) do
    case :queue.peek(state.waiting) do
      :empty ->
        state

      {:value, from} ->
        case Enum.find(state.runners, fn {_pid, load} -> load < state.max_concurrency end) do
          {runner, load} ->
            GenServer.reply(from, {:ok, runner})

            serve(%{
              state
              | waiting: :queue.drop(state.waiting),
                runners: Map.put(state.runners, runner, load + 1)
            })

          nil when map_size(state.runners) + state.booting < state.max ->
            boot(from, state.runner_opts)
            serve(%{state | waiting: :queue.drop(state.waiting), booting: state.booting + 1})

          nil ->
            state
        end
    end
  end

  defp boot(from, runner_opts) do
    pool = self()

    spawn(fn ->
      result =
        with {:ok, runner} <- FLAME.Runner.start(runner_opts) do
          try do
            :ok = FLAME.Runner.remote_boot(runner)
            {:ok, runner}
          catch
            :exit, {reason, _} -> {:error, reason}
          end
        end

      send(pool, {:booted, from, result})
    end)
  end
end
