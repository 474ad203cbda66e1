defmodule FLAMEK8sBackend.ConsistentReadsPerBootE2ETest do
  # Boots one after another through a pool, each ended by its idle shutdown: each boot's await
  # is the shared watch's only one, so each boot starts the watch (its LIST) and ends it. What
  # that LIST costs the API server, counted in its /metrics: a consistent read (the API server
  # reads etcd's current revision, a quorum read, then waits for its watch cache) or a read of
  # the watch cache alone. Not async: the counters are the whole server's.
  use FLAMEK8sBackend.Test.ClusterCase, async: false

  @moduletag :e2e
  @moduletag timeout: 180_000

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

  # The LISTs of pods in `ns` (the audit log's, by namespace: the simulated kubelet lists all
  # namespaces at once), and the server's consistent reads of pods (a metric of the whole
  # server, which no other test's boots add to while this one runs: it is not async).
  defp counters(kube, ns) do
    {:ok, text} = Kube.request(kube, "GET", "/metrics")

    lists =
      %{"namespace" => ns, "verb" => "list", "resource" => "pods"}
      |> LocalCluster.audit_events()
      |> Enum.uniq_by(& &1["audit_id"])
      |> length()

    %{
      lists: lists,
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
    before = counters(kube, ns)

    for _ <- 1..@boots, do: boot_until_idle_gone!(pool, ns)

    after_boots = counters(kube, ns)
    delta = Map.new(after_boots, fn {k, v} -> {k, v - before[k]} end)

    IO.puts(
      "\n#{@boots} boots one after another: LIST pods #{delta.lists / @boots} per boot, " <>
        "consistent reads of pods #{delta.consistent_reads / @boots} per boot"
    )

    assert delta.lists == @boots
    assert delta.consistent_reads == 0
  end
end
