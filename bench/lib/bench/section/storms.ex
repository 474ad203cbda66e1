defmodule Bench.Section.Storms do
  @moduledoc """
  Section 4, the storm runner: the timer probe's idle baseline, then per round a pod storm and a
  boot storm with each wait strategy (`Bench.PodStorm`, `Bench.BootStorm`), all from one parent.
  """

  alias Bench.{BootStorm, Budget, ControlPlane, PodStorm, Report, StormRow, TimerProbe}

  def run(%ControlPlane{} = cp, n, rounds) do
    Report.note("probe: idle baseline")
    {_, wall, lateness} = TimerProbe.during(fn -> Process.sleep(3000) end)
    baseline = StormRow.new("idle baseline (3 s)", "-", "-", "-", wall, [], lateness, "-")

    pod_rows =
      for round <- 1..rounds,
          strategy <- order(round),
          Budget.fits?("Pod storm #{strategy}, round #{round}", 30),
          do: PodStorm.run(cp, strategy, n, round)

    {fit, note} = BootStorm.fit(n)

    boot_rows =
      for round <- 1..rounds,
          strategy <- order(round),
          row <- BootStorm.run(cp, strategy, fit, note, round),
          do: row

    render([baseline | pod_rows] ++ boot_rows)
  end

  # Rounds alternate the order (watch, poll / poll, watch) so that neither strategy always
  # runs first on a machine whose load drifts.
  defp order(round) when rem(round, 2) == 1, do: [:watch, :poll]
  defp order(_round), do: [:poll, :watch]

  defp render(rows) do
    Report.section("""
    ## 4. Concurrent storms from one parent, with a 1 ms timer probe

    All pods/boots start at once, each in its own process. Wall = from the start until the last
    one is ready (pods) or up (boots: `remote_boot` returned / remote_up received). Duration =
    per pod/boot, from the storm's start. Lateness = how late a `send_after(1 ms)` arrives in
    the parent VM (probe process looping during the storm; includes the 1 ms timer resolution,
    see the idle baseline). Pod reads = GET/LIST/WATCH pods per pod/boot (boot rows include
    `init/1`'s GET of the parent pod, and its sweep LIST when due).

    #{Report.table(StormRow.head(), rows)}
    """)
  end
end
