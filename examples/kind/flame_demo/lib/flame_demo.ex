defmodule FlameDemo do
  @moduledoc """
  What the kind and real-node tests run in the parent pod, through `bin/flame_demo rpc` or
  Erlang distribution. The closures are defined here, in compiled code, so the runner (the same
  release) has them too.
  """

  @doc "Runs a FLAME call and says where the caller and the function ran."
  def where do
    runner = FLAME.call(FlameDemo.Runner, &runner_info/0)
    %{parent: %{node: node(), pod: System.get_env("POD_NAME")}, runner: runner}
  end

  @doc "The node, pod name and pod IP of the VM it runs in."
  def runner_info do
    %{node: node(), pod: System.get_env("POD_NAME"), pod_ip: System.get_env("POD_IP")}
  end

  @doc "A computation on a runner."
  def square(x), do: FLAME.call(FlameDemo.Runner, fn -> x * x end)

  @doc """
  A call on `pool` that sends `notify` (a pid, here or on a node connected to this one)
  `{:running, runner_info()}` once it runs on the runner, then sleeps `ms` and returns
  `{:ok, {:done, runner_info()}}`; `{:exit, reason}` if the caller exits. For stopping a runner
  while a call is in flight.
  """
  def call_in_flight(pool, ms, notify) do
    # The runner reaches this VM, not necessarily notify's: the message goes through here.
    relay = spawn(fn -> receive do: ({:running, _} = msg -> send(notify, msg)) end)

    fun = fn ->
      send(relay, {:running, runner_info()})
      Process.sleep(ms)
      {:done, runner_info()}
    end

    caller(fn -> FLAME.call(pool, fun, timeout: ms + 60_000) end)
  end

  @doc """
  A call on `pool` that holds `mb` MiB of fresh memory: `{:ok, :allocated}`, or `{:exit, reason}`
  when its caller exits (a runner container over its memory limit is OOM-killed).
  """
  def allocate(pool, mb) do
    fun = fn ->
      chunks = for _ <- 1..mb, do: :binary.copy(<<0>>, 1_048_576)
      :erlang.phash2(chunks)
      :allocated
    end

    caller(fn -> FLAME.call(pool, fun, timeout: 60_000) end)
  end

  # Runs a FLAME call in a caller process of its own: `{:ok, result}`, or `{:exit, reason}` for
  # however that caller ended (FLAME links a caller to its call on the runner and kills the
  # callers of a runner that went down).
  defp caller(call) do
    {pid, ref} = spawn_monitor(fn -> exit({:flame_demo_result, call.()}) end)

    receive do
      {:DOWN, ^ref, :process, ^pid, {:flame_demo_result, result}} -> {:ok, result}
      {:DOWN, ^ref, :process, ^pid, reason} -> {:exit, reason}
    end
  end

  @doc """
  A call on the pool whose image cannot be pulled. Returns `{:error, message}` with the
  backend's `FLAMEK8sBackend.BootError` message as soon as a boot has failed, or
  `{:error, {:no_boot_failure, reason}}` if none was seen within `timeout` ms.
  """
  def bad_image_call(timeout \\ 90_000) do
    call = fn ->
      FLAME.call(FlameDemo.BadImageRunner, fn -> :unreachable end, timeout: timeout)
    end

    case watch_boot(FlameDemo.BadImageRunner, call, timeout) do
      {:error, %FLAMEK8sBackend.BootError{} = error} -> {:error, Exception.message(error)}
      {:ok, result} -> {:error, {:no_boot_failure, {:returned, result}}}
      other -> other
    end
  end

  @doc """
  Runs `fun` (default: `runner_info/0`) on a runner of a pool started for this call alone, whose
  backend options are `backend_opts`, then stops the
  pool; its runner goes when idle (`:idle_shutdown_after`, default 5 s). For trying one backend
  setting from outside, e.g. an unschedulable runner:

      bin/flame_demo rpc 'FlameDemo.Cli.print(FlameDemo.call_with(unschedulable: :fail,
        manifest: %{"spec" => %{"nodeSelector" => %{"disk" => "none"}}}))'

  Returns `{:ok, result}`, `{:error, %FLAMEK8sBackend.BootError{}}` as soon as a boot has failed
  (its `phase` and `reason`; `Exception.message/1` reads well), or
  `{:error, {:no_boot_failure, reason}}`. Options: `:fun`,
  `:timeout` (boot and call, default 60_000), `:idle_shutdown_after`.
  """
  def call_with(backend_opts, opts \\ []) do
    timeout = Keyword.get(opts, :timeout, 60_000)
    fun = Keyword.get(opts, :fun, &runner_info/0)
    name = :"Elixir.FlameDemo.Pool#{System.unique_integer([:positive])}"

    pool =
      {FLAME.Pool,
       name: name,
       backend: {FLAMEK8sBackend, backend_opts},
       min: 0,
       max: 1,
       boot_timeout: timeout,
       idle_shutdown_after: Keyword.get(opts, :idle_shutdown_after, 5_000),
       on_grow_end: &FlameDemo.BootFailures.on_grow_end/2}

    {:ok, _} = Supervisor.start_child(FlameDemo.Supervisor, Supervisor.child_spec(pool, id: name))

    try do
      watch_boot(name, fn -> FLAME.call(name, fun, timeout: timeout) end, timeout)
    after
      Supervisor.terminate_child(FlameDemo.Supervisor, name)
      Supervisor.delete_child(FlameDemo.Supervisor, name)
    end
  end

  # Runs `call` in a process of its own and returns {:ok, its result}, or {:error, boot_error} as
  # soon as `pool` reports a failed boot to FlameDemo.BootFailures (or the call exits with one).
  defp watch_boot(pool, call, timeout) do
    FlameDemo.BootFailures.clear(pool)
    deadline = System.monotonic_time(:millisecond) + timeout
    {pid, ref} = spawn_monitor(fn -> exit({:flame_demo_result, call.()}) end)
    await_boot_failure(pool, pid, ref, deadline)
  end

  defp await_boot_failure(pool, pid, ref, deadline) do
    case FlameDemo.BootFailures.last(pool) do
      nil ->
        receive do
          {:DOWN, ^ref, :process, ^pid, {:flame_demo_result, result}} -> {:ok, result}
          {:DOWN, ^ref, :process, ^pid, reason} -> describe(reason)
        after
          200 ->
            if System.monotonic_time(:millisecond) > deadline do
              Process.exit(pid, :kill)
              {:error, {:no_boot_failure, :timeout}}
            else
              await_boot_failure(pool, pid, ref, deadline)
            end
        end

      reason ->
        Process.demonitor(ref, [:flush])
        Process.exit(pid, :kill)
        describe(reason)
    end
  end

  defp describe(reason) do
    case find_boot_error(reason) do
      %FLAMEK8sBackend.BootError{} = error -> {:error, error}
      nil -> {:error, {:no_boot_failure, reason}}
    end
  end

  # FLAME wraps the backend's error in exit reasons whose shape differs between versions.
  defp find_boot_error(%FLAMEK8sBackend.BootError{} = error), do: error

  defp find_boot_error(tuple) when is_tuple(tuple),
    do: tuple |> Tuple.to_list() |> find_boot_error()

  defp find_boot_error(list) when is_list(list), do: Enum.find_value(list, &find_boot_error/1)

  defp find_boot_error(%{} = map) when not is_struct(map),
    do: map |> Map.values() |> find_boot_error()

  defp find_boot_error(_), do: nil
end
