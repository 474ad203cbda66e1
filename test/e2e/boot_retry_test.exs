defmodule FLAMEK8sBackend.BootRetryE2ETest do
  # A runner pod Kubernetes takes away before remote_up is replaced by one new pod within the
  # same boot_timeout, against the local control plane: the simulated kubelet holds the pods in
  # ContainerCreating until the test creates a file (sim-kubelet/start-when-file), and the test
  # evicts them through the API server's Eviction API meanwhile.
  use FLAMEK8sBackend.Test.ClusterCase, async: true

  @moduletag :e2e
  @moduletag timeout: 120_000

  alias FLAMEK8sBackend.BootError
  alias FLAMEK8sBackend.Test.Soak

  setup :parent_setup

  @retry [:flame_k8s_backend, :boot, :retry]
  @cleanup [:flame_k8s_backend, :cleanup, :delete]

  setup %{namespace: ns, opts: opts} do
    forward_events!([@retry, @cleanup], ns)
    gate = Path.join(LocalCluster.info().state_dir, "#{ns}-go")
    manifest = %{"metadata" => %{"annotations" => %{"sim-kubelet/start-when-file" => gate}}}
    %{gate: gate, opts: Keyword.put(opts, :manifest, manifest)}
  end

  # A boot in a process of its own (the runner's remote_up goes to the process that called
  # init/1): it sends the test its first pod's name, then its result; it stays until told to
  # go, its runner with it.
  defp start_boot(opts) do
    test = self()

    pid =
      spawn_link(fn ->
        {:ok, state} = FLAMEK8sBackend.init(opts)
        send(test, {:boot, self(), state.runner_name})
        send(test, {:booted, self(), FLAMEK8sBackend.remote_boot(state)})

        receive do
          :stop -> :ok
        end
      end)

    assert_receive {:boot, ^pid, name}, 30_000
    {pid, name}
  end

  # Evicts the boot's `nth` pod once the boot watches it: a pod evicted (and deleted by the
  # kubelet, grace 0) before the boot's LIST would be to the boot a pod deleted by someone
  # else, which is no retry. Each of the boot's pods gets a LIST + WATCH of its own (the first
  # pod's watch ended with its await), and the test opens no watch in the namespace.
  defp evict!(kube, ns, name, nth) do
    # The pod exists once its create has returned; the boot says nothing before its result.
    eventually(fn -> match?({:ok, _}, Kube.get_pod(kube, ns, name)) end, 20_000)
    eventually(fn -> pod_watches(ns) >= nth end, 20_000)

    :ok = evict_pod!(kube, ns, name)

    System.system_time()
  end

  defp pod_watches(ns) do
    %{"verb" => "watch", "resource" => "pods", "namespace" => ns, "stage" => "ResponseStarted"}
    |> LocalCluster.audit_events()
    |> length()
  end

  test "a pod evicted while it starts is replaced once: the boot succeeds with the second pod",
       %{kube: kube, namespace: ns, opts: opts, gate: gate} do
    {boot, first} = start_boot(opts)
    evicted = evict!(kube, ns, first, 1)

    assert_receive {:event, @retry, %{system_time: retried, waited: waited}, meta}, 20_000

    assert %{
             runner_name: ^first,
             reason: "EvictionByEvictionAPI",
             phase: :container_start,
             new_runner_name: second
           } = meta

    assert meta.pod == "#{ns}/#{first}"
    assert is_binary(meta.message) and waited > 0
    assert second != first and second =~ ~r/^parent-flame-[a-z2-7]{8}$/

    IO.puts(
      "\nretry: #{System.convert_time_unit(retried - evicted, :native, :microsecond) / 1000} ms " <>
        "after the eviction request returned"
    )

    # The first pod went before the second was created; the second boots.
    assert_receive {:event, @cleanup, _, %{trigger: :boot_retry, name: ^first, result: :ok}}
    assert {:error, {:api, 404, _, _}} = Kube.get_pod(kube, ns, first)
    File.write!(gate, "")
    assert_receive {:booted, ^boot, {:ok, terminator, state}}, 30_000
    assert state.runner_name == second
    assert [pod] = runner_pods(kube, ns)
    assert pod["metadata"]["name"] == second
    # Named after the second pod, the runner's node says which pod it is on.
    assert node(terminator) |> Atom.to_string() |> String.starts_with?(second <> "@")
    refute_received {:event, @retry, _, _}

    runner = node(terminator)
    Node.monitor(runner, true)
    send(boot, :stop)
    assert_receive {:nodedown, ^runner}, 30_000
    assert Soak.await_no_runner_objects(kube, ns, 30_000) == :ok
  end

  test "evicted twice: one retry only, and the boot fails with the eviction's reason and phase",
       %{kube: kube, namespace: ns, opts: opts} do
    {boot, first} = start_boot(opts)
    evict!(kube, ns, first, 1)
    assert_receive {:event, @retry, _, %{runner_name: ^first, new_runner_name: second}}, 20_000
    evict!(kube, ns, second, 2)

    assert_receive {:booted, ^boot, {:error, %BootError{} = error}}, 30_000

    assert %BootError{
             phase: :container_start,
             reason: {:disrupted, %{reason: "EvictionByEvictionAPI", message: message}},
             pod: pod
           } = error

    assert pod == "#{ns}/#{second}"
    assert is_binary(message)
    assert Exception.message(error) =~ "taken away by Kubernetes (EvictionByEvictionAPI)"
    refute_received {:event, @retry, _, _}
    send(boot, :stop)
    assert Soak.await_no_runner_objects(kube, ns, 30_000) == :ok
  end

  test "the runner's own faults are never retried: a crash on start fails the boot at once",
       %{namespace: ns, opts: opts} do
    labels = %{"sim-kubelet/fail" => "crash", "sim-kubelet/exit-code" => "3"}
    opts = Keyword.put(opts, :manifest, %{"metadata" => %{"labels" => labels}})
    {boot, _first} = start_boot(opts)

    assert_receive {:booted, ^boot,
                    {:error, %BootError{reason: {:container_exited, %{exit_code: 3}}}}},
                   30_000

    refute_received {:event, @retry, _, _}
    send(boot, :stop)
    assert Soak.await_no_runner_objects(LocalCluster.kube!(), ns, 30_000) == :ok
  end
end
