defmodule Bench.Section.Readiness do
  @moduledoc """
  Section 1: how soon each wait strategy sees a `sleeper:test` pod ready after the kubelet
  wrote its status, one pod at a time and in a concurrent batch.
  """

  alias Bench.{
    ApiRequests,
    Budget,
    Concurrent,
    ControlPlane,
    KubeletLog,
    Report,
    SleeperPods,
    Stats
  }

  alias Bench.Format, as: F

  @watch "watch (`Kube.await_pod`, report_ready)"
  @poll "poll 1 s (`Kube.get_pod`)"

  def run(%ControlPlane{} = cp, pods, batch) do
    rows =
      for {strategy, mode, n, estimate_s} <- [
            {:watch, :sequential, pods, div(pods, 4) + 10},
            {:poll, :sequential, pods, round(pods * 1.2) + 10},
            {:watch, :concurrent, batch, 20},
            {:poll, :concurrent, batch, 25}
          ],
          Budget.fits?("Readiness #{label(strategy)} #{mode}", estimate_s) do
        Report.note("readiness: #{label(strategy)}, #{mode}, #{n} pods")
        row(cp, strategy, mode, n)
      end

    if rows != [], do: render(rows)
  end

  defp row(%ControlPlane{kube: kube, namespace: ns}, strategy, mode, n) do
    prefix = "rd-#{String.first(Atom.to_string(strategy))}-#{String.first(Atom.to_string(mode))}"
    names = for i <- 1..n, do: "#{prefix}-#{i}"
    await = &SleeperPods.create_and_await(strategy, kube, ns, &1)

    # One warm-up pod per series, not counted (connections, first watch).
    warm = await.("#{prefix}-warmup")
    _ = SleeperPods.delete(kube, ns, [warm.key], 30_000)
    before = ApiRequests.snapshot(kube)

    results =
      case mode do
        :sequential ->
          for name <- names do
            result = await.(name)
            _ = SleeperPods.delete(kube, ns, [result.key], 30_000)
            result
          end

        :concurrent ->
          results = Concurrent.map(names, await, 150_000)
          _ = SleeperPods.delete(kube, ns, Enum.map(names, &"#{ns}/#{&1}"))
          results
      end

    counted = ApiRequests.diff(ApiRequests.snapshot(kube), before)
    {lat, missing} = latencies(results)
    errors = Enum.count(results, &Map.has_key?(&1, :error))
    total = for %{seen: seen, t_create: t_create} <- results, do: seen - t_create

    [
      label(strategy),
      if(mode == :sequential, do: "sequential", else: "concurrent batch of #{n}"),
      length(lat),
      F.ms(Stats.pct(lat, 50)),
      F.ms(Stats.pct(lat, 99)),
      F.ms(Stats.max(lat)),
      F.ms(Stats.min(lat)),
      F.ms(Stats.pct(total, 50)),
      F.ms(Stats.pct(total, 99)),
      F.num(ApiRequests.pod_reads(counted) / n),
      errors + length(missing)
    ]
  end

  # Latency of each result: detection time minus the kubelet's `phase Running` line.
  defp latencies(results) do
    keys = for %{seen: _, key: key} <- results, do: key
    missing = KubeletLog.await_all(keys, :running, 10_000)
    lat = for %{seen: seen, key: key} <- results, ts = KubeletLog.ts(key, :running), do: seen - ts
    {lat, missing}
  end

  defp label(:watch), do: @watch
  defp label(:poll), do: @poll

  defp render(rows) do
    Report.section("""
    ## 1. Readiness latency after the kubelet's status write (`sleeper:test` pods)

    Latency = wall-clock time (`System.os_time`) the bench process had the readiness answer
    (the watch's `{:ready, pod}` message / the `get_pod` answer showing Running with a pod IP)
    minus the timestamp of the kubelet's `phase Running` log line for that pod. The kubelet
    logs that line after its status PATCH returned, with millisecond resolution (truncated),
    so the watch can deliver the event before the line's time (negative values); when many
    pods start at once, the kubelet's PATCH answers and log lines lag the writes themselves
    by up to hundreds of ms, so in the concurrent rows this latency understates the watch's
    and the poll's delay alike. "create → ready" (from just before the create request to
    the readiness answer) does not depend on the kubelet's log.
    Polling: GET at once after the create, then 1 s sleep after each not-ready answer (as the
    pure-Elixir backend does). Pod reads = GET/LIST/WATCH pods in `apiserver_request_total`
    per pod (the watch: a LIST, then a WATCH unless the LIST already showed the pod ready; a
    WATCH is counted when it ends). One warm-up pod per row is not counted. Each pod is
    deleted (grace 0) and gone from the API before the next sequential one is created.

    #{Report.table(["strategy", "mode", "n", "latency p50 ms", "p99 ms", "max ms", "min ms", "create → ready p50 ms", "create → ready p99 ms", "pod reads / pod", "errors"], rows)}
    """)
  end
end
