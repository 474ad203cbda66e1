defmodule FLAMEK8sBackend.RealNodeTest do
  # The scenarios of a real node (tools/realnode): real containers (containerd + runc) on a CNI
  # bridge, the real kube-scheduler and kube-controller-manager (garbage collector), kube-proxy,
  # CoreDNS. test/test_helper.exs starts the node when tools/realnode/can-run passes; run alone
  # with FLAME_K8S_REAL_NODE=1 this module starts (and stops) it itself.
  use ExUnit.Case, async: false

  @moduletag :e2e
  @moduletag :real_node
  @moduletag timeout: 180_000

  alias FLAMEK8sBackend.{BootError, Kube}
  alias FLAMEK8sBackend.Test.RealNode

  @managed_by "app.kubernetes.io/managed-by=flame_k8s_backend"

  case RealNode.test_mode() do
    :running ->
      :ok

    :standalone ->
      setup_all do
        RealNode.ensure_started!()
        :ok
      end

    {:skip, reason} ->
      @moduletag skip: reason
  end

  setup context do
    kube = RealNode.kube!()
    ns = RealNode.namespace_name(context.module, context.test)
    RealNode.create_namespace!(kube, ns)
    on_exit(fn -> RealNode.delete_namespace(RealNode.kube!(), ns) end)
    %{kube: kube, namespace: ns}
  end

  # --- helpers

  defp backend_opts(ns, extra) do
    [parent_pod: {ns, "parent"}, kubeconfig: RealNode.info().kubeconfig, boot_timeout: 30_000]
    |> Keyword.merge(extra)
  end

  defp secret_exists?(kube, ns, name) do
    match?({:ok, _}, Kube.request(kube, "GET", "/api/v1/namespaces/#{ns}/secrets/#{name}"))
  end

  defp gone?(kube, ns, name) do
    match?({:error, {:api, 404, _, _}}, Kube.get_pod(kube, ns, name)) and
      not secret_exists?(kube, ns, name)
  end

  defp runner_pods(kube, ns) do
    {:ok, pods} = Kube.list_pods(kube, ns, label_selector: @managed_by)
    pods
  end

  # init + remote_boot against the running parent pod; the boot must fail, and leave nothing.
  defp boot_error!(kube, ns, opts) do
    {:ok, state} = FLAMEK8sBackend.init(backend_opts(ns, opts))
    assert {:error, %BootError{} = error} = FLAMEK8sBackend.remote_boot(state)
    assert gone?(kube, ns, state.runner_name)
    assert runner_pods(kube, ns) == []
    {error, state.runner_name}
  end

  defp app_container(extra), do: Map.merge(%{"name" => "app"}, extra)

  # A pod that runs a shell command, writes what it printed as its termination message and
  # exits; returns that message.
  defp run_to_completion!(kube, ns, name, script) do
    manifest =
      RealNode.pod_manifest(name, RealNode.info().busybox_image,
        command: ["/bin/sh", "-c", "{ #{script}; } > /dev/termination-log 2>&1"]
      )

    {:ok, _} = Kube.create_pod(kube, ns, manifest)
    {:ok, await} = Kube.await_pod(kube, ns, name, timeout: 60_000, report_ready: false)
    ref = await.ref
    assert_receive {:flame_k8s, ^ref, {:failed, {:container_exited, %{exit_code: 0}}}}, 65_000
    {:ok, pod} = Kube.get_pod(kube, ns, name)
    [status] = pod["status"]["containerStatuses"]
    status["state"]["terminated"]["message"]
  end

  # --- the node

  test "the node is Ready: kubelet v1.36.3 on containerd, at the bridge address", %{kube: kube} do
    {:ok, node} = Kube.request(kube, "GET", "/api/v1/nodes/#{RealNode.info().node_name}")

    assert Enum.any?(
             node["status"]["conditions"],
             &(&1["type"] == "Ready" and &1["status"] == "True")
           )

    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.36.3"
    assert "containerd://" <> _ = node["status"]["nodeInfo"]["containerRuntimeVersion"]
    assert %{"type" => "InternalIP", "address" => "10.244.0.1"} in node["status"]["addresses"]
    assert File.read!("/proc/sys/net/ipv4/ip_forward") == "0\n"
  end

  test "a pod from the pause image runs on the bridge; pods have no default route", %{
    kube: kube,
    namespace: ns
  } do
    # A bridge takes the lowest MAC of its ports unless one was set: a pod's veth coming or
    # going would change it, and every pod's cached MAC of 10.244.0.1 would lead nowhere until
    # its neighbour entry expired (up to 45 s). Set (3, NET_ADDR_SET), it stays.
    bridge = "/sys/class/net/flk8s-br0"
    assert File.read!(Path.join(bridge, "addr_assign_type")) == "3\n"
    mac = File.read!(Path.join(bridge, "address"))
    started = System.monotonic_time(:millisecond)

    {:ok, _} =
      Kube.create_pod(kube, ns, RealNode.pod_manifest("pause", RealNode.info().pause_image))

    pod = RealNode.await_running!(kube, ns, "pause")
    running_ms = System.monotonic_time(:millisecond) - started
    IO.puts("real node: pause pod create -> Running #{running_ms} ms")

    assert pod["spec"]["nodeName"] == RealNode.info().node_name
    assert "10.244.0." <> _ = pod["status"]["podIP"]

    report =
      run_to_completion!(
        kube,
        ns,
        "netcheck",
        "ip route; cat /etc/resolv.conf; ls /var/run/secrets/kubernetes.io/serviceaccount"
      )

    refute report =~ "default"
    assert report =~ "10.96.0.0/12 via 10.244.0.1"
    assert report =~ "nameserver 10.244.0.1"
    assert report =~ "search #{ns}.svc.cluster.local svc.cluster.local cluster.local"
    assert report =~ "token"
    assert report =~ "ca.crt"
    assert File.read!(Path.join(bridge, "address")) == mac
  end

  # --- real failures with real reasons, through the backend

  describe "boot failures" do
    setup %{kube: kube, namespace: ns} do
      RealNode.create_parent_pod!(kube, ns)
      :ok
    end

    test "a :node_selector no node has: the real scheduler's message", %{
      kube: kube,
      namespace: ns
    } do
      selector = %{"flame-k8s-backend.io/no-such-node" => "x"}
      {error, runner} = boot_error!(kube, ns, unschedulable: :fail, node_selector: selector)
      assert %BootError{phase: :scheduling, reason: {:unschedulable, message}} = error
      assert message =~ "0/1 nodes are available"
      assert message =~ "didn't match Pod's node affinity/selector"

      # Kubernetes' own story: the scheduler's event, as the API server keeps it.
      assert Enum.any?(
               error.events,
               &(&1.reason == "FailedScheduling" and &1.message =~ "0/1 nodes are available")
             ),
             inspect(error.events)

      assert Exception.message(error) =~ "FailedScheduling"

      # The backend deleted its pod and secret itself (audit log: the kubeconfig's user).
      assert [%{"code" => 200}] =
               RealNode.audit_events(%{
                 "verb" => "delete",
                 "resource" => "pods",
                 "name" => runner
               })

      assert [%{"user" => "flame-realnode-admin"}] =
               RealNode.audit_events(%{
                 "verb" => "delete",
                 "resource" => "secrets",
                 "name" => runner
               })
    end

    test "a pool asking for a GPU (:resources) on a node without: Insufficient nvidia.com/gpu, at once",
         %{kube: kube, namespace: ns} do
      resources = %{limits: %{"nvidia.com/gpu" => 1}}
      {error, _} = boot_error!(kube, ns, unschedulable: :fail, resources: resources)
      assert %BootError{phase: :scheduling, reason: {:unschedulable, message}} = error
      assert message =~ "0/1 nodes are available"
      assert message =~ "Insufficient nvidia.com/gpu"
    end

    test "a resource request no node satisfies, unschedulable: :wait: the timeout names it", %{
      kube: kube,
      namespace: ns
    } do
      manifest = %{
        "spec" => %{
          "containers" => [app_container(%{"resources" => %{"requests" => %{"cpu" => "64"}}})]
        }
      }

      {error, _} = boot_error!(kube, ns, boot_timeout: 4_000, manifest: manifest)
      assert %BootError{phase: :scheduling, reason: {:timeout, %{detail: detail}}} = error
      assert detail =~ "Insufficient cpu"
    end

    test "an image that is not on the node: ErrImageNeverPull names it", %{
      kube: kube,
      namespace: ns
    } do
      image = "flame-k8s.local/not-imported:1"
      container = app_container(%{"image" => image, "imagePullPolicy" => "Never"})
      {error, _} = boot_error!(kube, ns, manifest: %{"spec" => %{"containers" => [container]}})

      assert %BootError{
               phase: :container_start,
               reason: {:image_pull, %{image: ^image, reason: "ErrImageNeverPull"}}
             } = error

      assert Exception.message(error) =~ image
    end

    test "a pull is refused on the machine at once (no registry, nothing leaves)", %{
      kube: kube,
      namespace: ns
    } do
      image = "registry.invalid/flame/app:404"
      container = app_container(%{"image" => image, "imagePullPolicy" => "IfNotPresent"})
      started = System.monotonic_time(:millisecond)
      {error, _} = boot_error!(kube, ns, manifest: %{"spec" => %{"containers" => [container]}})
      assert System.monotonic_time(:millisecond) - started < 20_000

      assert %BootError{
               phase: :container_start,
               reason: {:image_pull, %{image: ^image, message: message}}
             } = error

      assert message =~ "127.0.0.1:1"
    end

    test "a runner that exits on start: its exit code, its last log lines, the kubelet's events",
         %{kube: kube, namespace: ns} do
      script = "echo 'config: no DATABASE_URL' >&2; exit 7"

      container =
        app_container(%{
          "image" => RealNode.info().busybox_image,
          "command" => ["/bin/sh", "-c", script]
        })

      {error, _} = boot_error!(kube, ns, manifest: %{"spec" => %{"containers" => [container]}})

      assert %BootError{phase: phase, reason: {:container_exited, %{exit_code: 7}}} = error
      assert phase in [:container_start, :remote_up]
      assert Exception.message(error) =~ "exited with code 7"

      # From the kubelet's pod log (pods/log) and its events, read before the pod was deleted.
      assert %{container: "app", lines: ["config: no DATABASE_URL"]} = error.log
      reasons = Enum.map(error.events, & &1.reason)
      assert "Scheduled" in reasons and "Started" in reasons, inspect(error.events)
      assert Exception.message(error) =~ "config: no DATABASE_URL"
    end

    test "a Role without secrets create: 403 naming verb and resource", %{
      kube: kube,
      namespace: ns
    } do
      rules = [
        %{
          "apiGroups" => [""],
          "resources" => ["pods"],
          "verbs" => ["get", "list", "watch", "create", "delete"]
        }
      ]

      kubeconfig = RealNode.service_account_kubeconfig!(kube, ns, "no-secrets", rules)
      {:ok, state} = FLAMEK8sBackend.init(backend_opts(ns, kubeconfig: kubeconfig))

      assert {:error,
              %BootError{phase: :create_secret, reason: {:api, 403, "Forbidden", message}}} =
               FLAMEK8sBackend.remote_boot(state)

      assert message =~ ~s(cannot create resource "secrets")
      assert message =~ "system:serviceaccount:#{ns}:no-secrets"
      assert runner_pods(kube, ns) == []
    end
  end

  # --- the garbage collector

  test "the parent pod is deleted: the garbage collector removes runner pod and secret", %{
    kube: kube,
    namespace: ns
  } do
    RealNode.create_parent_pod!(kube, ns)
    # The runner's pod and secret exactly as the backend builds them (owner references to the
    # parent pod), but the pause image: nothing has to boot for the collector to act.
    container = app_container(%{"image" => RealNode.info().pause_image})

    {:ok, state} =
      FLAMEK8sBackend.init(
        backend_opts(ns, manifest: %{"spec" => %{"containers" => [container]}})
      )

    # This test VM's cookie is not in a Secret of the parent pod: the runner gets its own.
    %{pod: pod, secret: %{} = secret} = FLAMEK8sBackend.runner_manifests(state)
    {:ok, _} = Kube.create_secret(kube, ns, secret)
    {:ok, _} = Kube.create_pod(kube, ns, pod)
    runner = RealNode.await_running!(kube, ns, state.runner_name)

    assert [%{"kind" => "Pod", "name" => "parent", "controller" => true}] =
             runner["metadata"]["ownerReferences"]

    :ok = Kube.delete_pod(kube, ns, "parent", grace_period: 0)

    RealNode.wait_until!(fn -> gone?(kube, ns, state.runner_name) end, 60_000, "runner collected")

    gc = "system:serviceaccount:kube-system:generic-garbage-collector"

    for resource <- ["pods", "secrets"] do
      assert [%{"user" => ^gc} | _] =
               RealNode.audit_events(%{
                 "verb" => "delete",
                 "resource" => resource,
                 "name" => state.runner_name
               })
    end
  end

  # --- DNS

  test "a headless Service resolves to its pods' IPs from the host (:inet_res, CoreDNS)", %{
    kube: kube,
    namespace: ns
  } do
    {:ok, _} =
      Kube.request(kube, "POST", "/api/v1/namespaces/#{ns}/services",
        body: %{
          "metadata" => %{"name" => "flame-peers"},
          "spec" => %{
            "clusterIP" => "None",
            "selector" => %{"excluster" => "flame"},
            "ports" => [%{"name" => "epmd", "port" => 4369}]
          }
        }
      )

    ips =
      for name <- ["peer-a", "peer-b"] do
        manifest =
          RealNode.pod_manifest(name, RealNode.info().pause_image,
            labels: %{"excluster" => "flame"}
          )

        {:ok, _} = Kube.create_pod(kube, ns, manifest)
        pod = RealNode.await_running!(kube, ns, name)
        {:ok, ip} = :inet.parse_address(String.to_charlist(pod["status"]["podIP"]))
        ip
      end

    name = "flame-peers.#{ns}.svc.cluster.local"

    RealNode.wait_until!(
      fn -> Enum.sort(RealNode.dns_lookup(name)) == Enum.sort(ips) end,
      30_000,
      "#{name} -> #{inspect(ips)}"
    )

    # Names outside the cluster domain are not forwarded anywhere.
    assert RealNode.dns_lookup("example.com") == []
  end
