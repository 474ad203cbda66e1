defmodule Bench.ScalingBurst do
  @moduledoc """
  One burst of the scaling section: N boots started at once from one parent with one wait
  strategy, measured where each cost lands:

    * time: wall (first start → last boot done), and per boot its duration and overhead (the
      duration minus what the node itself took: for a no-op pod the kubelet's bound → phase
      Running; for a runner its VM's container start → remote_up);
    * API requests per boot, counted by the API server (`Bench.ApiRequests`, from before the
      burst until its teardown is done: init, boot and the deletes), the 429s among them, and
      the server's request latency for POST/GET pods during the burst
      (`Bench.ApiServerMetrics`);
    * pod watches open on the API server (peak during the burst above the baseline before it)
      and on the backend's client;
    * memory per in-flight boot: peak minus baseline of this VM (`:erlang.memory(:total)`) and
      of the OS process's resident set (VM + NIF), divided by N (all N are in flight at the
      start; the peak includes garbage not yet collected, so this is an upper bound), and for
      no-op boots the live VM memory per boot in flight (every process garbage-collected when
      25, 50, 75, 90% of the boots wait for their pod, the one with most waiting taken;
      baseline likewise collected);
    * the 1 ms timer probe's lateness during the burst (`Bench.TimerProbe`).

  Kinds: `:noop` (`Bench.NoopBoot`, `sleeper:test` pods) and `:runner` (`Bench.Boot`,
  `flame-runner:test` runner VMs through `remote_boot/1` or the polling variant).

  On the real node (`cp.node == :real`, runners only) the node's part comes from containerd's
  log (`Bench.ContainerdLog`) and the API requests from the audit log, by the backend's
  ServiceAccount (`Bench.AuditRequests`); the rest is measured the same way.
  """

  alias Bench.{ApiRequests, ApiServerMetrics, AuditRequests, Boot, Clock, Concurrent}
  alias Bench.{ContainerdLog, ControlPlane, Incidents, KubeletLog, NoopBoot, Sampler, Stats}
  alias Bench.TimerProbe
  alias FLAMEK8sBackend.Test.RealNode
  alias Bench.ApiRequests.Attribution
  alias Bench.Boot.Teardown

  @boot_timeout_ms 180_000

  @doc "Runs the burst and tears it down; returns its figures (see `Bench.Section.Scaling`)."
  def run(%ControlPlane{kube: kube} = cp, kind, strategy, n) do
    opts = opts(cp, kind)
    # Not counted: connects the backend's shared client (its handle is what the sampler asks
    # for open watches) and reads the parent once, as an app that booted before would have.
    {:ok, warm} = FLAMEK8sBackend.init(opts)
    Process.sleep(300)

    text0 = ApiServerMetrics.fetch(kube)
    watches0 = ApiServerMetrics.pod_watches(text0)
    for pid <- Process.list(), do: :erlang.garbage_collect(pid)
    mem0 = Sampler.memory()
    counters = :counters.new(2, [:write_concurrency])
    sampler = Sampler.start(warm.kube, kube, counters, live_at(kind, n))
    t0 = Clock.wall()

    {results, wall, lateness} =
      TimerProbe.during(fn ->
        boots(kind, strategy, opts, ControlPlane.client(cp), n, counters)
      end)

    samples = Sampler.stop(sampler)
    text1 = ApiServerMetrics.fetch(kube)
    left_over = teardown(cp, kind, results)
    # A WATCH is counted when it ends: the shared watch ends with its last await.
    Process.sleep(1500)
    counted = counted(cp, text0, t0, results)

    for key <- left_over,
        do: Incidents.pod_left_over(key, "pod #{key} not gone after the burst's teardown")

    %{
      kind: kind,
      strategy: strategy,
      n: n,
      wall: wall,
      lateness: lateness,
      errors: for(%{error: e} <- results, do: e),
      left_over: length(left_over),
      per_boot: per_boot(cp, kind, results),
      counted: counted,
      server_watches: peak(samples.server_watches, watches0),
      client_watches: samples.local |> Enum.map(& &1.client_watches) |> Enum.max(fn -> 0 end),
      memory: memory(samples.local, mem0, n),
      latency: latency(text0, text1)
    }
  end

  @doc """
  The probe's samples (µs) during `ms` with the burst's samplers running and no boots: what
  the measuring itself costs the probe.
  """
  def samplers_alone(%ControlPlane{kube: kube} = cp, ms) do
    {:ok, warm} = FLAMEK8sBackend.init(opts(cp, :noop))
    sampler = Sampler.start(warm.kube, kube)
    {_, _, lateness} = TimerProbe.during(fn -> Process.sleep(ms) end)
    _ = Sampler.stop(sampler)
    lateness
  end

  defp opts(cp, :noop),
    do: cp |> ControlPlane.backend_opts() |> NoopBoot.backend_opts() |> timeout()

  defp opts(cp, :runner), do: cp |> ControlPlane.backend_opts() |> timeout()

  defp timeout(opts), do: Keyword.put(opts, :boot_timeout, @boot_timeout_ms)

  # The live memory is taken when 25, 50, 75 and 90% of the boots wait for their pod (how
  # many wait at once depends on how fast creates go through); no-op boots only: a runner
  # boot's wait is inside remote_boot/1.
  defp live_at(:noop, n), do: Enum.uniq(for f <- [0.25, 0.5, 0.75, 0.9], do: max(ceil(n * f), 1))
  defp live_at(:runner, _n), do: []

  defp boots(:noop, strategy, opts, _kube, n, counters) do
    Concurrent.map(
      List.duplicate(strategy, n),
      &safe(fn -> NoopBoot.run(&1, opts, counters) end),
      @boot_timeout_ms + 20_000
    )
  end

  defp boots(:runner, strategy, opts, kube, n, _counters) do
    pids = for _ <- 1..n, do: Boot.spawn(strategy, opts, kube)
    Boot.collect(pids, @boot_timeout_ms + 20_000)
  end

  defp safe(fun) do
    fun.()
  catch
    kind, reason -> %{error: {kind, reason}}
  end

  defp teardown(_cp, :noop, results), do: NoopBoot.teardown(results)

  defp teardown(%ControlPlane{node: :local, kube: kube}, :runner, results),
    do: Teardown.run(kube, results, 120_000)

  defp teardown(%ControlPlane{node: :real} = cp, :runner, results),
    do: Teardown.run_real(cp.kube, ControlPlane.client(cp), cp.namespace, results, 120_000)

  # The backend's requests since the burst started (see the moduledoc).
  defp counted(%ControlPlane{node: :local, kube: kube}, text0, _t0, results) do
    KubeletLog.sync()
    finals = Enum.count(results, &(&1[:key] && KubeletLog.ts(&1.key, :final_delete)))

    kube
    |> ApiRequests.snapshot()
    |> ApiRequests.diff(ApiRequests.from_text(text0))
    |> Attribution.split_final_deletes(finals)
  end

  defp counted(%ControlPlane{node: :real} = cp, _text0, t0, _results),
    do: AuditRequests.counts(ControlPlane.backend_user(cp), cp.namespace, t0)

  # Per boot, in µs: `boot` (start of init/1 → pod running / remote_up) and `overhead` (boot
  # minus the node's own part).
  defp per_boot(%ControlPlane{node: :local}, kind, results) do
    ok = for %{key: _} = r <- results, not Map.has_key?(r, :error), do: r
    KubeletLog.await_all(Enum.map(ok, & &1.key), event(kind), 10_000)
    measure(ok, kind, &KubeletLog.ts(&1, :started))
  end

  defp per_boot(%ControlPlane{node: :real, namespace: ns}, :runner, results) do
    ok = for %{key: _} = r <- results, not Map.has_key?(r, :error), do: r
    started = ContainerdLog.started(RealNode.info().logs_dir <> "/containerd.log", ns, "app")
    measure(ok, :runner, &started[&1])
  end

  defp measure(ok, kind, started) do
    for r <- ok, node = node_part(kind, r, started) do
      boot = done(kind, r) - r.t_init
      %{boot: boot, node: node, overhead: boot - node}
    end
  end

  defp event(:noop), do: :running
  defp event(:runner), do: :started

  defp done(:noop, r), do: r.t_seen
  defp done(:runner, r), do: r.t_done

  defp node_part(:noop, r, _started) do
    with bound when bound != nil <- KubeletLog.ts(r.key, :bound),
         running when running != nil <- KubeletLog.ts(r.key, :running),
         do: running - bound
  end

  defp node_part(:runner, r, started) do
    with started when started != nil <- started.(r.key),
         up when up != nil <- Boot.up_time(r),
         do: up - started
  end

  defp peak([], _baseline), do: nil
  defp peak(values, baseline), do: Enum.max(values) - baseline

  defp memory([], _mem0, _n), do: %{vm: nil, rss: nil, live: nil}

  defp memory(samples, mem0, n) do
    live =
      samples
      |> Enum.map(& &1[:live])
      |> Enum.reject(&is_nil/1)
      |> Enum.max_by(& &1.waiting, fn -> nil end)

    %{
      vm: (Enum.max(Enum.map(samples, & &1.vm)) - mem0.vm) / n,
      rss: (Enum.max(Enum.map(samples, & &1.rss)) - mem0.rss) / n,
      live:
        if(live && live.in_flight > 0,
          do: Map.put(live, :per_boot, (live.vm - mem0.vm) / live.in_flight)
        )
    }
  end

  # p50/p99 (µs) and count of the server's POST and GET pods durations during the burst.
  defp latency(text0, text1) do
    for verb <- ["POST", "GET"], into: %{} do
      d =
        ApiServerMetrics.diff(
          ApiServerMetrics.durations(text1, verb, "pods"),
          ApiServerMetrics.durations(text0, verb, "pods")
        )

      {verb,
       %{
         n: round(ApiServerMetrics.total(d)),
         p50: ApiServerMetrics.quantile(d, 0.5),
         p99: ApiServerMetrics.quantile(d, 0.99)
       }}
    end
  end

  @doc "Boot/overhead percentiles of a burst's boots (µs)."
  def stat(%{per_boot: rows}, key, p), do: Stats.pct(Enum.map(rows, &Map.fetch!(&1, key)), p)
end
