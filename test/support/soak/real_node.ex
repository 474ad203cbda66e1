defmodule FLAMEK8sBackend.Test.Soak.RealNode do
  @moduledoc """
  The soak on the real node (tools/realnode): mixed, interleaved boots from a parent in the
  cluster (the demo app of examples/kubernetes, as a user deploys it), with real faults under
  them:

    * the parent VM SIGKILLed mid-boot (its container's init process), during the create
      (as soon as the runner's name is chosen) or during the await (once its pod exists);
      the kubelet restarts it in the same pod
    * a booted runner's container SIGKILLed
    * the kubelet and containerd restarted (TERM, then started again) and the kube-apiserver
      SIGKILLed and started again (`tools/realnode/restart`), evenly spaced over the boots,
      while others are in flight

  Afterwards, once the restarted parent's sweep has run, the runner pods and Secrets left are
  counted with the admin's credentials.
  """

  alias FLAMEK8sBackend.{BootError, Kube}
  alias FLAMEK8sBackend.Test.RealNode
  alias FLAMEK8sBackend.Test.Soak

  @kinds [
    :success,
    :missing_image,
    :unschedulable,
    :crash_on_start,
    :runner_container_killed,
    :parent_killed_in_create,
    :parent_killed_in_await
  ]

  # {name, tools/realnode/restart arguments}
  @faults [
    {:kubelet_restart, ["kubelet"]},
    {:containerd_restart, ["containerd"]},
    {:apiserver_sigkill, ["--kill", "kube-apiserver"]}
  ]

  @managed_by "app.kubernetes.io/managed-by=flame_k8s_backend"
  @boot_timeout 20_000

  @doc "The kinds of boot the real-node soak mixes."
  def kinds, do: @kinds

  @doc "The node-level faults, in the order they are injected."
  def faults, do: Enum.map(@faults, &elem(&1, 0))

  @doc "The runners' boot timeout (ms)."
  def boot_timeout, do: @boot_timeout

  @doc """
  Deploys the demo app (examples/kubernetes as examples/kind/kind.sh adapts it) into a new
  namespace, with `list` on `secrets` added to the parent's Role (the example's optional rule:
  the sweep then also finds Secrets whose pod was never created). Returns the context:
  `:kube` (admin), `:namespace`, `:cookie`.
  """
  def deploy_demo!(prefix) do
    kube = RealNode.kube!()
    ns = "#{prefix}-#{System.unique_integer([:positive])}"
    RealNode.create_namespace!(kube, ns)
    dir = Path.join(System.tmp_dir!(), ns)
    %{files: files, cookie: cookie} = RealNode.render_demo_manifests!(dir)
    RealNode.create_manifests!(files, ns)
    File.rm_rf!(dir)

    rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/#{ns}"

    {:ok, _} =
      Kube.request(kube, "POST", rbac <> "/roles",
        body: %{
          "metadata" => %{"name" => "soak-secrets-list"},
          "rules" => [%{"apiGroups" => [""], "resources" => ["secrets"], "verbs" => ["list"]}]
        }
      )

    {:ok, _} =
      Kube.request(kube, "POST", rbac <> "/rolebindings",
        body: %{
          "metadata" => %{"name" => "soak-secrets-list"},
          "roleRef" => %{
            "apiGroup" => "rbac.authorization.k8s.io",
            "kind" => "Role",
            "name" => "soak-secrets-list"
          },
          "subjects" => [%{"kind" => "ServiceAccount", "name" => "flame-demo", "namespace" => ns}]
        }
      )

    %{kube: kube, namespace: ns, cookie: String.to_atom(cookie)}
  end

  @doc """
  The demo's parent pod, running and ready, with its VM connected to this one (hidden);
  `min_restarts` waits for a restarted VM. Returns `%{pod, node, name, restarts}`.
  """
  def parent!(ctx, min_restarts \\ 0, timeout \\ 180_000) do
    RealNode.wait_until!(
      fn ->
        with {:ok, pods} <-
               Kube.list_pods(ctx.kube, ctx.namespace, label_selector: "app=flame-demo"),
             %{} = pod <- Enum.find(pods, &ready?(&1, min_restarts)),
             node = :"flame_demo@#{pod["status"]["podIP"]}",
             true <- :erlang.set_cookie(node, ctx.cookie),
             true <- :net_kernel.hidden_connect_node(node),
             true <- started?(node) do
          %{pod: pod, node: node, name: pod["metadata"]["name"], restarts: restarts(pod)}
        else
          _ -> false
        end
      end,
      timeout,
      "the demo parent in #{ctx.namespace} (restarts >= #{min_restarts})"
    )
  end

  defp ready?(pod, min_restarts) do
    pod["metadata"]["deletionTimestamp"] == nil and pod["status"]["phase"] == "Running" and
      Enum.all?(pod["status"]["containerStatuses"] || [false], &(&1 && &1["ready"])) and
      restarts(pod) >= min_restarts
  end

  defp restarts(pod),
    do: Enum.sum(Enum.map(pod["status"]["containerStatuses"] || [], & &1["restartCount"]))

  defp started?(node) do
    match?({:ok, _}, :erpc.call(node, Application, :ensure_all_started, [:flame_demo], 10_000))
  catch
    _, _ -> false
  end

  @doc """
  Runs `boots` boots, `concurrency` at a time, kinds in a shuffled round robin (seed `seed`),
  and the node faults (`faults/0`, cycled, `fault_count` in all) evenly spaced by boots
  started; a boot whose parent VM was killed under it by another boot is tried again (at most
  3 tries). Returns `%{outcomes, faults}`: one outcome per try.
  """
  def run(ctx, boots, concurrency, seed, fault_count) do
    :rand.seed(:exsss, {seed, seed, seed})
    rounds = div(boots + length(@kinds) - 1, length(@kinds))
    kinds = for(_ <- 1..rounds, kind <- Enum.shuffle(@kinds), do: kind) |> Enum.take(boots)

    at =
      for i <- 1..fault_count//1,
          into: %{},
          do: {max(div(boots * i, fault_count + 1), 1), Enum.at(@faults, rem(i - 1, 3))}

    {:ok, log} = Agent.start_link(fn -> %{in_flight: 0, faults: [], tasks: []} end)

    outcomes =
      kinds
      |> Enum.with_index(1)
      |> Task.async_stream(
        fn {kind, i} ->
          if fault = at[i], do: inject(log, fault)
          attempts(kind, ctx, log, 1)
        end,
        max_concurrency: concurrency,
        timeout: 600_000,
        ordered: true
      )
      |> Enum.flat_map(fn {:ok, outcomes} -> outcomes end)

    # The faults still running (each a process of its own, started by a boot's task).
    for pid <- Agent.get(log, & &1.tasks) do
      ref = Process.monitor(pid)
      receive do: ({:DOWN, ^ref, :process, ^pid, _} -> :ok)
    end

    faults = Agent.get(log, & &1.faults) |> Enum.reverse()
    Agent.stop(log)
    %{outcomes: outcomes, faults: faults}
  end

  defp now, do: System.monotonic_time(:millisecond)

  # A boot whose parent VM another boot killed under it is tried again (up to 3 times), so that
  # every kind also gets to its own outcome in a short run; each try is an outcome of its own.
  defp attempts(kind, ctx, log, attempt) do
    Agent.update(log, &%{&1 | in_flight: &1.in_flight + 1})
    started = now()
    outcome = boot(kind, ctx, log)
    Agent.update(log, &%{&1 | in_flight: &1.in_flight - 1})
    outcome = Map.merge(outcome, %{kind: kind, started: started, ended: now(), try: attempt})

    if outcome.outcome == :parent_gone and attempt < 3,
      do: [outcome | attempts(kind, ctx, log, attempt + 1)],
      else: [outcome]
  end

  # A node fault runs beside the boots (they go on meanwhile); it starts a moment after the boot
  # it is attached to, so that boot and the ones in flight are mid-boot when it hits.
  defp inject(log, {name, args}) do
    pid =
      spawn(fn ->
        Process.sleep(300)
        in_flight = Agent.get(log, & &1.in_flight)
        started = now()

        {out, status} =
          System.cmd(
            Path.expand("../../../tools/realnode/restart", __DIR__),
            ["--state-dir", RealNode.info().state_dir | args],
            stderr_to_stdout: true
          )

        last = out |> String.split("\n", trim: true) |> List.last()

        down_ms =
          case Regex.run(~r/down_ms=(\d+)/, last || "") do
            [_, ms] -> String.to_integer(ms)
            nil -> nil
          end

        fault = %{
          fault: name,
          ok: status == 0,
          line: last,
          down_ms: down_ms,
          in_flight: in_flight,
          from: started,
          to: now()
        }

        Agent.update(log, &%{&1 | faults: [fault | &1.faults]})
      end)

    Agent.update(log, &%{&1 | tasks: [pid | &1.tasks]})
  end

  # Evaluated in the parent VM (the demo release: no test code there): one boot as FLAME makes
  # it, from a process that is the runner's owner; it reports the runner's name as soon as it
  # is chosen, and for :hold waits for the runner node to go down before it returns.
  @boot_code """
  case FLAMEK8sBackend.init(opts) do
    {:error, e} ->
      {:init_error, e}

    {:ok, state} ->
      send(test, {:runner_name, ref, state.runner_name})

      case FLAMEK8sBackend.remote_boot(state) do
        {:ok, _, state} ->
          runner = state.runner_node_name
          ran_on = :erpc.call(runner, :erlang, :node, [], 15_000)

          if hold do
            Node.monitor(runner, true)
            send(test, {:booted, ref, state.runner_name})
            receive do
              {:nodedown, ^runner} -> :ok
            after
              60_000 -> :ok
            end
          end

          {:booted, state.runner_name, ran_on}

        {:error, e} ->
          {:boot_error, state.runner_name, e}
      end
  end
  """

  defp boot(kind, ctx, log) do
    parent = parent!(ctx)
    test = self()
    ref = make_ref()

    binding = [
      opts: kind_opts(kind),
      test: test,
      ref: ref,
      hold: kind == :runner_container_killed
    ]

    task =
      Task.async(fn ->
        try do
          {result, _} =
            :erpc.call(parent.node, Code, :eval_string, [@boot_code, binding], 180_000)

          result
        catch
          :error, {:erpc, :noconnection} -> :parent_gone
          class, reason -> {:rpc_failed, Exception.format(class, reason) |> String.slice(0, 300)}
        end
      end)

    follow(kind, ctx, parent, ref, task, log)
  end

  # The parent-kill kinds: SIGKILL the parent VM at the chosen moment, wait for the kubelet to
  # start it again in the same pod. The leftovers are the sweep's.
  defp follow(kind, ctx, parent, ref, task, log)
       when kind in [:parent_killed_in_create, :parent_killed_in_await] do
    receive do
      {:runner_name, ^ref, name} ->
        if kind == :parent_killed_in_await, do: await_pod_exists(ctx, name, 30_000)
        killed_at = now()
        killed = kill_container_of(ctx, parent.name)
        result = Task.await(task, 200_000)

        back =
          case killed do
            {:killed, restarts} -> parent!(ctx, restarts + 1)
            :not_running -> parent!(ctx)
          end

        # Until the parent is back: a boot started meanwhile may have reached the dying VM.
        if match?({:killed, _}, killed) do
          kill = %{fault: kind, ok: true, from: killed_at, to: now()}
          Agent.update(log, &%{&1 | faults: [kill | &1.faults]})
        end

        pod? = created?("pods", ctx.namespace, name)
        secret? = created?("secrets", ctx.namespace, name)

        cond do
          # Its parent VM was gone already (another boot's kill), or the boot had ended before
          # the kill landed: it ended as it did.
          killed == :not_running or result != :parent_gone ->
            describe(result)

          back.name != parent.name ->
            %{outcome: :parent_pod_replaced, reason: back.name, pod: name, error: nil}

          true ->
            %{
              outcome: :parent_killed_and_restarted,
              reason:
                "SIGKILLed #{moment(kind)}; restarted in the same pod (restarts #{back.restarts}); " <>
                  "committed before or after: secret #{secret?}, pod #{pod?}",
              pod: name,
              error: nil
            }
        end
    after
      60_000 ->
        # No name within a minute: another boot's kill took its parent VM first (then it is
        # that boot's outcome, :parent_gone), or something this soak did not foresee.
        case describe(Task.await(task, 200_000)) do
          %{outcome: :parent_gone} = gone -> gone
          other -> Map.put(other, :outcome, :no_runner_name)
        end
    end
  end

  defp follow(:runner_container_killed, ctx, _parent, ref, task, _log) do
    receive do
      {:booted, ^ref, name} ->
        kill_container_of(ctx, name)
        result = Task.await(task, 200_000)
        gone? = await_gone(ctx, name, 90_000)

        case {result, gone?} do
          {{:booted, ^name, _}, true} ->
            %{
              outcome: :container_killed_and_reaped,
              reason: "runner container SIGKILLed after boot; its pod deleted",
              pod: name,
              error: nil
            }

          {_, false} ->
            %{
              outcome: :pod_left,
              reason: "pod still there 90 s after the kill",
              pod: name,
              error: nil
            }

          {other, true} ->
            describe(other)
        end
    after
      # No boot within the boot timeout plus its cleanup: the result says why.
      60_000 -> describe(Task.await(task, 200_000))
    end
  end

  defp follow(_kind, _ctx, _parent, _ref, task, _log), do: describe(Task.await(task, 200_000))

  defp describe({:booted, name, _ran_on}),
    do: %{outcome: :booted, reason: "booted; ran a function on the runner", pod: name, error: nil}

  defp describe({:boot_error, name, %BootError{} = e}),
    do: %{outcome: :boot_error, reason: Soak.reason_text(e), pod: name, error: e}

  defp describe({:init_error, %BootError{} = e}),
    do: %{outcome: :init_error, reason: Soak.reason_text(e), pod: nil, error: e}

  defp describe(:parent_gone),
    do: %{
      outcome: :parent_gone,
      reason: "its parent VM was SIGKILLed under it (another boot's fault)",
      pod: nil,
      error: nil
    }

  defp describe(other),
    do: %{outcome: :unexpected, reason: inspect(other, limit: 10), pod: nil, error: nil}

  defp moment(:parent_killed_in_create), do: "as soon as the runner's name was chosen (create)"
  defp moment(:parent_killed_in_await), do: "once its runner pod existed (await)"

  defp kind_opts(kind) do
    base = [labels: %{"excluster" => "flame"}, boot_timeout: @boot_timeout]

    case kind do
      :missing_image ->
        Keyword.put(base, :manifest, %{
          "spec" => %{"containers" => [%{"image" => "registry.invalid/flame/app:404"}]}
        })

      :unschedulable ->
        base
        |> Keyword.put(:unschedulable, :fail)
        |> Keyword.put(:manifest, %{
          "spec" => %{"nodeSelector" => %{"flame-k8s-backend.io/no-such-node" => "x"}}
        })

      :crash_on_start ->
        container = %{
          "image" => RealNode.info().busybox_image,
          "imagePullPolicy" => "Never",
          "command" => ["/bin/sh", "-c", "echo soak: exit 7 >&2; exit 7"]
        }

        Keyword.put(base, :manifest, %{"spec" => %{"containers" => [container]}})

      # A Secret of the runner's own too: a parent killed between its create and the pod's
      # leaves one that only the sweep can find.
      k when k in [:parent_killed_in_create, :parent_killed_in_await] ->
        Keyword.put(base, :secret_env, %{"SOAK_SECRET" => "soak"})

      _ ->
        base
    end
  end

  # SIGKILL to the running container's first process (PID 1 of its pid namespace: the whole
  # container goes), by its PID in containerd's state dir: `ctr tasks kill` takes seconds under
  # load. The pod is read again first: a parent killed by another boot has a new container.
  # Returns {:killed, restart count before the kill} or :not_running.
  defp kill_container_of(ctx, name) do
    with {:ok, pod} <- get_pod(ctx, name),
         %{"containerID" => "containerd://" <> id} = status <-
           Enum.find(pod["status"]["containerStatuses"] || [], &(&1["state"]["running"] != nil)),
         {:ok, pid} <- File.read(init_pid_file(id)),
         {_, 0} <- System.cmd("kill", ["-KILL", String.trim(pid)], stderr_to_stdout: true) do
      {:killed, status["restartCount"]}
    else
      _ -> :not_running
    end
  end

  defp init_pid_file(id) do
    Path.join([
      RealNode.info().state_dir,
      "containerd/state/io.containerd.runtime.v2.task/k8s.io",
      id,
      "init.pid"
    ])
  end

  defp get_pod(ctx, name, attempt \\ 1) do
    case Kube.get_pod(ctx.kube, ctx.namespace, name) do
      {:error, {kind, _}} when kind in [:connect, :timeout] and attempt < 300 ->
        Process.sleep(200)
        get_pod(ctx, name, attempt + 1)

      other ->
        other
    end
  end

  # No event announces a pod's creation to someone who did not make it: poll.
  defp await_pod_exists(ctx, name, timeout) do
    deadline = now() + timeout

    Stream.repeatedly(fn -> Kube.get_pod(ctx.kube, ctx.namespace, name) end)
    |> Enum.find(fn result ->
      match?({:ok, _}, result) or now() > deadline or (Process.sleep(20) && false)
    end)
  end

  defp await_gone(ctx, name, timeout) do
    deadline = now() + timeout

    Stream.repeatedly(fn -> get_pod(ctx, name) end)
    |> Enum.find_value(fn
      {:error, {:api, 404, _, _}} -> true
      _ -> if now() > deadline, do: false, else: Process.sleep(200) && nil
    end)
  end

  # Whether the API server committed a create of that object (its audit log).
  defp created?(resource, namespace, name) do
    %{"verb" => "create", "resource" => resource, "namespace" => namespace, "name" => name}
    |> RealNode.audit_events()
    |> Enum.any?(&(&1["code"] in 200..299))
  end

  @doc """
  Waits until the sweep can have taken everything (its age rule: an object's boot timeout
  plus 30 s; at most one sweep a minute per parent VM), has the parent run one more sweep
  (`init/1` without a boot), and counts, as admin, the runner pods and Secrets left: by the
  backend's label and by name. Returns `{:ok | {:leaked, objects}, waited_ms, objects}`, the
  last the runner pods and Secrets there were just before that sweep.
  """
  def final_sweep(ctx) do
    started = now()
    # The sweep's own age rule is the event here: nothing announces "old enough".
    Process.sleep(max(@boot_timeout + 35_000, 61_000))
    parent = parent!(ctx)

    before =
      merge(Soak.runner_objects(ctx.kube, ctx.namespace), leftovers_by_name(ctx, parent.name))

    {{:ok, _}, _} =
      :erpc.call(
        parent.node,
        Code,
        :eval_string,
        ["FLAMEK8sBackend.init(opts)", [opts: kind_opts(:success)]],
        120_000
      )

    result = Soak.await_no_runner_objects(ctx.kube, ctx.namespace, 90_000)
    by_name = leftovers_by_name(ctx, parent.name)

    result =
      case {result, by_name} do
        {:ok, %{pods: [], secrets: []}} -> :ok
        {:ok, left} -> {:leaked, left}
        {{:leaked, left}, more} -> {:leaked, merge(left, more)}
      end

    {result, now() - started, before}
  end

  defp merge(a, b),
    do: %{pods: Enum.uniq(a.pods ++ b.pods), secrets: Enum.uniq(a.secrets ++ b.secrets)}

  # Runner names are `<parent pod>-flame-<random>`: objects of that shape, label or not.
  defp leftovers_by_name(ctx, parent_name) do
    prefix = parent_name <> "-flame-"

    for resource <- ["pods", "secrets"], into: %{} do
      {:ok, %{"items" => items}} =
        Kube.request(ctx.kube, "GET", "/api/v1/namespaces/#{ctx.namespace}/#{resource}")

      names =
        for item <- items,
            name = item["metadata"]["name"],
            String.starts_with?(name, prefix),
            do: name

      {String.to_atom(resource), names}
    end
  end

  @doc "The runner pods with the backend's label, as admin (for a leak report's detail)."
  def runner_pods(ctx) do
    {:ok, pods} = Kube.list_pods(ctx.kube, ctx.namespace, label_selector: @managed_by)
    pods
  end

  @doc "The outcome each kind should have."
  def expected?(%{kind: :success, outcome: o}), do: o == :booted

  def expected?(%{kind: :runner_container_killed, outcome: o}),
    do: o == :container_killed_and_reaped

  def expected?(%{kind: k, outcome: o})
      when k in [:parent_killed_in_create, :parent_killed_in_await],
      do: o == :parent_killed_and_restarted

  def expected?(%{kind: :missing_image, error: %BootError{reason: {:image_pull, _}}}), do: true
  def expected?(%{kind: :unschedulable, error: %BootError{reason: {:unschedulable, _}}}), do: true

  def expected?(%{kind: :crash_on_start, error: %BootError{reason: {:container_exited, e}}}),
    do: e.exit_code == 7

  def expected?(_), do: false

  @doc """
  Whether a boot that did not have its kind's outcome met a fault: it ran while a node
  fault or a parent kill happened (and a failure carries a phase and a reason).
  """
  def explained_by_fault?(outcome, faults) do
    overlapped? =
      Enum.any?(faults, fn f -> f.from <= outcome.ended and f.to >= outcome.started end)

    overlapped? and
      (outcome.outcome in [:parent_gone] or
         (outcome.outcome in [:boot_error, :init_error] and described?(outcome.error)))
  end

  defp described?(%BootError{phase: p, reason: r}), do: p != nil and r != nil
  defp described?(_), do: false

  @doc "The report in Markdown: totals, outcomes by kind and reason, faults, leaks."
  def report(outcomes, faults, leaks, meta) do
    rows =
      outcomes
      |> Enum.group_by(&{&1.kind, &1.outcome, row_reason(&1)})
      |> Enum.sort()
      |> Enum.map(fn {{kind, outcome, reason}, list} ->
        "| #{kind} | #{outcome} | #{length(list)} | #{String.replace(reason, "|", "\\|")} |"
      end)

    expected = Enum.count(outcomes, &expected?/1)
    explained = Enum.count(outcomes, &(not expected?(&1) and explained_by_fault?(&1, faults)))
    failures = Enum.filter(outcomes, &(&1.outcome in [:boot_error, :init_error]))
    node_faults = Enum.filter(faults, &(&1.fault in faults()))
    kills = Enum.reject(faults, &(&1.fault in faults()))

    fault_rows =
      Enum.map(node_faults, fn f ->
        "| #{f.fault} | #{f.ok} | #{f.down_ms || "-"} | #{f.in_flight} | #{f.line} |"
      end)

    by_kind = Enum.frequencies_by(outcomes, & &1.kind)

    """
    # Soak on the real node: #{Enum.count(outcomes, &(&1.try == 1))} boots

    #{Enum.map_join(meta, "\n", fn {k, v} -> "- #{k}: #{v}" end)}
    - tries: #{length(outcomes)} for #{Enum.count(outcomes, &(&1.try == 1))} boots (a boot whose parent VM another boot killed under it is tried again, at most 3 times)
    - tries per kind: #{Enum.map_join(@kinds, ", ", &"#{&1} #{by_kind[&1] || 0}")}
    - tries with their kind's outcome: #{expected} of #{length(outcomes)}; of the others, #{explained} ran while a fault hit (the table says how they ended), #{length(outcomes) - expected - explained} unexplained
    - boot failures: #{length(failures)}, each with a phase and a reason: #{Enum.count(failures, &described?(&1.error))}
    - parent VM SIGKILLed mid-boot and restarted in its pod: #{length(kills)} (during the create #{Enum.count(kills, &(&1.fault == :parent_killed_in_create))}, during the await #{Enum.count(kills, &(&1.fault == :parent_killed_in_await))})
    - node faults survived: #{Enum.count(node_faults, & &1.ok)} of #{length(node_faults)} (#{Enum.map_join(faults(), ", ", fn n -> "#{n} #{Enum.count(node_faults, &(&1.fault == n and &1.ok))}" end)})
    - left at the end, counted as admin after the final sweep: #{leak_text(leaks)}

    | kind | outcome | tries | reason |
    |---|---|---|---|
    #{Enum.join(rows, "\n")}

    | node fault | ok | down (ms) | boots in flight | restart's last line |
    |---|---|---|---|---|
    #{Enum.join(fault_rows, "\n")}
    """
  end

  defp row_reason(%{error: %BootError{phase: phase, reason: reason}}) do
    reason =
      case reason do
        {:unschedulable, _} -> :unschedulable
        {:image_pull, m} -> {:image_pull, Map.take(m, [:image, :reason])}
        {:container_exited, m} -> {:container_exited, Map.take(m, [:exit_code, :reason])}
        {:timeout, m} -> {:timeout, Map.take(m, [:detail])}
        {:api, code, status, _} -> {:api, code, status}
        other -> other
      end

    "phase #{inspect(phase)}, reason #{inspect(reason, printable_limit: 160)}"
  end

  defp row_reason(%{reason: reason}),
    do:
      reason
      |> String.replace(~r/flame-demo-[\w-]+/, "*")
      |> String.replace(~r/restarts \d+/, "restarts N")
      |> String.replace(~r/\s+/, " ")

  defp leak_text(:ok), do: "0 runner pods, 0 runner Secrets"

  defp leak_text({:leaked, %{pods: pods, secrets: secrets}}),
    do:
      "#{length(pods)} runner pods #{inspect(pods)}, #{length(secrets)} runner Secrets #{inspect(secrets)}"
end
