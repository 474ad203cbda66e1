defmodule Bench.BootStorm do
  @moduledoc """
  N runner boots at once from one parent with one strategy, with the timer probe running. Each
  runner is a BEAM VM: `fit/1` sizes N to the memory available, and a storm with failed boots
  is run again with N/2.
  """

  alias Bench.{ApiRequests, Boot, Budget, Clock, ControlPlane, Incidents, KubeletLog, Machine}
  alias Bench.{Report, Stats, StormRow, TimerProbe}
  alias Bench.Boot.Teardown
  alias Bench.Format, as: F

  # Resident memory of one runner VM, and what the rest of the machine keeps.
  @per_vm_mb 120
  @reserve_mb 1024

  @doc "`{n, note}`: how many runners the memory available takes, at most `n`."
  def fit(n) do
    mem = Machine.mem_mb(:available)
    fit = if mem, do: min(n, div(mem - @reserve_mb, @per_vm_mb)), else: n

    if fit < n do
      Report.note("only #{mem} MB available: boot storm with #{fit} runners instead of #{n}")
      {max(fit, 1), "memory: #{mem} MB available, N reduced from #{n}; "}
    else
      {n, ""}
    end
  end

  @doc "The storm's rows: its own, and those of its retries."
  def run(%ControlPlane{} = cp, strategy, n, note, round) do
    estimate_s = 20 + n * 2

    if Budget.fits?("Boot storm #{strategy} (#{n}), round #{round}", estimate_s) do
      Report.note("boot storm: #{strategy}, #{n} runners, round #{round}")
      {row, errors} = storm(cp, strategy, n, note, round)

      if errors != [] and n > 5 and Budget.remaining_s() > estimate_s do
        Report.note("#{length(errors)} of #{n} boots failed; retrying with #{div(n, 2)}")
        retry_note = "retry after #{length(errors)}/#{n} failed; "
        [row | run(cp, strategy, div(n, 2), retry_note, round)]
      else
        [row]
      end
    else
      []
    end
  end

  defp storm(%ControlPlane{kube: kube} = cp, strategy, n, note, round) do
    before = ApiRequests.snapshot(kube)
    boot_timeout = min(180_000, max((Budget.remaining_s() - 30) * 1000, 30_000))
    opts = Keyword.put(ControlPlane.backend_opts(cp), :boot_timeout, boot_timeout)

    {results, wall, lateness} =
      TimerProbe.during(fn ->
        t0 = Clock.wall()
        pids = for _ <- 1..n, do: Boot.spawn(strategy, opts, kube)
        pids |> Boot.collect(boot_timeout + 10_000) |> Enum.map(&Map.put(&1, :t0, t0))
      end)

    left_over = Teardown.run(kube, results)

    for key <- left_over do
      Incidents.pod_left_over(
        key,
        "runner pod #{key} not gone 90 s after its boot process was killed"
      )
    end

    Process.sleep(500)
    counted = ApiRequests.diff(ApiRequests.snapshot(kube), before)
    up = for %{t_done: done, t0: t0} <- results, do: done - t0
    errors = for %{error: e} <- results, do: e

    row =
      StormRow.new(
        "#{n} runner boots (`flame-runner:test`): init + boot (round #{round})",
        if(strategy == :watch,
          do: "watch (backend `remote_boot/1`)",
          else: "poll 1 s (bench variant)"
        ),
        n,
        length(up),
        wall,
        up,
        lateness,
        F.num(ApiRequests.pod_reads(counted) / n),
        note <> notes(results, errors, left_over)
      )

    {row, errors}
  end

  defp notes(results, errors, left_over) do
    vm =
      for %{key: key} = r <- results,
          s = KubeletLog.ts(key, :started),
          up = Boot.up_time(r),
          do: up - s

    "runner VM start→remote_up p50 #{F.ms(Stats.pct(vm, 50))} ms, max #{F.ms(Stats.max(vm))} ms" <>
      failed(errors) <>
      if(left_over == [], do: "", else: "; #{length(left_over)} pods not gone after teardown")
  end

  defp failed([]), do: ""

  defp failed(errors) do
    examples = errors |> Enum.map(&inspect/1) |> Enum.uniq() |> Enum.take(2) |> Enum.join("; ")
    "; #{length(errors)} failed: #{String.slice(examples, 0, 300)}"
  end
end
