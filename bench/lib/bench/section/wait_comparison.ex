defmodule Bench.Section.WaitComparison do
  @moduledoc """
  Section 2b: the backend's sequential boots next to the same boots with a 1-second polling
  wait (`Bench.Boot.Polling`).
  """

  alias Bench.{BootSeries, Report, Stats}
  alias Bench.Format, as: F

  def render(watch, poll, n) do
    Report.section("""
    ### 2b. The same sequential boots with a 1-second polling wait

    The polling variant is bench code built from the backend's public pieces: the same `init/1`,
    secret and pod, then `Kube.get_pod` at once and every 1 s until Running with a pod
    IP (as the pure-Elixir backend waits), then the remote_up message; at its end the bench
    deletes the pod and the secret as the backend's reaper does. Its runner-VM time ends
    when the remote_up message arrived (the boot process traces its own receives; it reads the
    message only after its poll succeeded). Requests: everything but the simulated
    kubelet's and background rows, per boot (init, boot and the deletes).

    #{Report.table(["wait strategy", "n", "boot p50 ms", "boot max ms", "runner VM p50 ms", "overhead p50 ms", "overhead max ms", "API requests / boot", "errors"], [row("watch (`remote_boot/1`)", watch, n), row("poll 1 s (bench variant)", poll, n)])}
    """)
  end

  defp row(label, nil, _n), do: [label, "-", "skipped (time cap)", "", "", "", "", "", ""]

  defp row(label, series, n) do
    st = BootSeries.stats(series, n)

    [
      label,
      st.n,
      F.ms(Stats.pct(st.boot, 50)),
      F.ms(Stats.max(st.boot)),
      F.ms(Stats.pct(st.vm, 50)),
      F.ms(Stats.pct(st.overhead, 50)),
      F.ms(Stats.max(st.overhead)),
      F.num(st.requests),
      st.errors
    ]
  end
end
