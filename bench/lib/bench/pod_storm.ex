defmodule Bench.PodStorm do
  @moduledoc """
  N `sleeper:test` pods created at once from one parent, each awaited with one strategy, with
  the timer probe running: how long until all are ready, and how late the parent's timers get.
  """

  alias Bench.{ApiRequests, Concurrent, ControlPlane, Report, SleeperPods, StormRow, TimerProbe}
  alias Bench.Format, as: F

  def run(%ControlPlane{kube: kube, namespace: ns}, strategy, n, round) do
    Report.note("pod storm: #{strategy}, #{n} sleeper pods, round #{round}")
    names = for i <- 1..n, do: "storm-#{strategy}-#{round}-#{i}"
    before = ApiRequests.snapshot(kube)

    {results, wall, lateness} =
      TimerProbe.during(fn ->
        Concurrent.map(names, &SleeperPods.create_and_await(strategy, kube, ns, &1), 150_000)
      end)

    _ = SleeperPods.delete(kube, ns, Enum.map(names, &"#{ns}/#{&1}"))
    counted = ApiRequests.diff(ApiRequests.snapshot(kube), before)
    # The storm starts with its first create.
    t0 =
      results
      |> Enum.map(&Map.get(&1, :t_create))
      |> Enum.reject(&is_nil/1)
      |> Enum.min(fn -> 0 end)

    ready = for %{seen: seen} <- results, do: seen - t0

    StormRow.new(
      "#{n} `sleeper:test` pods: create → ready (round #{round})",
      if(strategy == :watch, do: "watch", else: "poll 1 s"),
      n,
      length(ready),
      wall,
      ready,
      lateness,
      F.num(ApiRequests.pod_reads(counted) / n)
    )
  end
end