end

defmodule FLAMEK8sBackend.RealNodeParentTest do
  # The parent in the cluster, as a user deploys it: the example manifests
  # (examples/kubernetes: Deployment, ServiceAccount + Role + RoleBinding, headless Service,
  # cookie Secret) adapted to the demo app as examples/kind/kind.sh does, with the image of
  # tools/realnode/image.sh (a `mix release` of examples/kind/flame_demo with this library). The
  # parent connects with its mounted ServiceAccount token; runner pods are real containers that
  # join it over the pod network. This VM drives the parent over a hidden Erlang distribution
  # connection (no kubectl here), as `kubectl exec ... bin/flame_demo rpc` does on kind.
  use ExUnit.Case, async: false

  @moduletag :e2e
  @moduletag :real_node
  @moduletag timeout: 300_000

  alias FLAMEK8sBackend.{BootError, Kube}
  alias FLAMEK8sBackend.Test.RealNode

  # The demo app's modules exist in the parent pod, not in this VM.
  @compile {:no_warn_undefined, [FlameDemo]}

  @managed_by "app.kubernetes.io/managed-by=flame_k8s_backend"

  case RealNode.test_mode() do
    :running ->
      if RealNode.info().app_image == nil do
        @moduletag skip: "no app image (tools/realnode/image.sh) was imported into the real node"
      end

    :standalone ->
      :ok

    {:skip, reason} ->
      @moduletag skip: reason
  end

  setup_all do
    RealNode.ensure_started!()
    if RealNode.info().app_image == nil, do: raise("no app image (tools/realnode/image.sh)")

    kube = RealNode.kube!()
    ns = "rn-demo-#{System.unique_integer([:positive])}"
    RealNode.create_namespace!(kube, ns)
    dir = Path.join(System.tmp_dir!(), ns)
    %{files: files, cookie: cookie} = RealNode.render_demo_manifests!(dir)
    created = RealNode.create_manifests!(files, ns)
    File.rm_rf!(dir)

    on_exit(fn -> RealNode.delete_namespace(RealNode.kube!(), ns) end)
    %{kube: kube, namespace: ns, cookie: String.to_atom(cookie), created: created}
  end

  # --- helpers

  # The Deployment's current pod, running, and its BEAM node connected to this VM (hidden: no
  # global mesh with the runners, which could not reach this VM's 127.0.0.1 name anyway).
  defp parent!(ctx), do: ctx |> parents!(1) |> hd()

  # `n` of the Deployment's pods, as parent!/1 gives one.
  defp parents!(ctx, n) do
    pods =
      RealNode.wait_until!(
        fn ->
          # Not a runner a test gave the Deployment's labels (the selector pitfall) that has
          # not idled down yet.
          {:ok, pods} =
            Kube.list_pods(ctx.kube, ctx.namespace,
              label_selector: "app=flame-demo,app.kubernetes.io/managed-by!=flame_k8s_backend"
            )

          running =
            Enum.filter(pods, fn pod ->
              pod["metadata"]["deletionTimestamp"] == nil and
                pod["status"]["phase"] == "Running" and
                Enum.all?(pod["status"]["containerStatuses"] || [], & &1["ready"])
            end)

          length(running) >= n and Enum.take(running, n)
        end,
        90_000,
        "#{n} running flame-demo pods in #{ctx.namespace}"
      )

    for pod <- pods do
      node = :"flame_demo@#{pod["status"]["podIP"]}"
      :erlang.set_cookie(node, ctx.cookie)

      RealNode.wait_until!(
        fn -> :net_kernel.hidden_connect_node(node) and demo_started?(node) end,
        60_000,
        "#{node} up"
      )

      %{pod: pod, node: node, name: pod["metadata"]["name"], ip: pod["status"]["podIP"]}
    end
  end

  # Scales the Deployment and waits until that many of its pods are not being deleted: a
  # parent the ReplicaSet is about to delete must not serve the next test.
  defp scale!(ctx, replicas) do
    {:ok, _} =
      Kube.request(
        ctx.kube,
        "PATCH",
        "/apis/apps/v1/namespaces/#{ctx.namespace}/deployments/flame-demo/scale",
        body: %{"spec" => %{"replicas" => replicas}},
        content_type: "application/merge-patch+json"
      )

    RealNode.wait_until!(
      fn ->
        {:ok, pods} = Kube.list_pods(ctx.kube, ctx.namespace, label_selector: "app=flame-demo")
        Enum.count(pods, &(&1["metadata"]["deletionTimestamp"] == nil)) == replicas
      end,
      90_000,
      "#{replicas} flame-demo pods not being deleted"
    )
  end

  # The pod's VM can drop a fresh connection while its release is still starting (seen under
  # load): that is "not up yet", not a failure.
  defp demo_started?(node) do
    match?({:ok, _}, :erpc.call(node, Application, :ensure_all_started, [:flame_demo], 10_000))
  rescue
    error in ErlangError ->
      case error do
        %ErlangError{original: {:erpc, _}} -> false
        _ -> reraise error, __STACKTRACE__
      end
  end

  defp rpc(parent, module, fun, args, timeout \\ 150_000),
    do: :erpc.call(parent.node, module, fun, args, timeout)

  # A FLAME pool of our own in the parent's supervisor (data only crosses the connection; the
  # functions called are the release's). Returns its name; stop_pool/2 removes it.
  defp start_pool!(parent, backend_opts, pool_opts \\ []) do
    name = :"Elixir.RealNodeTest.Pool#{System.unique_integer([:positive])}"

    opts =
      [
        name: name,
        backend: {FLAMEK8sBackend, backend_opts},
        min: 0,
        max: 1,
        boot_timeout: 60_000,
        idle_shutdown_after: 60_000
      ]
      |> Keyword.merge(pool_opts)

    spec = rpc(parent, Supervisor, :child_spec, [{FLAME.Pool, opts}, [id: name]])
    {:ok, _} = rpc(parent, Supervisor, :start_child, [FlameDemo.Supervisor, spec])
    name
  end

  # Starts a call of `ms` on `pool`, deletes its runner pod (the pod's own grace period) once
  # the call runs there, and returns the call's result and how long after the DELETE it came.
  defp delete_mid_call!(ctx, parent, pool, ms) do
    test = self()

    call =
      Task.async(fn -> rpc(parent, FlameDemo, :call_in_flight, [pool, ms, test], ms + 90_000) end)

    assert_receive {:running, runner}, 90_000
    {:ok, pod} = Kube.get_pod(ctx.kube, ctx.namespace, runner.pod)
    deleted = System.monotonic_time(:millisecond)
    assert :ok = Kube.delete_pod(ctx.kube, ctx.namespace, runner.pod)
    deleted_at = System.system_time()
    result = Task.await(call, ms + 90_000)
    stopped_in = System.monotonic_time(:millisecond) - deleted
    %{runner: runner, result: result, stopped_in: stopped_in, pod: pod, deleted_at: deleted_at}
  end

  @runner_events [
    [:flame_k8s_backend, :runner, :disruption],
    [:flame_k8s_backend, :runner, :down]
  ]

  # The parent's [:flame_k8s_backend, :runner, ...] events come to this test process.
  defp forward_runner_events!(parent), do: forward_parent_events!(parent, @runner_events, self())

  # The parent's telemetry `events` come to `to` (here) until the test ends.
  defp forward_parent_events!(parent, events, to) do
    id = rpc(parent, FlameDemo.TelemetryForward, :attach, [events, to])
    on_exit(fn -> rpc(parent, FlameDemo.TelemetryForward, :detach, [id]) end)
  end

  # ms from `from` (native System.system_time/0 here) to `to` (native, in the parent pod's VM:
  # the same machine's clock).
  defp since_ms(from, to), do: System.convert_time_unit(to - from, :native, :millisecond)

  defp stop_pool(parent, name) do
    rpc(parent, Supervisor, :terminate_child, [FlameDemo.Supervisor, name])
    rpc(parent, Supervisor, :delete_child, [FlameDemo.Supervisor, name])
  end

  defp runner_pods(ctx) do
    {:ok, pods} = Kube.list_pods(ctx.kube, ctx.namespace, label_selector: @managed_by)
    pods
  end

  defp secret_exists?(ctx, name) do
    match?(
      {:ok, _},
      Kube.request(ctx.kube, "GET", "/api/v1/namespaces/#{ctx.namespace}/secrets/#{name}")
    )
  end

  defp gone?(ctx, name) do
    match?({:error, {:api, 404, _, _}}, Kube.get_pod(ctx.kube, ctx.namespace, name)) and
      not secret_exists?(ctx, name)
  end

  defp await_gone!(ctx, name, timeout),
    do: RealNode.wait_until!(fn -> gone?(ctx, name) end, timeout, "pod and secret #{name} gone")

  defp deletions(ctx, name, resource) do
    RealNode.audit_events(%{
      "verb" => "delete",
      "namespace" => ctx.namespace,
      "name" => name,
      "resource" => resource
    })
  end

  # The pods bound to `node` that still hold their requests (not finished), in any namespace.
  defp node_pods(ctx, node) do
    {:ok, %{"items" => pods}} =
      Kube.request(ctx.kube, "GET", "/api/v1/pods?fieldSelector=spec.nodeName=#{node}")

    Enum.reject(pods, &(&1["status"]["phase"] in ["Succeeded", "Failed"]))
  end

  defp cpu_requests(pod) do
    pod["spec"]["containers"]
    |> Enum.map(&get_in(&1, ["resources", "requests", "cpu"]))
    |> Enum.reject(&is_nil/1)
    |> Enum.map(&millicpu/1)
    |> Enum.sum()
  end

  defp millicpu(quantity) do
    case Float.parse(quantity) do
      {n, "m"} -> round(n)
      {n, ""} -> round(n * 1000)
    end
  end

  # --- scenarios

  test "the example manifests are accepted as they are", ctx do
    assert Enum.sort(ctx.created) == [
             "ok Deployment/flame-demo",
             "ok NetworkPolicy/flame-demo-flame-parent",
             "ok NetworkPolicy/flame-demo-flame-runners",
             "ok Role/flame-demo-flame",
             "ok Role/flame-demo-runner",
             "ok RoleBinding/flame-demo-flame",
             "ok RoleBinding/flame-demo-runner",
             "ok Secret/flame-demo-cookie",
             "ok Service/flame-demo-headless",
             "ok ServiceAccount/flame-demo",
             "ok ServiceAccount/flame-demo-runner"
           ]
  end

  # Also on the IPv6 node (bin/test runs the :ipv6 tests there too).
  @tag :ipv6
  test "a FLAME call in the parent pod runs on a runner pod: <pod name>@<pod IP>, no cookie in its env",
       ctx do
    parent = parent!(ctx)
    started = System.monotonic_time(:millisecond)
    %{parent: p, runner: runner} = rpc(parent, FlameDemo, :where, [])

    IO.puts(
      "real node: first FLAME.call from the parent pod #{System.monotonic_time(:millisecond) - started} ms"
    )

    assert p.pod == parent.name
    assert p.node == parent.node
    # deployment.yaml's fixed distribution port (network-policy.yaml admits 9000), which the
    # runner inherits with the parent's env: as each pod's epmd registered it.
    for {name, ip} <- [{"flame_demo", parent.ip}, {runner.pod, runner.pod_ip}] do
      {:ok, address} = :inet.parse_address(String.to_charlist(ip))
      assert {:port, 9000, _} = :erl_epmd.port_please(String.to_charlist(name), address)
    end

    assert runner.pod != parent.name
    assert RealNode.pod_address?(runner.pod_ip)
    assert Atom.to_string(runner.node) == "#{runner.pod}@#{runner.pod_ip}"
    assert rpc(parent, FlameDemo, :square, [12]) == 144

    {:ok, pod} = Kube.get_pod(ctx.kube, ctx.namespace, runner.pod)
    assert pod["spec"]["serviceAccountName"] == "flame-demo"
    # Neither the headless Service's label (DNSCluster connects parents only) nor the
    # Deployment's selector label.
    refute Map.has_key?(pod["metadata"]["labels"], "excluster")
    refute Map.has_key?(pod["metadata"]["labels"], "app")

    assert [%{"kind" => "Pod", "name" => owner, "controller" => true}] =
             pod["metadata"]["ownerReferences"]

    assert owner == parent.name
    [container] = pod["spec"]["containers"]

    # The parent's cookie comes from a Secret: the runner reads the same key, no Secret of its own.
    cookie_ref = %{"secretKeyRef" => %{"name" => "flame-demo-cookie", "key" => "RELEASE_COOKIE"}}
    assert %{"name" => "RELEASE_COOKIE", "valueFrom" => cookie_ref} in container["env"]
    refute Enum.any?(container["envFrom"] || [], &Map.has_key?(&1, "secretRef"))
    refute secret_exists?(ctx, runner.pod)
    refute inspect(pod) =~ Atom.to_string(ctx.cookie)

    # In-cluster mode: the parent created the runner with its own mounted token.
    assert [%{"user" => user, "pod_name" => creator}] =
             RealNode.audit_events(%{
               "verb" => "create",
               "resource" => "pods",
               "subresource" => nil,
               "namespace" => ctx.namespace,
               "name" => runner.pod
             })

    assert user == "system:serviceaccount:#{ctx.namespace}:flame-demo"
    assert creator == parent.name
  end

  # Also on the IPv6 node (bin/test runs the :ipv6 tests there too).
  @tag :ipv6
  test "idle shutdown: the runner deletes its own pod with its own token, once", ctx do
    parent = parent!(ctx)
    %{runner: runner} = rpc(parent, FlameDemo, :where, [])
    # The demo pool's idle_shutdown_after is 10 s.
    await_gone!(ctx, runner.pod, 60_000)

    # The kubelet's own final DELETE (grace 0, once the containers are gone) is Kubernetes'
    # part of every pod deletion, not a client's.
    events =
      ctx
      |> deletions(runner.pod, "pods")
      |> Enum.reject(&(&1["user"] == "system:node:flame-realnode"))

    # The runner told the parent's reaper what it deleted: the reaper sends no second DELETE.
    assert [%{"pod_name" => deleter, "source_ips" => ips}] = events,
           "pods/#{runner.pod} deleted by: " <>
             inspect(Enum.map(events, &Map.take(&1, ["time", "pod_name", "code"])))

    assert deleter == runner.pod
    assert ips == [runner.pod_ip]
    assert deletions(ctx, runner.pod, "secrets") == []
    assert deletions(ctx, "flame-demo-cookie", "secrets") == []
    assert runner_pods(ctx) == []
  end

  test "a runner with a secret of its own (:secret_env) deletes its pod and its secret itself",
       ctx do
    parent = parent!(ctx)

    assert {:ok, runner} =
             rpc(parent, FlameDemo, :call_with, [
               [secret_env: %{"DEMO_API_KEY" => "not-in-the-pod-spec"}],
               [idle_shutdown_after: 1_000]
             ])

    await_gone!(ctx, runner.pod, 60_000)

    for resource <- ["pods", "secrets"] do
      events =
        ctx
        |> deletions(runner.pod, resource)
        |> Enum.reject(&(&1["user"] == "system:node:flame-realnode"))

      # With the runner's own token (the one its parent handed over, bound to its pod), once:
      # the reaper, told what the runner deleted, sends nothing.
      assert [%{"pod_name" => deleter, "code" => 200}] = events,
             "#{resource}/#{runner.pod} deleted by: " <>
               inspect(Enum.map(events, &Map.take(&1, ["time", "pod_name", "user", "code"])))

      assert deleter == runner.pod
    end
  end

  # --- the runner's ServiceAccount token (issue 18, item 3): its own, or none; never the
  # parent's (the admission-injected kube-api-access-* volume is not copied)

  @token_path "/var/run/secrets/kubernetes.io/serviceaccount/token"

  # A FLAME call on a runner of a pool with `backend_opts`, evaluated in the parent (its closure
  # is an erl_eval fun: the runner runs it without this VM's code). Returns the runner's pod
  # name and File.read/1 of the token path there.
  defp runner_token(parent, backend_opts) do
    code = """
    FlameDemo.call_with(backend_opts,
      fun: fn -> {System.get_env("POD_NAME"), File.read(token_path)} end,
      idle_shutdown_after: 1_000
    )
    """

    {result, _} =
      rpc(parent, Code, :eval_string, [
        code,
        [backend_opts: backend_opts, token_path: @token_path]
      ])

    assert {:ok, {pod, read}} = result
    {pod, read}
  end

  # The token the runner's parent handed over, once it has (it comes after remote_up).
  defp runner_handed_token(parent, backend_opts) do
    code = """
    FlameDemo.call_with(backend_opts,
      fun: fn ->
        handed = fn handed, tries ->
          case FLAMEK8sBackend.RunnerToken.kube_opts() do
            {:ok, opts} -> {:ok, opts[:token]}
            :error when tries > 0 ->
              Process.sleep(50)
              handed.(handed, tries - 1)

            :error -> {:error, :none_handed_over}
          end
        end

        {System.get_env("POD_NAME"), handed.(handed, 100)}
      end,
      idle_shutdown_after: 1_000
    )
    """

    {result, _} = rpc(parent, Code, :eval_string, [code, [backend_opts: backend_opts]])
    assert {:ok, {pod, read}} = result
    {pod, read}
  end

  # The JWT's claims (the token itself never reaches an assertion message).
  defp token_claims(token) do
    [_, payload, _] = String.split(token, ".")
    payload |> Base.url_decode64!(padding: false) |> JSON.decode!()
  end

  defp token_review_user(ctx, token) do
    {:ok, review} =
      Kube.request(ctx.kube, "POST", "/apis/authentication.k8s.io/v1/tokenreviews",
        body: %{"apiVersion" => "authentication.k8s.io/v1", "spec" => %{"token" => token}}
      )

    {review["status"]["authenticated"], review["status"]["user"]["username"]}
  end

  test "automountServiceAccountToken: false in :manifest: the runner has no token file", ctx do
    parent = parent!(ctx)
    # The parent has one (its Deployment mounts it): the runner would have copied it.
    assert {:ok, _} = rpc(parent, File, :stat, [@token_path])

    manifest = %{"spec" => %{"automountServiceAccountToken" => false}}
    {pod, read} = runner_token(parent, manifest: manifest)
    assert read == {:error, :enoent}
    await_gone!(ctx, pod, 60_000)
  end

  test "a :service_account_name whose account sets automountServiceAccountToken: false: no token file",
       ctx do
    parent = parent!(ctx)
    account = "no-token-#{System.unique_integer([:positive])}"

    {:ok, _} =
      Kube.request(ctx.kube, "POST", "/api/v1/namespaces/#{ctx.namespace}/serviceaccounts",
        body: %{"metadata" => %{"name" => account}, "automountServiceAccountToken" => false}
      )

    {pod, read} = runner_token(parent, service_account_name: account)
    assert read == {:error, :enoent}
    await_gone!(ctx, pod, 60_000)
  end

  test "a runner's token belongs to its own :service_account_name and its own pod", ctx do
    parent = parent!(ctx)

    # The token its parent hands over (the default), and the API server's mounted one.
    for {mode, read_token} <- [handover: &runner_handed_token/2, mount: &runner_token/2] do
      opts = [service_account_name: "flame-demo-runner", service_account_token: mode]
      {pod, {:ok, token}} = read_token.(parent, opts)
      claims = token_claims(token)
      assert claims["sub"] == "system:serviceaccount:#{ctx.namespace}:flame-demo-runner"
      assert claims["kubernetes.io"]["serviceaccount"]["name"] == "flame-demo-runner"
      assert claims["kubernetes.io"]["pod"]["name"] == pod, "#{mode}"

      assert token_review_user(ctx, token) ==
               {true, "system:serviceaccount:#{ctx.namespace}:flame-demo-runner"}

      await_gone!(ctx, pod, 60_000)
    end

    # Without :service_account_name: the parent's account, but a token bound to the runner's
    # own pod (not the parent's).
    {pod, {:ok, token}} = runner_handed_token(parent, [])
    claims = token_claims(token)
    assert claims["sub"] == "system:serviceaccount:#{ctx.namespace}:flame-demo"
    assert claims["kubernetes.io"]["pod"]["name"] == pod
    refute claims["kubernetes.io"]["pod"]["name"] == parent.name
    await_gone!(ctx, pod, 60_000)
  end

  test "the runner's container is killed: the parent's reaper deletes its pod", ctx do
    parent = parent!(ctx)
    %{runner: runner} = rpc(parent, FlameDemo, :where, [])
    {:ok, pod} = Kube.get_pod(ctx.kube, ctx.namespace, runner.pod)
    id = RealNode.container_id(pod, "flame-demo")
    assert {_, 0} = RealNode.ctr(["tasks", "kill", "--signal", "SIGKILL", id])

    await_gone!(ctx, runner.pod, 60_000)

    assert [%{"pod_name" => deleter} | _] = deletions(ctx, runner.pod, "pods")
    assert deleter == parent.name, "pod deleted by #{deleter}, not by the parent"
    assert deletions(ctx, "flame-demo-cookie", "secrets") == []
  end

  # What the handed-over token is for: a runner whose parent VM is gone deletes its own pod
  # (the parent's reaper is gone with the VM), with the token its parent gave it.
  test "the parent VM is killed: the runner deletes its own pod with the token its parent handed over",
       ctx do
    parent = parent!(ctx)
    %{runner: runner} = rpc(parent, FlameDemo, :where, [])

    RealNode.wait_until!(
      fn ->
        match?(
          {:ok, _},
          rpc(parent, :erpc, :call, [runner.node, FLAMEK8sBackend.RunnerToken, :kube_opts, []])
        )
      end,
      10_000,
      "a token handed over to #{runner.node}"
    )

    {:ok, pod} = Kube.get_pod(ctx.kube, ctx.namespace, parent.name)
    id = RealNode.container_id(pod, "flame-demo")
    assert {_, 0} = RealNode.ctr(["tasks", "kill", "--signal", "SIGKILL", id])

    await_gone!(ctx, runner.pod, 60_000)

    events =
      ctx
      |> deletions(runner.pod, "pods")
      |> Enum.reject(&(&1["user"] == "system:node:flame-realnode"))

    assert [%{"pod_name" => deleter, "code" => 200}] = events,
           "pods/#{runner.pod} deleted by: " <>
             inspect(Enum.map(events, &Map.take(&1, ["time", "pod_name", "user", "code"])))

    assert deleter == runner.pod

    # The kubelet restarts the parent's container: the next test has its parent.
    parent!(ctx)
  end

  # The kind suite's third scenario (test/e2e/kind_test.exs), from inside the parent pod: the
  # app's second pool names an image no registry serves.
  test "a pool whose image cannot be pulled: the BootError reaches the caller in the parent",
       ctx do
    parent = parent!(ctx)
    assert {:error, message} = rpc(parent, FlameDemo, :bad_image_call, [60_000])
    assert is_binary(message), "no boot failure was reported: #{inspect(message)}"
    assert message =~ ~s(cannot pull image "registry.invalid/flame-demo:missing")

    # The failed boot left no pod (other tests' runners of the good pool may still idle).
    refute Enum.any?(runner_pods(ctx), fn pod ->
             Enum.any?(pod["spec"]["containers"], &(&1["image"] =~ "registry.invalid"))
           end)
  end

  # FLAME retries a failed boot at once while its callers wait; the back-off keeps a pool whose
  # image is missing from creating a pod per retry.
  test "a 30 s FLAME.call on a missing-image pool: a few pods, the other boots cached", ctx do
    parent = parent!(ctx)
    image = "registry.invalid/flame-demo:missing"
    pool = start_pool!(parent, manifest: %{"spec" => %{"containers" => [%{"image" => image}]}})
    on_exit(fn -> stop_pool(parent, pool) end)
    mine = %{"pod_name" => parent.name, "namespace" => ctx.namespace}
    before = MapSet.new(RealNode.audit_events(mine), & &1["audit_id"])

    call = [pool, &FlameDemo.runner_info/0, [timeout: 30_000]]
    assert {:exception, reason} = catch_exit(rpc(parent, FLAME, :call, call))
    assert inspect(reason) =~ "timeout"
    stop_pool(parent, pool)

    RealNode.wait_until!(
      fn -> not Enum.any?(runner_pods(ctx), &(inspect(&1["spec"]) =~ image)) end,
      60_000,
      "the missing-image pool's pods gone"
    )

    counts =
      RealNode.audit_events(mine)
      |> Enum.reject(&MapSet.member?(before, &1["audit_id"]))
      |> FLAMEK8sBackend.Test.AuditLog.count_requests()

    pods = Map.get(counts, {"create", "pods", ""}, 0)
    requests = counts |> Map.values() |> Enum.sum()

    IO.puts(
      "real node: a 30 s FLAME.call on a missing-image pool created #{pods} pods " <>
        "(#{requests} API requests of the parent)"
    )

    # A boot every 1-2 s without the back-off; with it, boots at about 0, 3, 7 and 15 s.
    assert pods in 1..6
  end

  test "a runner over its memory limit: OOMKilled, exit code 137", ctx do
    parent = parent!(ctx)
    resources = %{"requests" => %{"memory" => "24Mi"}, "limits" => %{"memory" => "24Mi"}}
    manifest = %{"spec" => %{"containers" => [%{"resources" => resources}]}}

    assert {:error, %BootError{reason: {:container_exited, info}} = error} =
             rpc(parent, FlameDemo, :call_with, [[manifest: manifest], [timeout: 60_000]])

    assert %{reason: "OOMKilled", exit_code: 137} = info
    assert Exception.message(error) =~ "OOMKilled"
    [_, name] = String.split(error.pod, "/")
    await_gone!(ctx, name, 30_000)
  end

  test "a :node_selector the node has: the runner boots on it, with that selector alone", ctx do
    parent = parent!(ctx)
    selector = %{"kubernetes.io/hostname" => RealNode.info().node_name}
    pool = start_pool!(parent, node_selector: selector)
    on_exit(fn -> stop_pool(parent, pool) end)

    runner = rpc(parent, FLAME, :call, [pool, &FlameDemo.runner_info/0])
    assert Atom.to_string(runner.node) == "#{runner.pod}@#{runner.pod_ip}"
    {:ok, pod} = Kube.get_pod(ctx.kube, ctx.namespace, runner.pod)
    assert pod["spec"]["nodeSelector"] == selector
    assert pod["spec"]["nodeName"] == RealNode.info().node_name
  end

  # How a caller's hand-back (checkin) of a runner that stopped under it can exit: the Runner
  # process is gone, or stops with the reason its runner's terminator went with.
  @checkin_exits [:noproc, :shutdown, :normal, :noconnection]

  # Graceful termination: a deletion with the pod's own grace period (a drain, a reclaim) sends
  # the runner SIGTERM mid-call.
  test "a runner deleted mid-call: the call completes within the grace period, and the pod goes",
       ctx do
    parent = parent!(ctx)
    pool = start_pool!(parent, [])
    on_exit(fn -> stop_pool(parent, pool) end)
    forward_runner_events!(parent)

    %{runner: runner, result: result, stopped_in: ms, deleted_at: deleted_at} =
      delete_mid_call!(ctx, parent, pool, 4_000)

    IO.puts("real node: a call in flight on a deleted runner returned #{ms} ms after the DELETE")
    # The call ran to its end on the stopping runner. Its caller then hands the runner back to
    # FLAME's Runner process in the parent, which may have stopped already, or be stopping with
    # the runner's terminator's reason: the terminator goes once its last call ended (FLAME
    # 0.5.3 does the same).
    case result do
      {:ok, {:done, %{pod: pod}}} -> assert pod == runner.pod
      {:exit, {why, {GenServer, :call, [_, {:checkin, _, _}, _]}}} -> assert why in @checkin_exits
      # The pool saw that Runner process go first and killed its caller (as for single_use).
      {:exit, :killed} -> :ok
    end

    await_gone!(ctx, runner.pod, 60_000)
    refute Enum.any?(runner_pods(ctx), &(&1["metadata"]["name"] == runner.pod))

    # The parent's backend tells why the runner went.
    assert_receive {:telemetry, [:flame_k8s_backend, :runner, :down], %{system_time: at},
                    %{runner_name: name, reason: "Deleted"}},
                   30_000

    assert name == runner.pod
    IO.puts("real node: :down (Deleted) #{since_ms(deleted_at, at)} ms after the DELETE")
  end

  test "a runner OOM-killed mid-call: the caller exits, and :down says OOMKilled, exit code 137",
       ctx do
    parent = parent!(ctx)
    resources = %{requests: %{"memory" => "256Mi"}, limits: %{"memory" => "256Mi"}}
    pool = start_pool!(parent, resources: resources)
    on_exit(fn -> stop_pool(parent, pool) end)
    forward_runner_events!(parent)

    # Booted within its limit; the call then allocates far over it.
    runner = rpc(parent, FLAME, :call, [pool, &FlameDemo.runner_info/0])
    assert {:exit, _} = rpc(parent, FlameDemo, :allocate, [pool, 1_024])
    killed_at = System.system_time()

    assert_receive {:telemetry, [:flame_k8s_backend, :runner, :down], %{system_time: at},
                    %{runner_name: name, reason: "OOMKilled", exit_code: 137}},
                   30_000

    assert name == runner.pod
    IO.puts("real node: :down (OOMKilled) #{since_ms(killed_at, at)} ms after the caller's exit")
    await_gone!(ctx, runner.pod, 60_000)
  end

  test "a runner deleted mid-call that outlasts the terminator's shutdown timeout: a clean exit within the grace period",
       ctx do
    parent = parent!(ctx)
    # The runner's terminator drains for 2 s (its release's config, from its env); the backend
    # gives its pod that plus 10 s.
    env = %{"FLAME_DEMO_TERMINATOR_SHUTDOWN_MS" => "2000"}
    pool = start_pool!(parent, env: env, shutdown_timeout: 2_000)
    on_exit(fn -> stop_pool(parent, pool) end)
    events = collect_parent_events!(parent)

    %{runner: runner, result: result, stopped_in: ms, pod: pod, deleted_at: deleted_at} =
      delete_mid_call!(ctx, parent, pool, 120_000)

    IO.puts(
      "real node: a call outlasting its deleted runner's drain exited #{ms} ms after the DELETE"
    )

    assert pod["spec"]["terminationGracePeriodSeconds"] == 12
    # FLAME kills the callers of a runner that went down (or their link to the call does).
    assert {:exit, _} = result
    # Before Kubernetes' SIGKILL: the runner stopped on its own.
    if ms >= 12_000, do: flunk(late_exit_report(parent, runner, ms, deleted_at, events))
    await_gone!(ctx, runner.pod, 60_000)
  end

  # The backend's events in the parent that tell what it learnt of a runner going (the
  # runner's own deletes reported at its shutdown, the reaper's, :disruption, :down), each with
  # the time it reached this VM: a collector process here timestamps them as they come.
  defp collect_parent_events!(parent) do
    collector = spawn_link(fn -> collect([]) end)
    events = [[:flame_k8s_backend, :cleanup, :delete] | @runner_events]
    forward_parent_events!(parent, events, collector)
    collector
  end

  defp collect(seen) do
    receive do
      {:telemetry, event, _measurements, meta} ->
        collect([{System.system_time(), List.last(event), meta} | seen])

      {:collected, from} ->
        send(from, {:collected, Enum.reverse(seen)})
        collect(seen)
    end
  end

  # What the parent saw of a runner whose caller exited late: the backend's events (see
  # collect_parent_events!/1) and the parent's log lines that name the runner.
  defp late_exit_report(parent, runner, ms, deleted_at, collector) do
    send(collector, {:collected, self()})
    assert_receive {:collected, seen}

    events =
      for {at, event, meta} <- seen, runner.pod in [meta[:name], meta[:runner_name]] do
        what = Map.take(meta, [:deleter, :trigger, :kind, :result, :reason])
        "  #{since_ms(deleted_at, at)} ms: #{event} #{inspect(what)}"
      end

    container = hd(parent.pod["spec"]["containers"])["name"]

    lines =
      parent.pod
      |> RealNode.pod_log(container)
      |> Enum.filter(&String.contains?(&1, runner.pod))
      |> Enum.take(-30)

    """
    the caller exited #{ms} ms after the DELETE, not within the 12 s grace period
    the backend's events in the parent, by when they reached the test (ms after the DELETE):
    #{Enum.join(events, "\n")}
    the parent's log lines naming #{runner.pod}:
    #{Enum.join(lines, "\n")}
    """
  end

  # Several parents cluster with DNSCluster. A hidden runner is linked to its own parent only:
  # a link between a parent and the other parent's runner that drops cannot make Erlang's
  # global cut others ("to prevent overlapping partitions"), which stopped the runners of both
  # parents when runners were visible.
  test "two parents, hidden runners: a dropped link between a parent and the other's runner loses no runner and no call",
       ctx do
    scale!(ctx, 2)
    on_exit(fn -> scale!(%{ctx | kube: RealNode.kube!()}, 1) end)
    [a, b] = parents!(ctx, 2)

    # The demo's DNSCluster stand-in connects the parents through the headless Service.
    RealNode.wait_until!(
      fn -> b.node in rpc(a, Node, :list, []) end,
      60_000,
      "#{a.node} and #{b.node} connected"
    )

    pools = for parent <- [a, b], do: {parent, start_pool!(parent, hidden: true)}
    on_exit(fn -> for {parent, pool} <- pools, do: stop_pool(parent, pool) end)
    [{_, pool_a}, {_, pool_b}] = pools

    # A call in flight on each parent's runner while the link drops.
    test = self()

    calls =
      for {parent, pool} <- pools do
        Task.async(fn -> rpc(parent, FlameDemo, :call_in_flight, [pool, 3_000, test]) end)
      end

    assert_receive {:running, ra}, 90_000
    assert_receive {:running, rb}, 90_000
    [ra, rb] = Enum.sort_by([ra, rb], &(&1.node in rpc(a, Node, :list, [:connected])), :desc)
    assert ra.node in rpc(a, Node, :list, [:hidden])
    assert rb.node in rpc(b, Node, :list, [:hidden])
    refute rb.node in rpc(a, Node, :list, [:connected])
    refute ra.node in rpc(b, Node, :list, [:connected])

    # A link from parent A to B's runner, then dropped.
    assert rpc(a, Node, :connect, [rb.node])
    assert rpc(a, :erlang, :disconnect_node, [rb.node])

    for call <- calls, do: assert({:ok, {:done, _}} = Task.await(call, 60_000))
    assert b.node in rpc(a, Node, :list, [])
    assert rpc(a, FLAME, :call, [pool_a, &FlameDemo.runner_info/0]).pod == ra.pod
    assert rpc(b, FLAME, :call, [pool_b, &FlameDemo.runner_info/0]).pod == rb.pod
  end

  test "DNS as DNSCluster uses it: the headless Service lists the parent, not its runners", ctx do
    parent = parent!(ctx)
    pool = start_pool!(parent, [])
    on_exit(fn -> stop_pool(parent, pool) end)
    runner = rpc(parent, FLAME, :call, [pool, &FlameDemo.runner_info/0])
    want = [parent.ip]

    # From the parent pod, by the short name (the pod's resolv.conf search list), as
    # :inet_res does it for DNSCluster.
    RealNode.wait_until!(
      fn ->
        case rpc(parent, :inet_res, :getbyname, [~c"flame-demo-headless", :a]) do
          {:ok, {:hostent, _, _, :inet, 4, ips}} ->
            # Runners of other pools of this parent may be listed too.
            want -- Enum.map(ips, &to_string(:inet.ntoa(&1))) == []

          _ ->
            false
        end
      end,
      30_000,
      "flame-demo-headless -> #{inspect(want)} in the parent pod"
    )

    # And from this host, against the node's CoreDNS.
    name = "flame-demo-headless.#{ctx.namespace}.svc.cluster.local"
    ips = Enum.map(RealNode.dns_lookup(name), &to_string(:inet.ntoa(&1)))
    assert want -- ips == []
    refute runner.pod_ip in ips
  end

  test "placeholders (examples/warm-capacity) keep room: a runner that does not fit preempts one, even under unschedulable: :fail",
       ctx do
    parent = parent!(ctx)
    node = RealNode.info().node_name
    placeholders = "app.kubernetes.io/name=my-app-flame-placeholder"

    # No pod on the node is going away: its requests would make room by themselves.
    RealNode.wait_until!(
      fn -> Enum.all?(node_pods(ctx, node), &(&1["metadata"]["deletionTimestamp"] == nil)) end,
      90_000,
      "no terminating pod on #{node}"
    )

    path = Path.join(System.tmp_dir!(), "placeholder-#{System.unique_integer([:positive])}.yaml")

    File.write!(
      path,
      File.read!("examples/warm-capacity/placeholder.yaml")
      |> String.replace("registry.k8s.io/pause:3.10", RealNode.info().pause_image)
    )

    on_exit(fn ->
      kube = RealNode.kube!()

      deployment =
        "/apis/apps/v1/namespaces/#{ctx.namespace}/deployments/my-app-flame-placeholder"

      Kube.request(kube, "DELETE", deployment)

      Kube.request(
        kube,
        "DELETE",
        "/apis/scheduling.k8s.io/v1/priorityclasses/my-app-flame-placeholder"
      )
    end)

    RealNode.create_manifests!([path], ctx.namespace)
    File.rm!(path)

    RealNode.wait_until!(
      fn ->
        {:ok, pods} = Kube.list_pods(ctx.kube, ctx.namespace, label_selector: placeholders)
        Enum.count(pods, &(&1["status"]["phase"] == "Running")) == 2
      end,
      60_000,
      "2 placeholders running"
    )

    {:ok, %{"status" => %{"allocatable" => %{"cpu" => allocatable}}}} =
      Kube.request(ctx.kube, "GET", "/api/v1/nodes/#{node}")

    requested = ctx |> node_pods(node) |> Enum.map(&cpu_requests/1) |> Enum.sum()
    free = millicpu(allocatable) - requested
    # More than is free; less than what one placeholder (500m) leaves once preempted.
    cpu = "#{free + 250}m"

    assert {:ok, runner} =
             rpc(parent, FlameDemo, :call_with, [
               [resources: %{requests: %{"cpu" => cpu}}, unschedulable: :fail],
               [timeout: 60_000]
             ])

    {:ok, %{"items" => events}} =
      Kube.request(
        ctx.kube,
        "GET",
        "/api/v1/namespaces/#{ctx.namespace}/events?fieldSelector=reason=Preempted"
      )

    assert Enum.any?(
             events,
             &String.starts_with?(&1["involvedObject"]["name"], "my-app-flame-placeholder")
           ),
           inspect(Enum.map(events, & &1["message"]))

    await_gone!(ctx, runner.pod, 60_000)
  end

  test "code_sync to a runner with a read-only root, as a non-root user: the code lands in :tmp_dir",
       ctx do
    parent = parent!(ctx)
    module = Module.concat(RealNodeTest, "CodeSyncProbe#{System.unique_integer([:positive])}")

    # Only the parent pod has this module, in a beam file of its own: the runner can run it
    # only if code sync brought it there.
    [{^module, beam}] =
      Code.compile_string("""
      defmodule #{inspect(module)} do
        def run do
          [_, uid | _] = Regex.run(~r/^Uid:\\s+(\\d+)/m, File.read!("/proc/self/status"))

          %{
            node: node(),
            uid: String.to_integer(uid),
            loaded_from: List.to_string(:code.which(__MODULE__)),
            tmp_dir: System.tmp_dir(),
            write_to_root: File.write("/flame-k8s-code-sync-probe", "")
          }
        end
      end
      """)

    :code.purge(module)
    :code.delete(module)
    ebin = "/tmp/#{module}/ebin"
    :ok = rpc(parent, File, :mkdir_p, [ebin])
    :ok = rpc(parent, File, :write, [Path.join(ebin, "#{module}.beam"), beam])

    manifest = %{
      "spec" => %{
        "securityContext" => %{"runAsNonRoot" => true, "runAsUser" => 65_534},
        # A release loads modules on demand only in interactive mode (its default is embedded),
        # and FLAME's code sync only adds the synced beams' directory to the code path.
        "containers" => [
          %{
            "securityContext" => %{"readOnlyRootFilesystem" => true},
            "env" => [%{"name" => "RELEASE_MODE", "value" => "interactive"}]
          }
        ]
      }
    }

    pool =
      start_pool!(parent, [manifest: manifest],
        # :copy_paths too: FLAME 0.5.3's pool start raises when it has nothing to copy (see
        # test/e2e/flame_features_test.exs).
        code_sync: [
          start_apps: false,
          copy_apps: false,
          copy_paths: [ebin],
          sync_beams: [ebin],
          extract_dir: {System, :tmp_dir!, []}
        ]
      )

    on_exit(fn -> stop_pool(parent, pool) end)
    result = rpc(parent, FLAME, :call, [pool, Function.capture(module, :run, 0)])

    assert result.node != parent.node
    assert result.uid == 65_534
    # A real read-only root: the kernel refuses the write for the mount (EROFS) before any
    # permission check (which would say EACCES for this user).
    assert result.write_to_root == {:error, :erofs}
    assert String.starts_with?(result.loaded_from, result.tmp_dir <> "/")

    [_, runner_pod] = Regex.run(~r/^(.+)@/, Atom.to_string(result.node))
    {:ok, pod} = Kube.get_pod(ctx.kube, ctx.namespace, runner_pod)
    [container] = pod["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] == true
    tmp_volume = Enum.find(pod["spec"]["volumes"], &(&1["name"] == "flame-tmp"))
    assert tmp_volume["emptyDir"] == %{}
    assert %{"name" => "flame-tmp", "mountPath" => result.tmp_dir} in container["volumeMounts"]
  end

  test "the Deployment's selector labels on a runner: the owner reference keeps the ReplicaSet off",
       ctx do
    parent = parent!(ctx)
    labels = parent.pod["metadata"]["labels"]
    # The pitfall in full: the runner carries every label of the ReplicaSet's selector.
    selector_labels = Map.take(labels, ["app", "pod-template-hash"])
    assert map_size(selector_labels) == 2

    pool = start_pool!(parent, labels: Map.put(selector_labels, "excluster", "flame"))
    on_exit(fn -> stop_pool(parent, pool) end)
    runner = rpc(parent, FLAME, :call, [pool, &FlameDemo.runner_info/0])

    {:ok, pod} = Kube.get_pod(ctx.kube, ctx.namespace, runner.pod)
    assert Map.take(pod["metadata"]["labels"], ["app", "pod-template-hash"]) == selector_labels

    # The ReplicaSet controller sees a pod its selector matches, but one with a controller
    # already (the parent pod): no adoption, no surplus replica deleted.
    Process.sleep(3_000)
    [rs_ref] = parent.pod["metadata"]["ownerReferences"]

    {:ok, rs} =
      Kube.request(
        ctx.kube,
        "GET",
        "/apis/apps/v1/namespaces/#{ctx.namespace}/replicasets/#{rs_ref["name"]}"
      )

    assert rs["status"]["replicas"] == 1
    {:ok, pod} = Kube.get_pod(ctx.kube, ctx.namespace, runner.pod)
    assert [%{"kind" => "Pod", "name" => owner}] = pod["metadata"]["ownerReferences"]
    assert owner == parent.name
    assert deletions(ctx, runner.pod, "pods") == []
  end

  test "the same runner without the owner reference: its ReplicaSet adopts it and deletes a surplus pod",
       ctx do
    parent = parent!(ctx)
    selector_labels = Map.take(parent.pod["metadata"]["labels"], ["app", "pod-template-hash"])

    pool =
      start_pool!(parent,
        labels: Map.put(selector_labels, "excluster", "flame"),
        omit_owner_reference: true
      )

    on_exit(fn -> stop_pool(parent, pool) end)

    # The boot may fail: the ReplicaSet may delete the runner pod while it boots.
    _ =
      try do
        rpc(parent, FLAME, :call, [pool, &FlameDemo.runner_info/0], 60_000)
      catch
        kind, reason -> {kind, reason}
      end

    rs_controller = "system:serviceaccount:kube-system:replicaset-controller"

    runner_events = fn ->
      RealNode.audit_events(%{"user" => rs_controller, "namespace" => ctx.namespace})
      |> Enum.filter(&String.starts_with?(&1["name"] || "", parent.name <> "-flame-"))
    end

    acted =
      RealNode.wait_until!(
        fn -> (events = runner_events.()) != [] and events end,
        30_000,
        "the ReplicaSet controller acting on a runner pod"
      )

    verbs = acted |> Enum.map(& &1["verb"]) |> Enum.uniq()

    IO.puts(
      "real node: ReplicaSet controller on a runner without owner reference: #{inspect(verbs)}"
    )

    # Adoption is a patch of the pod's ownerReferences; the surplus replica is then deleted.
    assert "patch" in verbs
  end

  test "the parent pod is deleted: the garbage collector removes its runners' pods",
       ctx do
    parent = parent!(ctx)
    %{runner: runner} = rpc(parent, FlameDemo, :where, [])

    # Freeze the parent's container first, so neither it nor its terminator can clean up: what
    # removes the runner is the collector, acting on the owner references.
    parent_container = RealNode.container_id(parent.pod, "flame-demo")
    assert {_, 0} = RealNode.ctr(["tasks", "pause", parent_container])

    try do
      :ok = Kube.delete_pod(ctx.kube, ctx.namespace, parent.name, grace_period: 0)
      await_gone!(ctx, runner.pod, 60_000)
    after
      RealNode.ctr(["tasks", "resume", parent_container])
    end

    gc = "system:serviceaccount:kube-system:generic-garbage-collector"
    assert [%{"user" => ^gc} | _] = deletions(ctx, runner.pod, "pods")
  end

  test "the parent outside the cluster: bin/demo --kubeconfig ... --parent-host 10.244.0.1",
       ctx do
    {image, _archive} = RealNode.info().app_image
    ns = "rn-demo-host-#{System.unique_integer([:positive])}"
    RealNode.create_namespace!(ctx.kube, ns)
    on_exit(fn -> RealNode.delete_namespace(RealNode.kube!(), ns) end)

    args = [
      "--kubeconfig",
      RealNode.info().kubeconfig,
      "--image",
      image,
      "--parent-host",
      "10.244.0.1",
      "--namespace",
      ns
    ]

    {output, status} =
      System.cmd(Path.expand("../../bin/demo", __DIR__), args, stderr_to_stdout: true)

    assert status == 0, output

    assert output =~ ~r/runner node\s+\S+@10\.244\.0\.\d+/

    assert output =~
             ~r/:math\.pi\(\) computed on\s+\S+@10\.244\.0\.\d+ \(pod IP 10\.244\.0\.\d+\)/

    assert output =~ ~r/runner pods left\s+0/
    IO.puts("real node: bin/demo on the real node:\n" <> output)
  end

  # Also on the IPv6 node (bin/test runs the :ipv6 tests there too).
  @tag :ipv6
  test "runner boots on the real node: create -> running -> remote_up, 20 boots", ctx do
    parent = parent!(ctx)

    # The backend called as FLAME calls it, in the parent pod (code evaluated there, as
    # `bin/flame_demo rpc` does): one boot at a time, each runner stopped (its owner exits)
    # before the next. boot_timings: ms since remote_boot started.
    code = """
    for _ <- 1..20 do
      test = self()

      owner =
        spawn(fn ->
          {:ok, state} = FLAMEK8sBackend.init(labels: %{"excluster" => "flame"})

          case FLAMEK8sBackend.remote_boot(state) do
            {:ok, _terminator, state} ->
              send(test, {:booted, state.runner_name, state.boot_timings})
              receive do: (:stop -> :ok)

            {:error, error} ->
              send(test, {:failed, state.runner_name, Exception.message(error)})
          end
        end)

      receive do
        {:booted, name, timings} ->
          send(owner, :stop)
          {name, timings}

        {:failed, name, message} ->
          {name, message}
      after
        90_000 -> raise "no boot in 90 s"
      end
    end
    """

    {results, _} = rpc(parent, Code, :eval_string, [code], 900_000)
    for {name, _} <- results, do: await_gone!(ctx, name, 60_000)
    {boots, failures} = Enum.split_with(results, fn {_, result} -> is_map(result) end)

    for {name, message} <- failures do
      IO.puts("real node: boot of #{name} failed: #{message}")
    end

    pct = fn key, p ->
      values = boots |> Enum.map(fn {_, t} -> t[key] end) |> Enum.reject(&is_nil/1) |> Enum.sort()
      Enum.at(values, round(p * (length(values) - 1)))
    end

    IO.puts(
      "real node#{if RealNode.ipv6?(), do: " (IPv6)"}: #{length(boots)} runner boots (#{length(failures)} failed): " <>
        "create->running p50 #{pct.(:running, 0.5)} ms " <>
        "p90 #{pct.(:running, 0.9)} ms; create->remote_up p50 #{pct.(:remote_up, 0.5)} ms " <>
        "p90 #{pct.(:remote_up, 0.9)} ms"
    )

    assert failures == []
  end
end
