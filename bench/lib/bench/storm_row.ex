defmodule Bench.StormRow do
  @moduledoc "A row of the storms' table (section 4): one storm, or the probe's idle baseline."

  alias Bench.Stats
  alias Bench.Format, as: F

  def head do
    [
      "storm",
      "wait strategy",
      "N",
      "ok",
      "wall s",
      "duration p50 ms",
      "duration max ms",
      "probe samples"
    ] ++
      ["lateness p50 ms", "lateness p99 ms", "lateness max ms", "pod reads / item", "notes"]
  end

  @doc """
  `durations`: µs per pod/boot from the storm's start; `wall`: µs until the last was done;
  `lateness`: the timer probe's samples (µs) during the storm.
  """
  def new(storm, strategy, n, ok, wall, durations, lateness, reads, notes \\ "") do
    [
      storm,
      strategy,
      n,
      ok,
      F.s(wall),
      F.ms(Stats.pct(durations, 50)),
      F.ms(Stats.max(durations)),
      length(lateness),
      F.ms(Stats.pct(lateness, 50)),
      F.ms(Stats.pct(lateness, 99)),
      F.ms(Stats.max(lateness)),
      reads,
      notes
    ]
  end
end
