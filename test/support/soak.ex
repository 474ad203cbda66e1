defmodule FLAMEK8sBackend.Test.Soak do
  @moduledoc """
  The soak: many mixed, interleaved boots against the local control plane, each provoking one
  path (`@kinds`), with each outcome recorded as the backend returned it; and the leak checks
  it shares with the fault tests (runner pods and secrets are found by the backend's
  identifying label).
  """

  alias FLAMEK8sBackend.{BootError, Kube}
  alias FLAMEK8sBackend.Test.{ClusterCase, RemoteFuns}
  alias FLAMEK8sBackend.Test.Soak.ParentVM

  @kinds [
    :success,
    :missing_image,
    :unschedulable,
    :crash_on_start,
    :runner_vm_killed,
    :runner_killed_mid_boot,
    :idle_shutdown,
    :parent_vm_killed
  ]

  @phases [
    :connect,
    :parent_pod,
    :manifest,
    :create_secret,
    :create_pod,
    :scheduling,
    :container_start,
    :remote_up
  ]

  @doc "The kinds of boot a soak mixes."
  def kinds, do: @kinds

  @selector "app.kubernetes.io/managed-by=flame_k8s_backend"

  @doc "Names of the runner pods and secrets left in `namespace`."
  @spec runner_objects(Kube.t(), String.t()) :: %{pods: [String.t()], secrets: [String.t()]}
  def runner_objects(kube, namespace) do
    %{pods: names(kube, namespace, "pods"), secrets: names(kube, namespace, "secrets")}
  end

  @doc """
  Waits until no runner pod or secret is left in `namespace` (cleanup is asynchronous: a
  runner deletes itself, the reaper waits for its node to go down; no event announces the
  last delete), checking every 200 ms. Returns `:ok` or `{:leaked, objects}` after `timeout`.
  """
  @spec await_no_runner_objects(Kube.t(), String.t(), pos_integer()) ::
          :ok | {:leaked, map()}
  def await_no_runner_objects(kube, namespace, timeout) do
    deadline = System.monotonic_time(:millisecond) + timeout
    await_none(kube, namespace, deadline)
  end

  defp await_none(kube, namespace, deadline) do
    case runner_objects(kube, namespace) do
      %{pods: [], secrets: []} ->
        :ok

      left ->
        if System.monotonic_time(:millisecond) > deadline do
          {:leaked, left}
        else
          Process.sleep(200)
          await_none(kube, namespace, deadline)
        end
    end
  end

  # The soak restarts the API server under its own reads too: they try again for a minute.
  defp names(kube, namespace, resource, attempt \\ 1) do
    path =
      "/api/v1/namespaces/#{namespace}/#{resource}?labelSelector=#{URI.encode_www_form(@selector)}"

    case Kube.request(kube, "GET", path) do
      {:ok, %{"items" => items}} ->
        Enum.map(items, & &1["metadata"]["name"])

      {:error, reason} when attempt < 300 and elem(reason, 0) in [:connect, :timeout] ->
        Process.sleep(200)
        names(kube, namespace, resource, attempt + 1)
    end
  end

  @doc """
  Runs `boots` boots, `concurrency` at a time, kinds in a shuffled round robin (seeded by
  `seed`), with `opts` the backend options of a parent in `namespace`; with `restarts` > 0
  the kube-apiserver is SIGKILLed and restarted that many times, evenly spaced by completed
  boots, while the others are in flight. Returns one outcome map per boot (`:kind`,
  `:outcome`, `:reason` as returned, `:error`, `:pod`) and the restarts' durations in ms.
  """
  def run(kube, namespace, opts, boots, concurrency, seed, restarts \\ 0) do
    :rand.seed(:exsss, {seed, seed, seed})
    rounds = div(boots + length(@kinds) - 1, length(@kinds))
    kinds = for(_ <- 1..rounds, kind <- Enum.shuffle(@kinds), do: kind) |> Enum.take(boots)
    at = for i <- 1..restarts//1, do: div(boots * i, restarts + 1)
    restarter = spawn_link(fn -> restarter(at, 0, []) end)

    outcomes =
      kinds
      |> Task.async_stream(
        fn kind ->
          outcome = boot(kind, kube, namespace, opts)
          send(restarter, :boot_done)
          outcome
        end,
        max_concurrency: concurrency,
        timeout: 300_000,
        ordered: true
      )
      |> Enum.map(fn {:ok, outcome} -> outcome end)

    send(restarter, {:report, self()})
    receive do: ({:restarts, ^restarter, done} -> {outcomes, Enum.reverse(done)})
  end

  # Restarts run in a process of their own so that boots go on meanwhile.
  defp restarter(at, done_boots, done) do
    receive do
      :boot_done ->
        done_boots = done_boots + 1

        if done_boots in at do
          %{ms: ms} = FLAMEK8sBackend.Test.LocalCluster.restart_apiserver!()
          restarter(at, done_boots, [ms | done])
        else
          restarter(at, done_boots, done)
        end

      {:report, from} ->
        send(from, {:restarts, self(), done})
    end
  end

  @doc "Whether a boot failed on the API server being away (a restart): the transport error."
  def transport_failure?(%{error: %BootError{reason: {:connect, _}}}), do: true

  def transport_failure?(%{error: %BootError{reason: {:timeout, %{detail: d}}}}),
    do: is_binary(d) and d =~ ~r/client error|connect|API server/i

  def transport_failure?(%{outcome: outcome, reason: reason})
      when outcome in [:parent_boot_failed, :parent_restart_failed],
      do: reason =~ ~r/:connect|client error/

  def transport_failure?(_), do: false

  @doc "Whether an outcome is a boot failure that carries a known phase and a reason."
  def described_failure?(%{outcome: :boot_error, error: %BootError{phase: p, reason: r}}),
    do: p in @phases and r != nil

  def described_failure?(_), do: false

  @doc "The outcome each kind should have."
  def expected?(%{kind: :success, outcome: o}), do: o == :booted
  def expected?(%{kind: :runner_vm_killed, outcome: o}), do: o == :booted_then_vm_killed
  def expected?(%{kind: :idle_shutdown, outcome: o}), do: o == :idle_shutdown
  def expected?(%{kind: :runner_killed_mid_boot, outcome: o}), do: o == :killed_mid_boot
  def expected?(%{kind: :parent_vm_killed, outcome: o}), do: o == :parent_killed_and_restarted

  def expected?(%{kind: :missing_image, error: %BootError{reason: {:image_pull, _}}}), do: true
  def expected?(%{kind: :unschedulable, error: %BootError{reason: {:unschedulable, _}}}), do: true

  def expected?(%{kind: :crash_on_start, error: %BootError{reason: {:container_exited, e}}}),
    do: e.exit_code == 7

  def expected?(_), do: false

  defp boot(:idle_shutdown, _kube, _namespace, opts) do
    name = :"soak_pool_#{System.unique_integer([:positive])}"

    pool =
      ClusterCase.pool_spec(name, opts,
        max_concurrency: 1,
        idle_shutdown_after: ClusterCase.short_idle_ms()
      )

    {:ok, sup} = Supervisor.start_link([pool], strategy: :one_for_one)
    Process.unlink(sup)

    outcome =
      try do
        info = FLAME.call(name, &RemoteFuns.whereami/0, timeout: 60_000)
        Node.monitor(info.node, true)

        receive do
          {:nodedown, node} when node == info.node ->
            %{outcome: :idle_shutdown, reason: "runner node down after idle", pod: info.pod_name}
        after
          60_000 ->
            %{outcome: :idle_not_shut_down, reason: "still up after 60 s", pod: info.pod_name}
        end
      catch
        # FLAME exits the caller with the Runner's boot error.
        :exit, {%BootError{} = error, _call} ->
          %{outcome: :boot_error, error: error, reason: reason_text(error)}

        kind, reason ->
          %{outcome: :call_failed, reason: Exception.format(kind, reason) |> String.slice(0, 300)}
      end

    stop(sup)
    Map.merge(%{kind: :idle_shutdown, error: nil, pod: nil}, outcome)
  end

  # The parent is an `elixir` OS process of its own (this project's test build, same parent
  # pod): it boots a runner and is SIGKILLed. The runner's terminator sees its parent node go
  # down and stops the runner VM, which finishes the pod. The parent is started again after
  # Kubernetes' first crash back-off (10 s); its init sweeps the finished pod and its secret.
  # The restarted parent's boot timeout is that 10 s too, since the sweep leaves pods younger
  # than a boot timeout to a sibling boot's report (the first parent boots with the soak's).
  # (The simulated kubelet mounts no service account token, so the runner cannot delete
  # itself here as it would in a cluster whose Role allows it.)
  @parent_backoff 10_000

  defp boot(:parent_vm_killed, kube, namespace, opts) do
    {port, os_pid} = ParentVM.start(opts, "boot")

    case ParentVM.line(port) do
      {:ok, "BOOTED " <> names} ->
        [pod, runner] = String.split(names, " ")
        runner = String.to_atom(runner)
        Node.monitor(runner, true)
        {:ok, await} = Kube.await_pod(kube, namespace, pod, timeout: 60_000, report_ready: false)
        {_, 0} = System.cmd("kill", ["-KILL", os_pid])
        ParentVM.await_exit(port)
        killed = System.monotonic_time(:millisecond)
        ref = await.ref

        {outcome, reason} =
          receive do
            {:nodedown, ^runner} ->
              case await_finished(ref) do
                {:failed, _} ->
                  since_kill = System.monotonic_time(:millisecond) - killed
                  Process.sleep(max(@parent_backoff - since_kill, 0))

                  restart_parent_vm(
                    kube,
                    namespace,
                    pod,
                    Keyword.put(opts, :boot_timeout, @parent_backoff)
                  )

                other ->
                  {:pod_not_finished, inspect(other, limit: 5)}
              end
          after
            60_000 -> {:runner_outlived_parent, "runner node still up 60 s after the parent died"}
          end

        %{kind: :parent_vm_killed, outcome: outcome, reason: reason, error: nil, pod: pod}

      {:ok, "FAILED " <> error} ->
        {_, 0} = System.cmd("kill", ["-KILL", os_pid])
        ParentVM.await_exit(port)

        %{
          kind: :parent_vm_killed,
          outcome: :parent_boot_failed,
          reason: error,
          error: nil,
          pod: nil
        }

      {:error, why} ->
        %{kind: :parent_vm_killed, outcome: :parent_vm_failed, reason: why, error: nil, pod: nil}
    end
  end

  defp boot(:runner_killed_mid_boot, kube, namespace, opts) do
    test = self()
    opts = with_labels(opts, %{"sim-kubelet/start-delay-ms" => "60000"})

    {pid, monitor} =
      spawn_monitor(fn ->
        case FLAMEK8sBackend.init(opts) do
          {:ok, state} ->
            send(test, {:runner_name, self(), state.runner_name})
            FLAMEK8sBackend.remote_boot(state)

          {:error, error} ->
            send(test, {:init_failed, self(), error})
        end
      end)

    receive do
      {:init_failed, ^pid, error} ->
        receive do: ({:DOWN, ^monitor, :process, ^pid, _} -> :ok)

        %{
          kind: :runner_killed_mid_boot,
          outcome: :boot_error,
          error: error,
          reason: reason_text(error),
          pod: nil
        }

      {:runner_name, ^pid, name} ->
        await_pod_created(kube, namespace, name, 30_000)
        Process.exit(pid, :kill)
        receive do: ({:DOWN, ^monitor, :process, ^pid, _} -> :ok)

        %{
          kind: :runner_killed_mid_boot,
          outcome: :killed_mid_boot,
          reason: "FLAME Runner process killed while the pod was ContainerCreating",
          error: nil,
          pod: name
        }

      {:DOWN, ^monitor, :process, ^pid, reason} ->
        %{
          kind: :runner_killed_mid_boot,
          outcome: :init_crashed,
          reason: inspect(reason),
          error: nil,
          pod: nil
        }
    end
  end

  defp boot(kind, _kube, _namespace, opts) do
    parent = self()
    opts = kind_opts(kind, opts)

    # Its own process: it is the FLAME parent the runner's terminator watches, so the runner
    # ends when it does.
    {pid, monitor} =
      spawn_monitor(fn ->
        case FLAMEK8sBackend.init(opts) do
          {:ok, state} ->
            result = FLAMEK8sBackend.remote_boot(state)
            send(parent, {:result, self(), state.runner_name, strip(result)})

            with {:ok, _, state} <- result do
              after_boot(kind, state, parent)
            end

          {:error, _} = error ->
            send(parent, {:result, self(), nil, error})
        end
      end)

    receive do
      {:result, ^pid, name, {:error, error}} ->
        receive do: ({:DOWN, ^monitor, :process, ^pid, _} -> :ok)
        %{kind: kind, outcome: :boot_error, error: error, reason: reason_text(error), pod: name}

      {:result, ^pid, name, :ok} ->
        receive do
          {:after_boot, ^pid, outcome, reason} ->
            receive do: ({:DOWN, ^monitor, :process, ^pid, _} -> :ok)
            %{kind: kind, outcome: outcome, reason: reason, error: nil, pod: name}

          {:DOWN, ^monitor, :process, ^pid, reason} ->
            %{
              kind: kind,
              outcome: :crashed_after_boot,
              reason: inspect(reason),
              error: nil,
              pod: name
            }
        end

      {:DOWN, ^monitor, :process, ^pid, reason} ->
        %{kind: kind, outcome: :crashed, reason: inspect(reason), error: nil, pod: nil}
    end
  end

  defp await_finished(ref) do
    receive do
      {:flame_k8s, ^ref, {:running, _}} -> await_finished(ref)
      {:flame_k8s, ^ref, result} -> result
    end
  end

  # A parent whose sweep met the API server restarting sweeps again at a later init (at most
  # once a minute per VM): here, a parent VM started again, at most 5 times, and the report
  # says how many it took.
  defp restart_parent_vm(kube, namespace, pod, opts, attempt \\ 1) do
    {port, _} = ParentVM.start(opts, "sweep")
    line = ParentVM.line(port)
    ParentVM.await_exit(port)
    left = runner_objects(kube, namespace)
    swept? = line == {:ok, "SWEPT"} and pod not in left.pods and pod not in left.secrets

    cond do
      swept? ->
        {:parent_killed_and_restarted,
         "SIGKILLed after boot; runner VM ended itself; restarted parent's sweep deleted pod and secret" <>
           if(attempt > 1, do: " (parent started #{attempt} times)", else: "")}

      attempt < 5 ->
        restart_parent_vm(kube, namespace, pod, opts, attempt + 1)

      line != {:ok, "SWEPT"} ->
        {:parent_restart_failed, inspect(line)}

      true ->
        {:left_after_sweep,
         "SIGKILLed after boot; the restarted parent's sweep left its runner's pod or secret"}
    end
  end

  defp strip({:ok, _, _}), do: :ok
  defp strip(error), do: error

  defp after_boot(:success, state, parent) do
    {:ok, {pid, ref}} = FLAMEK8sBackend.remote_spawn_monitor(state, &RemoteFuns.whereami/0)

    receive do
      {:DOWN, ^ref, :process, ^pid, :normal} ->
        send(
          parent,
          {:after_boot, self(), :booted, "ran a function on #{state.runner_node_name}"}
        )
    after
      30_000 -> send(parent, {:after_boot, self(), :call_timed_out, "no answer in 30 s"})
    end
  end

  defp after_boot(:runner_vm_killed, state, parent) do
    runner = state.runner_node_name
    Node.monitor(runner, true)
    FLAMEK8sBackend.remote_spawn_monitor(state, RemoteFuns.halt_vm())

    receive do
      {:nodedown, ^runner} ->
        send(parent, {:after_boot, self(), :booted_then_vm_killed, "runner VM halted, node down"})
    after
      30_000 -> send(parent, {:after_boot, self(), :vm_not_down, "node still up after 30 s"})
    end
  end

  defp after_boot(kind, _state, parent),
    do: send(parent, {:after_boot, self(), :unexpectedly_booted, "#{kind} booted"})

  defp kind_opts(:success, opts), do: opts

  defp kind_opts(:runner_vm_killed, opts), do: opts

  defp kind_opts(:missing_image, opts) do
    container = %{"name" => "app", "image" => "registry.invalid/app:404"}
    Keyword.put(opts, :manifest, %{"spec" => %{"containers" => [container]}})
  end

  defp kind_opts(:unschedulable, opts) do
    opts
    |> with_labels(%{"sim-kubelet/fail" => "unschedulable"})
    |> Keyword.put(:unschedulable, :fail)
  end

  defp kind_opts(:crash_on_start, opts),
    do: with_labels(opts, %{"sim-kubelet/fail" => "crash", "sim-kubelet/exit-code" => "7"})

  defp with_labels(opts, labels),
    do: Keyword.put(opts, :manifest, %{"metadata" => %{"labels" => labels}})

  defp stop(sup) do
    ref = Process.monitor(sup)
    Process.exit(sup, :shutdown)
    receive do: ({:DOWN, ^ref, :process, ^sup, _} -> :ok)
  end

  # The pod's creation has no event the soak could subscribe to before it knows the name.
  defp await_pod_created(kube, namespace, name, timeout) do
    deadline = System.monotonic_time(:millisecond) + timeout

    Stream.repeatedly(fn -> Kube.get_pod(kube, namespace, name) end)
    |> Enum.find(fn result ->
      match?({:ok, _}, result) or System.monotonic_time(:millisecond) > deadline or
        (Process.sleep(50) && false)
    end)
  end

  @doc "A boot error's phase and reason on one line, as the backend returned them."
  def reason_text(%BootError{phase: phase, reason: reason}),
    do:
      "phase #{inspect(phase)}, reason #{inspect(summary(reason), limit: 8, printable_limit: 160)}"

  # The reason's data without its long texts (a scheduler message, a container log).
  defp summary({tag, %{} = map}),
    do: {tag, Map.take(map, [:image, :exit_code, :reason, :container, :detail, :waited_ms])}

  defp summary(other), do: other
end
