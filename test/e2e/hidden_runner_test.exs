defmodule FLAMEK8sBackend.HiddenRunnerE2ETest do
  # Runners as hidden Erlang nodes (`hidden: true`), end to end against the local control
  # plane: FLAME works with them (calls, idle shutdown, a parent VM that dies, the reaper), and
  # what they cannot do that a visible runner can (`:pg`, `:global`, `Node.list()`), which the
  # option's documentation states. Runner pods are BEAM nodes started by the simulated kubelet
  # from the runner manifest as built, so the `-hidden` they get is what the backend put in
  # their ERL_AFLAGS.
  use FLAMEK8sBackend.Test.ClusterCase, async: true

  @moduletag :e2e
  @moduletag timeout: 180_000

  alias FLAMEK8sBackend.Test.{CleanupEvents, DistributionProbe, RemoteFuns}
  alias FLAMEK8sBackend.Test.Soak.ParentVM

  # How long the runner waits for an event that a visible runner gets and a hidden one never
  # does (a `:pg` join, a nodeup): the bound of a negative, never a measured duration.
  @absent_wait 3_000

  setup :parent_setup

  defp app_env(pod) do
    [container] = pod["spec"]["containers"]
    Map.new(container["env"], &{&1["name"], &1["value"]})
  end

  defp secrets(kube, ns) do
    {:ok, %{"items" => items}} = Kube.request(kube, "GET", "/api/v1/namespaces/#{ns}/secrets")
    Enum.map(items, & &1["metadata"]["name"])
  end

  test "a call runs on a hidden runner, which only the parent's Node.list(:hidden) lists; " <>
         "idle shutdown ends it and the reaper, told by its nodedown, deletes pod and secret",
       %{kube: kube, namespace: ns, opts: opts} do
    CleanupEvents.forward!(&(&1.namespace == ns))

    {info, log} =
      ExUnit.CaptureLog.with_log(fn ->
        pool =
          start_pool!(Keyword.put(opts, :hidden, true),
            idle_shutdown_after: short_idle_ms(),
            log: :info
          )

        info = FLAME.call(pool, &RemoteFuns.whereami/0)
        # Right after the call: the runner is still up, its idle timer only just restarted.
        listed = {info.node in Node.list(:hidden), info.node in Node.list()}

        [pod] = runner_pods(kube, ns)
        assert app_env(pod)["ERL_AFLAGS"] == "-hidden"

        Node.monitor(info.node, true)
        assert_receive {:nodedown, node}, 30_000
        assert node == info.node

        # The simulated kubelet mounts no token, so the runner cannot delete itself: the
        # parent's reaper deletes both.
        assert_receive {:cleanup, _, %{deleter: :reaper, kind: :pod, result: :ok}}, 30_000
        assert_receive {:cleanup, _, %{deleter: :reaper, kind: :secret, result: :ok}}, 30_000
        Map.put(info, :listed, listed)
      end)

    assert info.listed == {true, false}
    # Deleted with its grace period: gone once the kubelet has seen its container end.
    eventually(fn -> runner_pods(kube, ns) == [] and secrets(kube, ns) == [] end, 30_000)
    # The reaper deleted them once the runner was down: on the hidden node's nodedown when
    # its terminator went while the node was still connected (the usual order), or at once
    # when the node was gone first (a parent slow to handle the terminator's DOWN); never
    # at the end of the grace period it gives a node that stays up.
    assert log =~ "deleted runner pod #{ns}/#{info.pod_name} (runner "
    refute log =~ "runner node still up"
  end

  # FLAME's Runner logs its remote terminator's noconnection.
  @tag capture_log: true
  test "a hidden runner whose VM dies is reaped", %{kube: kube, namespace: ns, opts: opts} do
    CleanupEvents.forward!(&(&1.namespace == ns))
    pool = start_pool!(Keyword.put(opts, :hidden, true))
    runner = FLAME.call(pool, &RemoteFuns.whereami/0).node
    assert runner in Node.list(:hidden)

    Node.monitor(runner, true)
    {caller, monitor} = spawn_monitor(fn -> FLAME.call(pool, RemoteFuns.halt_vm()) end)
    assert_receive {:nodedown, ^runner}, 30_000
    assert_receive {:DOWN, ^monitor, :process, ^caller, _}, 30_000
    assert_receive {:cleanup, _, %{deleter: :reaper, kind: :pod, result: :ok}}, 30_000
    assert_receive {:cleanup, _, %{deleter: :reaper, kind: :secret, result: :ok}}, 30_000
    eventually(fn -> runner_pods(kube, ns) == [] and secrets(kube, ns) == [] end, 30_000)
  end

  # The parent is an `elixir` OS process of its own (the soak's ParentVM): a hidden runner's
  # terminator sees no nodedown of the parent (`:global_group.monitor_nodes/1` reports visible
  # nodes only), so what stops it is its monitor of the parent's pid (DOWN, noconnection).
  test "a hidden runner stops when its parent VM dies", %{kube: kube, namespace: ns, opts: opts} do
    {port, os_pid} = ParentVM.start(Keyword.put(opts, :hidden, true), "boot")
    on_exit(fn -> System.cmd("kill", ["-KILL", os_pid], stderr_to_stdout: true) end)

    assert {:ok, "BOOTED " <> names} = ParentVM.line(port)
    [pod, _runner_node] = String.split(names, " ")
    {:ok, runner_pod} = Kube.get_pod(kube, ns, pod)
    assert app_env(runner_pod)["ERL_AFLAGS"] == "-hidden"

    {:ok, await} = Kube.await_pod(kube, ns, pod, timeout: 60_000, report_ready: false)
    assert_receive {:flame_k8s, ref, {:running, _}} when ref == await.ref, 30_000

    {_, 0} = System.cmd("kill", ["-KILL", os_pid])
    assert ParentVM.await_exit(port) == :ok

    # The runner VM ended itself, so its container finished (the dead parent deleted nothing).
    ref = await.ref

    assert_receive {:flame_k8s, ^ref, {:failed, {:container_exited, %{container: "app"}}}},
                   60_000
  end

  # What `hidden: true` costs, next to a visible runner of the same parent: a `:pg` group
  # (Phoenix.PubSub's default adapter) joined on the parent, a `:global` name registered on
  # the parent, and the parent's other visible nodes (here a second parent, as DNSCluster
  # would connect the app's replicas). The visible runner reaches all three; `:global`
  # connects it to the other parent, which is how a lost link to another parent's runner
  # could cut a parent's own runners.
  test "a hidden runner sees no :pg group, :global name or node of the parent's cluster; " <>
         "a visible runner sees them all",
       %{opts: opts} do
    scope = :"hidden_test_scope_#{System.unique_integer([:positive])}"
    group = :parent_group
    global_name = {__MODULE__, make_ref()}

    start_supervised!(%{id: scope, start: {:pg, :start_link, [scope]}})
    :ok = :pg.join(scope, group, self())
    :yes = :global.register_name(global_name, self())
    on_exit(fn -> :global.unregister_name(global_name) end)

    # Linked to this test's process: it stops with it.
    {:ok, _other_parent, other_node} =
      :peer.start_link(%{
        name: :"other_parent_#{System.unique_integer([:positive])}",
        host: ~c"127.0.0.1",
        longnames: true,
        args: [~c"-setcookie", Atom.to_charlist(Node.get_cookie())]
      })

    assert other_node in Node.list()

    probe = DistributionProbe.observe(global_name, scope, group, other_node, @absent_wait)
    visible_pool = start_pool!(opts)
    hidden_pool = start_pool!(Keyword.put(opts, :hidden, true))

    [visible, hidden] =
      [visible_pool, hidden_pool]
      |> Enum.map(fn pool -> Task.async(fn -> FLAME.call(pool, probe, timeout: 60_000) end) end)
      |> Task.await_many(90_000)

    me = self()

    assert %{hidden_flag?: false, global: ^me, pg_members: [^me], other_connected?: true} =
             visible

    assert node() in visible.visible
    assert visible.node in Node.list()

    assert %{hidden_flag?: true, global: :undefined, pg_members: [], other_connected?: false} =
             hidden

    assert hidden.visible == []
    assert hidden.hidden == [node()]
    assert hidden.connected == [node()]
    assert hidden.node in Node.list(:hidden)
    refute hidden.node in Node.list()
    refute hidden.node in :erpc.call(other_node, :erlang, :nodes, [:connected])
    assert visible.node in :erpc.call(other_node, :erlang, :nodes, [:connected])
  end
end
