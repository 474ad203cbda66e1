defmodule FLAMEK8sBackend.ConsistentReadsPerBootE2ETest do
  # Boots one after another through a pool, each ended by its idle shutdown: each boot's await
  # is the shared watch's only one, so each boot starts the watch (its LIST) and ends it. What
  # that LIST costs the API server, counted in its /metrics: a consistent read (the API server
  # reads etcd's current revision, a quorum read, then waits for its watch cache) or a read of
  # the watch cache alone. Not async: the counters are the whole server's.
  use FLAMEK8sBackend.Test.ClusterCase, async: false

  @moduletag :e2e
  @moduletag timeout: 180_000

  alias FLAMEK8sBackend.Test.RemoteFuns

  @boots 3

  defp opts(ns) do
    [parent_pod: {ns, "parent"}, kubeconfig: LocalCluster.info().kubeconfig, boot_timeout: 30_000]
  end

  defp sum(text, metric, labels) do
    for line <- String.split(text, "\n"),
        String.starts_with?(line, metric <> "{"),
        Enum.all?(labels, fn {k, v} -> line =~ ~s(#{k}="#{v}") end),
        reduce: 0 do
      acc ->
        {value, _} = line |> String.split(" ") |> List.last() |> Float.parse()
        acc + round(value)
    end
  end

  defp counters(kube) do
    {:ok, text} = Kube.request(kube, "GET", "/metrics")

    %{
      lists: sum(text, "apiserver_request_total", verb: "LIST", resource: "pods"),
      consistent_reads: sum(text, "apiserver_watch_cache_consistent_read_total", resource: "pods")
    }
  end

  test "boots one after another: their watch's LIST reads the API server's cache, never etcd's quorum",
       %{kube: kube, namespace: ns} do
    LocalCluster.create_parent_pod!(kube, ns)
    # The first init reads the parent pod and sweeps (a consistent LIST): once per VM and per
    # minute, not per boot.
    {:ok, _} = FLAMEK8sBackend.init(opts(ns))
    pool = start_pool!(opts(ns), idle_shutdown_after: short_idle_ms())
    before = counters(kube)

    for _ <- 1..@boots do
      info = FLAME.call(pool, &RemoteFuns.whereami/0)
      Node.monitor(info.node, true)
      assert_receive {:nodedown, _}, 30_000
      # Waiting on the kubelet's log sends no request.
      eventually(
        fn ->
          Enum.any?(
            LocalCluster.kubelet_log(ns),
            &(&1 =~ "#{info.pod_name}: removed from the API")
          )
        end,
        30_000
      )
    end

    after_boots = counters(kube)
    delta = Map.new(after_boots, fn {k, v} -> {k, v - before[k]} end)

    IO.puts(
      "\n#{@boots} boots one after another: LIST pods #{delta.lists / @boots} per boot, " <>
        "consistent reads of pods #{delta.consistent_reads / @boots} per boot"
    )

    assert delta.lists == @boots
    assert delta.consistent_reads == 0
  end
end
