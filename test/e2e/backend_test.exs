defmodule FLAMEK8sBackend.BackendE2ETest do
  # End to end: this VM is the distributed FLAME parent backed by a parent pod object; runner
  # pods are BEAM nodes started by the simulated kubelet from the runner manifest as built.
  use FLAMEK8sBackend.Test.ClusterCase, async: true

  @moduletag :e2e

  alias FLAMEK8sBackend.BootError
  alias FLAMEK8sBackend.Test.RemoteFuns

  @moduletag timeout: 120_000

  setup :parent_setup

  defp secret_exists?(kube, ns, name) do
    match?({:ok, _}, Kube.request(kube, "GET", "/api/v1/namespaces/#{ns}/secrets/#{name}"))
  end

  defp gone?(kube, ns, name) do
    match?({:error, {:api, 404, _, _}}, Kube.get_pod(kube, ns, name)) and
      not secret_exists?(kube, ns, name)
  end

  defp boot_error!(opts) do
    {:ok, state} = FLAMEK8sBackend.init(opts)
    assert {:error, %BootError{} = error} = FLAMEK8sBackend.remote_boot(state)
    assert gone?(LocalCluster.kube!(), elem(opts[:parent_pod], 0), state.runner_name)
    assert runner_pods(LocalCluster.kube!(), elem(opts[:parent_pod], 0)) == []
    error
  end

  test "a call returns a value computed on a runner node", %{
    kube: kube,
    namespace: ns,
    opts: opts
  } do
    pool =
      start_pool!(
        Keyword.merge(opts,
          secret_env: %{"SECRET_SETTING" => "s3"},
          labels: %{"excluster" => "flame"}
        )
      )

    assert {runner, 49} = FLAME.call(pool, RemoteFuns.square(7))
    assert runner != node()
    info = FLAME.call(pool, &RemoteFuns.whereami/0)
    assert info.node == runner
    assert info.pod_namespace == ns
    assert "127.0." <> _ = info.pod_ip
    assert Atom.to_string(runner) == "#{info.pod_name}@#{info.pod_ip}"
    assert info.phx_server == "false"
    assert info.from_parent == "inherited"
    assert info.secret == "s3"
    assert info.cookie_set?

    assert [pod] = runner_pods(kube, ns)
    assert pod["metadata"]["name"] == info.pod_name
    assert pod["metadata"]["labels"]["excluster"] == "flame"
    refute Map.has_key?(pod["metadata"]["labels"], "app")
    env_names = pod["spec"]["containers"] |> hd() |> Map.get("env") |> Enum.map(& &1["name"])
    refute "RELEASE_COOKIE" in env_names
    refute inspect(pod) =~ Atom.to_string(Node.get_cookie())
    assert secret_exists?(kube, ns, info.pod_name)
  end

  test "an MFA runs on the runner node", %{opts: opts} do
    {:ok, state} =
      FLAMEK8sBackend.init(Keyword.put(opts, :secret_env, %{"API_KEY" => "k3y-s3cr3t"}))

    # Before the boot the state holds the secret manifest: what a crash report would print.
    for shown <- [inspect(state), Exception.format_exit({:boom, state})] do
      refute shown =~ Atom.to_string(Node.get_cookie())
      refute shown =~ "k3y-s3cr3t"
    end

    {:ok, terminator, state} = FLAMEK8sBackend.remote_boot(state)

    {:ok, {pid, ref}} =
      FLAMEK8sBackend.remote_spawn_monitor(state, {Kernel, :send, [self(), :from_mfa]})

    assert node(pid) == node(terminator)
    assert_receive :from_mfa, 10_000
    assert_receive {:DOWN, ^ref, :process, ^pid, :normal}, 10_000

    assert_raise ArgumentError,
                 ~r/expected a function of arity 0 or \{module, function, args\}/,
                 fn ->
                   FLAMEK8sBackend.remote_spawn_monitor(state, fn _ -> :arity_one end)
                 end
  end

  test "five concurrent boots give five runner nodes", %{kube: kube, namespace: ns, opts: opts} do
    pool = start_pool!(opts, max: 5, max_concurrency: 1)
    test = self()

    tasks = for _ <- 1..5, do: Task.async(fn -> FLAME.call(pool, RemoteFuns.rendezvous(test)) end)

    arrivals =
      for _ <- 1..5 do
        assert_receive {:arrived, runner, pid}, 60_000
        {runner, pid}
      end

    assert arrivals |> Enum.map(&elem(&1, 0)) |> Enum.uniq() |> length() == 5
    assert length(runner_pods(kube, ns)) == 5
    Enum.each(arrivals, fn {_, pid} -> send(pid, :go) end)
    nodes = Enum.map(tasks, &Task.await(&1, 30_000))
    assert Enum.sort(nodes) == arrivals |> Enum.map(&elem(&1, 0)) |> Enum.sort()
  end

  test "idle shutdown: the runner stops and its pod and secret are deleted", %{
    kube: kube,
    namespace: ns,
    opts: opts
  } do
    pool = start_pool!(opts, idle_shutdown_after: short_idle_ms())
    info = FLAME.call(pool, &RemoteFuns.whereami/0)
    runner = info.node
    Node.monitor(runner, true)
    assert_receive {:nodedown, ^runner}, 30_000
    eventually(fn -> gone?(kube, ns, info.pod_name) end, 15_000)
  end

  test "runner VM killed: its pod and secret are deleted", %{
    kube: kube,
    namespace: ns,
    opts: opts
  } do
    pool = start_pool!(opts)
    info = FLAME.call(pool, &RemoteFuns.whereami/0)
    # Real FLAME links a caller to its remote process: call from a process of its own, whose
    # end (the node it called into died) is expected.
    {caller, monitor} = spawn_monitor(fn -> FLAME.call(pool, RemoteFuns.halt_vm()) end)
    assert_receive {:DOWN, ^monitor, :process, ^caller, reason} when reason != :normal, 30_000
    eventually(fn -> gone?(kube, ns, info.pod_name) end, 15_000)
  end

  test "boot timeout while the container starts: the error names the phase", %{opts: opts} do
    labels = %{"sim-kubelet/start-delay-ms" => "60000"}

    opts =
      Keyword.merge(opts, boot_timeout: 1_500, manifest: %{"metadata" => %{"labels" => labels}})

    error = boot_error!(opts)
    assert %BootError{phase: :container_start, reason: {:timeout, %{detail: detail}}} = error
    assert detail =~ "ContainerCreating"
    assert Exception.message(error) =~ "starting its container: timed out"
  end

  test "boot timeout waiting for remote_up: the error says the runner never connected", %{
    opts: opts
  } do
    manifest = %{
      "spec" => %{
        "containers" => [%{"name" => "app", "image" => "sleeper:test", "args" => ["300"]}]
      }
    }

    error = boot_error!(Keyword.merge(opts, boot_timeout: 2_000, manifest: manifest))
    assert %BootError{phase: :remote_up, reason: {:timeout, %{detail: detail}}} = error
    assert detail =~ "never connected"
  end

  test "image pull failure: the error names the image", %{opts: opts} do
    manifest = %{
      "spec" => %{"containers" => [%{"name" => "app", "image" => "registry.invalid/app:404"}]}
    }

    error = boot_error!(Keyword.merge(opts, manifest: manifest))

    assert %BootError{
             phase: :container_start,
             reason: {:image_pull, %{image: "registry.invalid/app:404"}}
           } = error

    assert Exception.message(error) =~ "registry.invalid/app:404"
  end

  test "unschedulable with unschedulable: :fail: the scheduler's message", %{opts: opts} do
    labels = %{"sim-kubelet/fail" => "unschedulable"}

    opts =
      Keyword.merge(opts, unschedulable: :fail, manifest: %{"metadata" => %{"labels" => labels}})

    assert %BootError{phase: :scheduling, reason: {:unschedulable, message}} = boot_error!(opts)
    assert message =~ "0/1 nodes are available"
  end

  test "unschedulable with the default :wait: times out in scheduling with the message", %{
    opts: opts
  } do
    labels = %{"sim-kubelet/fail" => "unschedulable"}

    opts =
      Keyword.merge(opts, boot_timeout: 1_500, manifest: %{"metadata" => %{"labels" => labels}})

    assert %BootError{phase: :scheduling, reason: {:timeout, %{detail: detail}}} =
             boot_error!(opts)

    assert detail =~ "0/1 nodes are available"
  end

  test "a runner that crashes on start: exit code", %{opts: opts} do
    labels = %{"sim-kubelet/fail" => "crash", "sim-kubelet/exit-code" => "7"}
    opts = Keyword.merge(opts, manifest: %{"metadata" => %{"labels" => labels}})

    # The kubelet shows the container running for a moment: whether the watch saw that moment
    # decides between the two phases.
    assert %BootError{phase: phase, reason: {:container_exited, %{exit_code: 7}}} =
             boot_error!(opts)

    assert phase in [:container_start, :remote_up]
  end

  test "a runner VM that dies after it started: the remote_up phase and its exit code", %{
    opts: opts
  } do
    container = %{"name" => "app", "image" => "shell:test", "args" => ["-c", "sleep 1; exit 9"]}
    opts = Keyword.merge(opts, manifest: %{"spec" => %{"containers" => [container]}})

    error = boot_error!(opts)

    assert %BootError{phase: :remote_up, reason: {:container_exited, %{exit_code: 9}}} = error
    assert Exception.message(error) =~ "exited with code 9"
  end

  test "a runner that is OOMKilled", %{opts: opts} do
    opts =
      Keyword.merge(opts,
        manifest: %{"metadata" => %{"labels" => %{"sim-kubelet/fail" => "oom"}}}
      )

    assert %BootError{reason: {:container_exited, %{reason: "OOMKilled", exit_code: 137}}} =
             boot_error!(opts)
  end

  test "missing RBAC: the error names verb and resource", %{kube: kube, namespace: ns, opts: opts} do
    rules = [
      %{
        "apiGroups" => [""],
        "resources" => ["pods"],
        "verbs" => ["get", "list", "watch", "create", "delete"]
      }
    ]

    token = LocalCluster.service_account_token!(kube, ns, "no-secrets", rules)
    kubeconfig = LocalCluster.write_token_kubeconfig!(token)

    {:ok, state} = FLAMEK8sBackend.init(Keyword.put(opts, :kubeconfig, kubeconfig))

    assert {:error, %BootError{phase: :create_secret, reason: {:api, 403, "Forbidden", message}}} =
             FLAMEK8sBackend.remote_boot(state)

    assert message =~ ~s(cannot create resource "secrets")
    assert runner_pods(kube, ns) == []
  end

  test "parent pod not found: init names POD_NAMESPACE/POD_NAME", %{namespace: ns, opts: opts} do
    assert {:error, %BootError{phase: :parent_pod, reason: {:parent_pod_not_found, pod}} = error} =
             FLAMEK8sBackend.init(Keyword.put(opts, :parent_pod, {ns, "missing"}))

    assert pod == "#{ns}/missing"
    assert Exception.message(error) =~ "POD_NAMESPACE and POD_NAME"
  end

  test "the Runner process dying mid-boot leaves nothing behind", %{
    kube: kube,
    namespace: ns,
    opts: opts
  } do
    labels = %{"sim-kubelet/start-delay-ms" => "60000"}
    opts = Keyword.merge(opts, manifest: %{"metadata" => %{"labels" => labels}})
    test = self()

    {pid, monitor} =
      spawn_monitor(fn ->
        {:ok, state} = FLAMEK8sBackend.init(opts)
        send(test, {:runner_name, state.runner_name})
        FLAMEK8sBackend.remote_boot(state)
      end)

    assert_receive {:runner_name, name}, 10_000
    eventually(fn -> match?({:ok, _}, Kube.get_pod(kube, ns, name)) end)
    Process.exit(pid, :kill)
    assert_receive {:DOWN, ^monitor, :process, ^pid, :killed}
    eventually(fn -> gone?(kube, ns, name) end)
  end

  test "init sweeps this parent's finished runner pods, and only those", %{
    kube: kube,
    namespace: ns,
    opts: opts
  } do
    {:ok, parent} = Kube.get_pod(kube, ns, "parent")

    labels = %{
      "app.kubernetes.io/managed-by" => "flame_k8s_backend",
      "flame-k8s-backend.io/parent-uid" => parent["metadata"]["uid"]
    }

    # A runner with a secret of its own (envFrom, named like the pod), and one whose cookie
    # comes from the parent's Secret: that one is the parent's, never swept.
    finished =
      LocalCluster.pod_manifest("leftover", "shell:test",
        args: ["-c", "exit 0"],
        labels: labels,
        container: %{"envFrom" => [%{"secretRef" => %{"name" => "leftover"}}]}
      )

    cookie_ref = %{"secretKeyRef" => %{"name" => "parent-cookie", "key" => "RELEASE_COOKIE"}}

    finished_ref =
      LocalCluster.pod_manifest("leftover-ref", "shell:test",
        args: ["-c", "exit 0"],
        labels: labels,
        container: %{"env" => [%{"name" => "RELEASE_COOKIE", "valueFrom" => cookie_ref}]}
      )

    running = LocalCluster.pod_manifest("sibling", "sleeper:test", args: ["300"], labels: labels)

    for name <- ["leftover", "parent-cookie"] do
      {:ok, _} =
        Kube.create_secret(kube, ns, %{
          "metadata" => %{"name" => name, "labels" => labels},
          "stringData" => %{"RELEASE_COOKIE" => "c"}
        })
    end

    {:ok, _} = Kube.create_pod(kube, ns, finished)
    {:ok, _} = Kube.create_pod(kube, ns, finished_ref)
    {:ok, _} = Kube.create_pod(kube, ns, running)

    for name <- ["leftover", "leftover-ref"] do
      {:ok, await} = Kube.await_pod(kube, ns, name, timeout: 30_000, report_ready: false)
      ref = await.ref
      assert_receive {:flame_k8s, ^ref, {:failed, {:container_exited, %{exit_code: 0}}}}, 30_000
    end

    {:ok, await} = Kube.await_pod(kube, ns, "sibling", timeout: 30_000)
    ref = await.ref
    assert_receive {:flame_k8s, ^ref, {:ready, _}}, 30_000

    # Only pods older than a boot timeout are swept: a sibling boot that just failed keeps
    # its pod for its own report.
    {:ok, _state} = FLAMEK8sBackend.init(Keyword.put(opts, :boot_timeout, 1))
    assert gone?(kube, ns, "leftover")
    assert {:error, {:api, 404, _, _}} = Kube.get_pod(kube, ns, "leftover-ref")
    assert secret_exists?(kube, ns, "parent-cookie")
    assert {:ok, %{"status" => %{"phase" => "Running"}}} = Kube.get_pod(kube, ns, "sibling")
  end
end
