defmodule FLAMEK8sBackend.APIServerFaultsTest do
  # The API server dies under running boots: SIGKILLed and restarted on the same etcd and port
  # (LocalCluster.restart_apiserver!/0), or unreachable for longer than the boot timeout (a
  # TcpProxy in front of it, paused or cut). Not async: every test module shares this one API
  # server, and no other test may see it die.
  use FLAMEK8sBackend.Test.ClusterCase, async: false

  @moduletag :e2e
  @moduletag timeout: 180_000

  alias FLAMEK8sBackend.BootError
  alias FLAMEK8sBackend.Test.{Soak, TcpProxy}

  setup :parent_setup

  # A boot running in a process of its own (init there too: that process is the FLAME parent
  # its runner's terminator watches, so the runner ends when it does). It reports
  # {:booted, name, result, elapsed_ms} and, when it booted, waits for :stop.
  defp start_boot(opts, go? \\ true) do
    test = self()

    pid =
      spawn(fn ->
        {:ok, state} = FLAMEK8sBackend.init(opts)
        send(test, {:inited, self(), state.runner_name})

        unless go? do
          receive do: (:go -> :ok)
        end

        started = System.monotonic_time(:millisecond)
        result = FLAMEK8sBackend.remote_boot(state)
        elapsed = System.monotonic_time(:millisecond) - started
        send(test, {:booted, self(), state.runner_name, result, elapsed})
        if match?({:ok, _, _}, result), do: receive(do: (:stop -> :ok))
      end)

    assert_receive {:inited, ^pid, name}, 30_000
    {pid, name}
  end

  defp await_boot({pid, name}, timeout) do
    assert_receive {:booted, ^pid, ^name, result, elapsed}, timeout
    {pid, name, result, elapsed}
  end

  defp with_labels(opts, labels),
    do: Keyword.put(opts, :manifest, %{"metadata" => %{"labels" => labels}})

  # Runs `fun` with the kube-apiserver killed (given what the kill answered) and starts it
  # again however `fun` ends: a failed assertion must not leave the server down for the tests
  # after it.
  defp while_apiserver_down(fun) do
    killed = LocalCluster.kill_apiserver!()

    try do
      fun.(killed)
    after
      LocalCluster.start_apiserver!()
    end
  end

  defp bound?(kube, ns, name) do
    match?(
      {:ok, %{"spec" => %{"nodeName" => node}}} when is_binary(node),
      Kube.get_pod(kube, ns, name)
    )
  end

  # A transport error as the backend reports it: the phase it hit and Kube's error, or a
  # timeout naming the phase. A create that went out is reported with the transport error
  # that left its outcome open.
  defp assert_transport_failure(
         %BootError{reason: {:outcome_unknown, %{reason: reason, settled_at: at}}} = error
       )
       when is_integer(at) do
    assert error.phase in [:create_secret, :create_pod], "unexpected phase in #{inspect(error)}"
    assert_transport_failure(%{error | reason: reason})
  end

  defp assert_transport_failure(%BootError{phase: phase, reason: reason} = error) do
    assert phase in [:create_secret, :create_pod, :scheduling, :container_start, :remote_up],
           "unexpected phase in #{inspect(error)}"

    assert match?({:connect, message} when is_binary(message), reason) or
             match?({:timeout, _}, reason),
           "not a transport error: #{inspect(error)}"

    assert Exception.message(error) =~ ~r/failed while \w/
  end

  test "boots in flight across a kube-apiserver SIGKILL and restart complete or fail with phase and transport error; nothing leaks",
       %{kube: kube, namespace: ns, opts: opts} do
    # Boots whose pods wait in ContainerCreating until the test opens their gate after the
    # restart, so they are in the watch when the API server dies and their runners come up
    # after it is back; and boots whose first request meets the dead server.
    gate = Path.join(LocalCluster.info().state_dir, "#{ns}-go")
    manifest = %{"metadata" => %{"annotations" => %{"sim-kubelet/start-when-file" => gate}}}
    in_watch = for _ <- 1..3, do: start_boot(Keyword.put(opts, :manifest, manifest))

    for {_pid, name} <- in_watch,
        do: eventually(fn -> match?({:ok, _}, Kube.get_pod(kube, ns, name)) end, 20_000)

    at_the_kill = for _ <- 1..3, do: start_boot(opts, false)

    fast =
      while_apiserver_down(fn %{killed_pid: killed} ->
        assert is_integer(killed)
        for {pid, _} <- at_the_kill, do: send(pid, :go)
        # Those three have now hit the dead server, or are retrying: let the server come back.
        for boot <- at_the_kill, do: await_boot(boot, 60_000)
      end)

    File.write!(gate, "")
    watched = for boot <- in_watch, do: await_boot(boot, 60_000)

    for {_pid, _name, {:error, error}, _} <- fast, do: assert_transport_failure(error)

    # The watch resumed: every boot that was in it when the server died came up.
    for {_pid, name, result, _} <- watched do
      assert {:ok, _terminator, _state} = result, "#{name}: #{inspect(result)}"
    end

    for {pid, _, _, _} <- fast ++ watched, do: send(pid, :stop)
    assert Soak.await_no_runner_objects(kube, ns, 60_000) == :ok
  end

  test "the shared watch resumes after a restart without losing a pod's events", %{
    kube: kube,
    namespace: ns
  } do
    labels = %{"fault-watch" => "shared"}
    selector = "fault-watch=shared"
    gate = Path.join(LocalCluster.info().state_dir, "#{ns}-during-go")
    marker = Path.join(LocalCluster.info().state_dir, "#{ns}-during-started")

    {:ok, _} =
      Kube.create_pod(
        kube,
        ns,
        LocalCluster.pod_manifest("before", "sleeper:test", args: ["300"], labels: labels)
      )

    # The simulated kubelet keeps it in ContainerCreating until the test creates `gate`.
    during =
      LocalCluster.pod_manifest("during", "shell:test",
        args: ["-c", "touch #{marker}; exec sleep 300"],
        labels: labels
      )
      |> put_in(["metadata", "annotations"], %{"sim-kubelet/start-when-file" => gate})

    {:ok, _} = Kube.create_pod(kube, ns, during)

    await = fn name ->
      {:ok, %{ref: ref}} =
        Kube.await_pod(kube, ns, name, timeout: 90_000, label_selector: selector)

      ref
    end

    before_ref = await.("before")
    during_ref = await.("during")
    assert_receive {:flame_k8s, ^before_ref, {:ready, _}}, 30_000
    refute_received {:flame_k8s, ^during_ref, _}

    # The simulated kubelet binds the pod, then waits for the gate: a pod not yet bound when
    # the server dies could never start while it is down.
    eventually(fn -> bound?(kube, ns, "during") end, 20_000)

    # The container starts while nobody can hear of it; its status reaches the API server only
    # after the restart, where the watch must see it.
    while_apiserver_down(fn _killed ->
      File.write!(gate, "")
      eventually(fn -> File.exists?(marker) end, 30_000)
    end)

    {:ok, _} =
      Kube.create_pod(
        kube,
        ns,
        LocalCluster.pod_manifest("after", "sleeper:test", args: ["300"], labels: labels)
      )

    after_ref = await.("after")

    assert_receive {:flame_k8s, ^during_ref, {:ready, %{"metadata" => %{"name" => "during"}}}},
                   60_000

    assert_receive {:flame_k8s, ^after_ref, {:ready, %{"metadata" => %{"name" => "after"}}}},
                   60_000
  end

  # Boots through a proxy that is paused (a partition: requests hang) or cut (refused) once
  # two boots are in the watch and two more are about to start; the proxy comes back when
  # every boot has returned. Returns each boot's {name, result, elapsed_ms}.
  defp boots_while_unreachable(%{kube: kube, namespace: ns, opts: opts}, mode, budget) do
    proxy = TcpProxy.start!(URI.parse(LocalCluster.info().server).port)

    opts = Keyword.merge(opts, [kubeconfig: LocalCluster.kubeconfig_via!(proxy.url)] ++ budget)

    slow = with_labels(opts, %{"sim-kubelet/start-delay-ms" => "60000"})
    in_watch = for _ <- 1..2, do: start_boot(slow)

    for {_pid, name} <- in_watch,
        do: eventually(fn -> match?({:ok, _}, Kube.get_pod(kube, ns, name)) end, 20_000)

    not_started = for _ <- 1..2, do: start_boot(opts, false)
    if mode == :pause, do: TcpProxy.pause(proxy), else: TcpProxy.cut(proxy)
    for {pid, _} <- not_started, do: send(pid, :go)

    results =
      for boot <- in_watch ++ not_started do
        {_pid, name, result, elapsed} = await_boot(boot, 60_000)
        {name, result, elapsed}
      end

    if mode == :pause, do: TcpProxy.resume(proxy), else: TcpProxy.restore(proxy)
    results
  end

  @budget [boot_timeout: 4_000, request_timeout: 1_500]

  for mode <- [:pause, :cut] do
    test "API server unreachable (#{mode}) longer than boot_timeout: every boot fails with phase and transport error",
         context do
      results = boots_while_unreachable(context, unquote(mode), @budget)

      for {name, result, _elapsed} <- results do
        assert {:error, %BootError{} = error} = result, "#{name}: #{inspect(result)}"
        assert_transport_failure(error)

        with %BootError{reason: {:timeout, %{waited_ms: waited}}} <- error,
             do: assert(waited <= @budget[:boot_timeout])
      end
    end

    # A failed boot reads its diagnostics and hands its deletes to the reaper within a request
    # timeout past its deadline; the reaper retries them in the background until the API
    # server is back. Before that bound, with boot_timeout 4 s and request_timeout 1.5 s:
    # paused, boots returned after 12-16 s and the pods and secrets of the boots that were in
    # the watch were left; cut, after 5.5 s, with the same leak.
    test "API server unreachable (#{mode}): no boot outlives boot_timeout by more than a request timeout, nothing leaks once it is back",
         context do
      results = boots_while_unreachable(context, unquote(mode), @budget)

      overruns =
        for {name, _result, elapsed} <- results,
            elapsed > @budget[:boot_timeout] + @budget[:request_timeout],
            do: {name, elapsed}

      assert overruns == []
      assert Soak.await_no_runner_objects(context.kube, context.namespace, 30_000) == :ok
    end
  end
end
