defmodule Bench.Section.Scaling do
  @moduledoc """
  Sections 5 and 6, scaling: bursts of N boots at once (`Bench.ScalingBurst`) with the shared
  watch and with 1-second polling, N growing: no-op pods (5), then real runner VMs (6). Writes
  the figures as CSV next to the report and draws them (`bench/plot.py`).
  """

  alias Bench.{BootStorm, Budget, ControlPlane, Report, ScalingBurst, Stats, TimerProbe}
  alias Bench.ApiRequests.Attribution
  alias Bench.Format, as: F

  @doc """
  Runs both sections; returns `{bursts, %{idle: probe samples, sampling: probe samples}}`
  (the probe with nothing running, and with the samplers alone).
  """
  def run(%ControlPlane{} = cp, noop_ns, runner_ns) do
    idle = probe_baselines(cp)
    noop = bursts(cp, :noop, noop_ns)
    if noop != [], do: render(:noop, noop, idle)
    runner = bursts(cp, :runner, fitting(runner_ns))
    if runner != [], do: render(:runner, runner, idle)
    {noop ++ runner, idle}
  end

  @doc """
  Section 7, on the real node (`ControlPlane.start_real!/0`): bursts of N real runner pods;
  returns what `run/3` returns.
  """
  def run_real(%ControlPlane{node: :real} = cp, runner_ns) do
    idle = probe_baselines(cp)
    runner = bursts(cp, :runner, fitting(runner_ns))
    if runner != [], do: render(:real, runner, idle)
    {runner, idle}
  end

  defp probe_baselines(cp) do
    Report.note("probe: idle baseline, then the samplers alone")
    {_, _, idle} = TimerProbe.during(fn -> Process.sleep(3000) end)
    %{idle: idle, sampling: ScalingBurst.samplers_alone(cp, 3000)}
  end

  # Each runner is a BEAM VM: an N the memory available cannot take is left out.
  defp fitting(runner_ns),
    do: for(n <- runner_ns, {fit, _note} = BootStorm.fit(n), fit == n, do: n)

  @doc """
  Writes the bursts as CSV at `path` (one line per burst) for the plot, and the probe's idle
  baseline (`idle.idle`) as a line of kind `idle`.
  """
  def write_csv(bursts, idle, path) do
    head =
      "kind,strategy,n,ok,wall_s,boot_p50_ms,overhead_p50_ms,overhead_p99_ms,requests_per_boot," <>
        "server_watches,vm_kb_per_boot,rss_kb_per_boot,live_kb_per_boot,probe_p99_ms,probe_max_ms,post_p50_ms,post_p99_ms"

    lines =
      for b <- bursts do
        [
          b.kind,
          b.strategy,
          b.n,
          length(b.per_boot),
          F.s(b.wall),
          F.ms(ScalingBurst.stat(b, :boot, 50)),
          F.ms(ScalingBurst.stat(b, :overhead, 50)),
          F.ms(ScalingBurst.stat(b, :overhead, 99)),
          F.num(requests(b)),
          b.server_watches || "",
          kb(b.memory.vm),
          kb(b.memory.rss),
          if(b.memory.live, do: kb(b.memory.live.per_boot), else: ""),
          F.ms(Stats.pct(b.lateness, 99)),
          F.ms(Stats.max(b.lateness)),
          F.ms(b.latency["POST"].p50),
          F.ms(b.latency["POST"].p99)
        ]
        |> Enum.map_join(",", &to_string/1)
      end

    idle_line =
      "idle,-,0,,3.00,,,,,,,,,#{F.ms(Stats.pct(idle.idle, 99))},#{F.ms(Stats.max(idle.idle))},,"

    File.write!(path, Enum.join([head | lines] ++ [idle_line], "\n") <> "\n")
  end

  # Rounds by N; within one, the strategy that goes first alternates, so that neither always
  # runs on the machine as the other left it.
  defp bursts(cp, kind, ns) do
    for {n, i} <- Enum.with_index(ns),
        strategy <- if(rem(i, 2) == 0, do: [:watch, :poll], else: [:poll, :watch]),
        Budget.fits?("Scaling, #{kind} #{strategy} N = #{n}", estimate_s(kind, strategy, n)) do
      Report.note("scaling: #{kind}, #{strategy}, N = #{n}")
      ScalingBurst.run(cp, kind, strategy, n)
    end
  end

  defp estimate_s(:noop, :watch, n), do: 15 + div(n, 10)
  defp estimate_s(:noop, :poll, n), do: 20 + div(n, 6)
  defp estimate_s(:runner, _strategy, n), do: 30 + n * 2

  defp requests(b), do: Attribution.total(b.counted, :backend) / b.n

  defp render(kind, bursts, idle) do
    Report.section("""
    #{title(kind)}

    #{intro(kind)}
    The probe's idle baseline (3 s with nothing running, before the bursts): p99
    #{F.ms(Stats.pct(idle.idle, 99))} ms, max #{F.ms(Stats.max(idle.idle))} ms; with the
    bench's samplers running alone (memory every 100 ms, the API server's /metrics, 1.5 MB,
    every 250 ms): p99 #{F.ms(Stats.pct(idle.sampling, 99))} ms, max
    #{F.ms(Stats.max(idle.sampling))} ms. See the load averages below for what else the
    machine was running.

    #{Report.table(["N", "wait", "ok", "wall s", "boot p50 ms", "boot p99 ms", "overhead p50 ms", "overhead p99 ms", "API requests / boot", "by request (per boot)", "429s"], Enum.map(bursts, &time_row/1))}

    #{Report.table(["N", "wait", "pod watches on the API server (peak)", "client watches (peak)", "VM KB / in-flight boot (peak)", "VM + NIF (RSS) KB / in-flight boot (peak)", "VM KB / in-flight boot (live: in flight, waiting)", "probe p99 ms", "probe max ms", "POST pods p50 / p99 ms (n)", "GET pods p50 / p99 ms (n)", "notes"], Enum.map(bursts, &resource_row/1))}
    """)
  end

  defp title(:noop),
    do: "## 5. Scaling: N no-op boots at once (`sleeper:test` pods), shared watch vs 1 s polling"

  defp title(:runner),
    do: "## 6. Scaling: N runner VMs at once (`flame-runner:test`), shared watch vs 1 s polling"

  defp title(:real),
    do: "## 7. Scaling on the real node: N runner pods at once, shared watch vs 1 s polling"

  defp intro(:noop) do
    """
    Each boot runs the backend's `init/1` (its own manifests, with the app container's image
    replaced by `sleeper:test` through `:manifest`), then sends what `remote_boot/1` sends on
    the backend's client: the runner secret when the backend has one for it, the pod, and the
    wait: **watch** = `Kube.await_pod/4` with the parent's runner selector (one watch shared by
    every boot of the parent), **poll** = `Kube.get_pod/3` at once and every 1 s (as the
    pure-Elixir backend). A boot ends when its pod runs (nothing sends remote_up); then the
    bench deletes every pod (grace 0) and secret. Boot = start of `init/1` → pod seen running;
    overhead = boot − the kubelet's own part (its `bound` → `phase Running` log lines), i.e.
    the backend's requests, the API server's queueing, the kubelet's queueing before it
    binds, and the wait's delay. API requests are counted by the API server
    (`apiserver_request_total`, from before the burst until the teardown's deletes are done),
    the backend's rows only (not the simulated kubelet's binding/status/secret reads);
    "by request" lists them. Pod watches = `apiserver_longrunning_requests` WATCH pods, peak
    during the burst (sampled every 250 ms, so a burst shorter than that may show 0; the
    WATCH count in "by request" says how many were opened) minus the baseline before it (the
    kubelet's own). Memory per in-flight boot = (peak − baseline) of `:erlang.memory(:total)` (VM) and
    of the process's `VmRSS` (VM + NIF; the NIF's Tokio runtime and Rust heap live in the same
    process), sampled every 100 ms, over N (all N start at once; the peak includes garbage
    not yet collected, so it is an upper bound); "live" = the VM's memory when most boots
    waited for their pod (measured when 25, 50, 75 and 90% of N first wait), every process
    garbage-collected first (the baseline is taken the same way), over the boots in flight
    then (started, no result yet: waiting for their pod, or before that in `init/1` or
    queued for a create slot). At N = 1 and 10 the memory figures are
    within the VM's own noise (a few hundred KB). Probe = lateness of a `send_after(1 ms)` in
    this VM during the burst (goal: p99 ≤ 2 ms, max ≤ 10 ms). API server latency:
    `apiserver_request_duration_seconds` during the burst, interpolated within its buckets
    (5, 25, 50, 100, 200, 400 ms, …), so small values are coarse.
    """
  end

  defp intro(:runner) do
    """
    The same bursts with real runner VMs: `FLAMEK8sBackend.init/1` + `remote_boot/1`
    (**watch**), or the polling variant of section 2b (**poll**), each boot in its own process
    as FLAME's Runner boots it; the boot ends at remote_up. Overhead = boot − the runner VM's
    own start (kubelet's `container started` → remote_up). Teardown: the boot processes are
    killed as FLAME's Runner ends; the backend's reaper deletes each pod and secret (the
    bench sends the same deletes for the polling variant). N that do not fit the machine's
    memory (about #{120} MB per runner VM) are skipped. Other columns as in section 5.
    """
  end

  defp intro(:real) do
    """
    The bursts of section 6 on the real node (`tools/realnode`: kubelet, containerd and runc,
    kube-scheduler, kube-controller-manager, on this machine): each runner is a real pod of
    the app image (`tools/realnode/image.sh`, a `mix release` with this library), created by
    this VM (the parent, outside the cluster, at the bridge address the pods reach) as the
    documented parent's ServiceAccount; the boot ends at remote_up. Overhead = boot − the
    node's own part from containerd's `StartContainer … returns successfully` (its log) to
    remote_up, i.e. the runner VM's start; what the kubelet, the scheduler and containerd
    took before the container started (sandbox, network, mounts) counts as overhead here.
    API requests per boot = the audit log's requests by the parent's ServiceAccount in the
    bench's namespace (the policy records its reads too), from the burst's start until its
    teardown is done; the kubelet's own reads and writes are not its. Pod watches = peak of
    `apiserver_longrunning_requests` WATCH pods above the baseline (the kubelet's, the
    scheduler's, the controllers'). The server's POST/GET pods latency is every client's,
    the kubelet's GETs included. Teardown: as in section 6; a pod is gone when the API no
    longer lists it. Other columns as in section 5.
    """
  end

  defp time_row(b) do
    [
      b.n,
      b.strategy,
      length(b.per_boot),
      F.s(b.wall),
      F.ms(ScalingBurst.stat(b, :boot, 50)),
      F.ms(ScalingBurst.stat(b, :boot, 99)),
      F.ms(ScalingBurst.stat(b, :overhead, 50)),
      F.ms(ScalingBurst.stat(b, :overhead, 99)),
      "**#{F.num(requests(b))}**",
      by_request(b),
      for({{_, _, _, "429"}, n} <- b.counted, do: n) |> Enum.sum()
    ]
  end

  defp by_request(b) do
    b.counted
    |> Enum.filter(fn {key, _} -> Attribution.sender(key) == :backend end)
    |> Enum.sort_by(fn {key, n} -> {-n, key} end)
    |> Enum.map_join(" · ", fn {key, n} -> "#{Attribution.label(key)} #{F.num(n / b.n)}" end)
  end

  defp resource_row(b) do
    [
      b.n,
      b.strategy,
      b.server_watches || "-",
      b.client_watches,
      kb(b.memory.vm),
      kb(b.memory.rss),
      live(b.memory),
      F.ms(Stats.pct(b.lateness, 99)),
      F.ms(Stats.max(b.lateness)),
      latency(b.latency["POST"]),
      latency(b.latency["GET"]),
      notes(b)
    ]
  end

  defp latency(%{n: 0}), do: "-"
  defp latency(%{n: n, p50: p50, p99: p99}), do: "#{F.ms(p50)} / #{F.ms(p99)} (#{n})"

  defp live(%{live: nil}), do: "-"
  defp live(%{live: l}), do: "#{kb(l.per_boot)} (#{l.in_flight}, #{l.waiting})"

  defp kb(nil), do: "-"
  defp kb(bytes), do: :erlang.float_to_binary(bytes / 1024, decimals: 1)

  defp notes(b) do
    errors =
      case b.errors do
        [] ->
          ""

        errors ->
          examples =
            errors |> Enum.map(&inspect/1) |> Enum.uniq() |> Enum.take(2) |> Enum.join("; ")

          "#{length(errors)} failed: #{String.slice(examples, 0, 300)}"
      end

    left = if b.left_over > 0, do: "; #{b.left_over} pods not gone after teardown", else: ""
    errors <> left
  end
end
