# Boot benchmark of FLAMEK8sBackend on the local control plane (real kube-apiserver + etcd, the
# simulated kubelet `localkube`). A benchmark, not a test: run it with `bench/run [options]`.
#
#   --pods N         sleeper pods per readiness series (sequential watch / sequential poll; default 100)
#   --batch N        pods per concurrent readiness batch (default 50)
#   --boots N        sequential runner boots for overhead and API requests (default 10)
#   --storm N        concurrent boots / pods in the storms (default 50)
#   --rounds N       storm rounds, each runs watch and poll, alternating which goes first (default 2)
#   --max-seconds S  hard cap on the whole run (default 600); sections that would not fit are skipped
#   --quick          --pods 10 --batch 10 --boots 3 --storm 10 --rounds 1
#   --out PATH       results file (default bench/results/boot-<UTC date and time>.md)
#
# Prints the tables and writes them as Markdown. The control plane stops when this VM exits
# (localkube watches its stdin).

alias FLAMEK8sBackend.{Kube, Reaper}
alias FLAMEK8sBackend.Test.LocalCluster

defmodule Bench.Stats do
  @moduledoc false
  # Nearest-rank percentile of a list of numbers.
  def pct([], _p), do: nil

  def pct(values, p) do
    sorted = Enum.sort(values)
    n = length(sorted)
    idx = max(ceil(p / 100 * n) - 1, 0)
    Enum.at(sorted, min(idx, n - 1))
  end

  def mean([]), do: nil
  def mean(values), do: Enum.sum(values) / length(values)

  def ms(nil), do: "-"
  def ms(us) when is_number(us), do: :erlang.float_to_binary(us / 1000, decimals: 1)

  def s(nil), do: "-"
  def s(us) when is_number(us), do: :erlang.float_to_binary(us / 1_000_000, decimals: 2)

  def num(nil), do: "-"
  def num(x) when is_integer(x), do: Integer.to_string(x)
  def num(x) when is_float(x), do: :erlang.float_to_binary(x, decimals: 2)
end

defmodule Bench.Clock do
  @moduledoc false
  # Wall clock (CLOCK_REALTIME, the clock the kubelet's log timestamps come from), microseconds.
  def wall, do: System.os_time(:microsecond)
  def mono, do: System.monotonic_time(:microsecond)
end

defmodule Bench.KubeletLog do
  @moduledoc """
  Incremental reader of the simulated kubelet's event log. Keeps the first timestamp (µs since the
  epoch, UTC, ms resolution) of each event per pod in an ETS table:
  `:bound`, `:started` (`container X: started pid`), `:running` (`phase Running`, logged after the
  status PATCH returned), `:final_delete` (the kubelet's own DELETE that ends a graceful deletion)
  and `:gone` (`removed from the API`).
  """
  @table :bench_kubelet_log

  def init(path) do
    :ets.new(@table, [:named_table, :public, :set])
    :ets.insert(@table, {:__offset, 0, ""})
    :persistent_term.put({__MODULE__, :path}, path)
  end

  def sync do
    path = :persistent_term.get({__MODULE__, :path})
    [{:__offset, offset, partial}] = :ets.lookup(@table, :__offset)

    case File.open(path, [:read, :binary, :raw]) do
      {:ok, fd} ->
        data =
          case :file.pread(fd, offset, 4_000_000) do
            {:ok, data} -> data
            :eof -> ""
          end

        File.close(fd)
        text = partial <> data
        {lines, rest} = split_lines(text)
        Enum.each(lines, &parse/1)
        :ets.insert(@table, {:__offset, offset + byte_size(data), rest})

      {:error, _} ->
        :ok
    end
  end

  defp split_lines(text) do
    parts = String.split(text, "\n")
    {Enum.drop(parts, -1), List.last(parts)}
  end

  defp parse(line) do
    with [ts, "pod " <> rest] <- String.split(line, " ", parts: 2),
         [key, msg] <- String.split(rest, ": ", parts: 2),
         event when event != nil <- event(msg),
         {:ok, dt, 0} <- DateTime.from_iso8601(ts) do
      :ets.insert_new(@table, {{key, event}, DateTime.to_unix(dt, :microsecond)})
    else
      _ -> :ok
    end
  end

  defp event("phase Running"), do: :running
  defp event("removed from the API"), do: :gone
  defp event("bound to " <> _), do: :bound
  defp event("finished: deleted with grace period 0"), do: :final_delete

  defp event("container " <> rest) do
    if String.contains?(rest, ": started pid "), do: :started
  end

  defp event(_), do: nil

  def ts(key, event) do
    case :ets.lookup(@table, {key, event}) do
      [{_, ts}] -> ts
      [] -> nil
    end
  end

  @doc "Waits until every key has logged `event`; returns the keys still missing at the timeout."
  def await_all(keys, event, timeout_ms) do
    deadline = System.monotonic_time(:millisecond) + timeout_ms
    do_await(keys, event, deadline)
  end

  defp do_await(keys, event, deadline) do
    sync()
    missing = Enum.reject(keys, &ts(&1, event))

    cond do
      missing == [] -> []
      System.monotonic_time(:millisecond) > deadline -> missing
      true -> Process.sleep(20) && do_await(missing, event, deadline)
    end
  end
end

defmodule Bench.Metrics do
  @moduledoc """
  `apiserver_request_total` from the API server's /metrics, summed over code/component/scope by
  {verb, resource, subresource}. Non-resource requests (resource "", e.g. the bench's own
  GET /metrics) are left out.
  """
  def snapshot(kube) do
    {:ok, text} = Kube.request(kube, "GET", "/metrics")

    text
    |> String.split("\n")
    |> Enum.filter(&String.starts_with?(&1, "apiserver_request_total{"))
    |> Enum.reduce(%{}, fn line, acc ->
      [labels, value] =
        Regex.run(~r/^apiserver_request_total\{(.*)\} (\S+)$/, line, capture: :all_but_first)

      labels =
        Map.new(
          Regex.scan(~r/(\w+)="([^"]*)"/, labels, capture: :all_but_first),
          &List.to_tuple/1
        )

      {count, _} = Float.parse(value)
      code = labels["code"] || ""
      code = if String.starts_with?(code, "2"), do: "", else: code
      key = {labels["verb"], labels["resource"], labels["subresource"] || "", code}

      if labels["resource"] in [nil, ""],
        do: acc,
        else: Map.update(acc, key, count, &(&1 + count))
    end)
  end

  def diff(after_snap, before_snap) do
    after_snap
    |> Enum.map(fn {key, count} -> {key, round(count - Map.get(before_snap, key, 0))} end)
    |> Enum.reject(fn {_key, d} -> d == 0 end)
    |> Map.new()
  end

  # Who sends what here: the simulated kubelet binds pods, patches their status, reads the
  # secrets/configmaps its containers reference and ends graceful deletions; the backend (or, in
  # the readiness series, the bench's wait strategy and its create/delete) sends the other pod
  # and secret requests.
  def attribute({_verb, "pods", "final delete", _}), do: :kubelet
  def attribute({_verb, "pods", "binding", _}), do: :kubelet
  def attribute({_verb, "pods", "status", _}), do: :kubelet
  def attribute({"GET", "secrets", _, _}), do: :kubelet
  def attribute({"GET", "configmaps", _, _}), do: :kubelet
  def attribute({_verb, resource, _, _}) when resource in ["pods", "secrets"], do: :backend
  # Nodes and leases (the kubelet's upkeep), the apiserver's own reconcilers (endpoints of the
  # `kubernetes` service, ...): not the boots' doing.
  def attribute(_), do: :background

  @doc """
  The simulated kubelet ends each graceful deletion with a DELETE of its own, which the metrics
  cannot tell from the backend's: moves `finals` (counted in the kubelet's log) from
  `DELETE pods` to a row of the kubelet's.
  """
  def split_final_deletes(diff, 0), do: diff

  def split_final_deletes(diff, finals) do
    keys =
      diff
      |> Map.keys()
      |> Enum.filter(&match?({"DELETE", "pods", "", _}, &1))
      |> Enum.sort_by(fn {_, _, _, code} -> code != "" end)

    {diff, left} =
      Enum.reduce(keys, {diff, finals}, fn key, {diff, left} ->
        take = min(left, diff[key])
        {Map.update!(diff, key, &(&1 - take)), left - take}
      end)

    diff
    |> Map.reject(fn {_key, count} -> count == 0 end)
    |> Map.put({"DELETE", "pods", "final delete", ""}, finals - left)
  end

  def pod_reads(diff) do
    diff
    |> Enum.filter(fn {{verb, res, sub, _}, _} ->
      res == "pods" and sub == "" and verb in ~w(GET LIST WATCH)
    end)
    |> Enum.map(&elem(&1, 1))
    |> Enum.sum()
  end

  def label({"DELETE", "pods", "final delete", _}),
    do: "DELETE pods (the kubelet's, ending a graceful deletion)"

  def label({verb, res, sub, code}) do
    path = if sub == "", do: res, else: "#{res}/#{sub}"
    if code == "", do: "#{verb} #{path}", else: "#{verb} #{path} → #{code}"
  end
end

defmodule Bench.Probe do
  @moduledoc """
  Scheduling-lateness probe: a process that loops `erlang:send_after(1, self(), :tick)` and
  records (arrival - (sent + 1 ms)) in µs. Erlang timers have 1 ms resolution, so an idle VM
  shows up to ~1 ms; see the idle baseline.
  """
  def start do
    spawn(fn -> loop([]) end)
  end

  def stop(pid) do
    send(pid, {:stop, self()})

    receive do
      {:probe, ^pid, samples} -> samples
    after
      10_000 -> []
    end
  end

  defp loop(acc) do
    receive do
      {:stop, from} -> send(from, {:probe, self(), acc})
    after
      0 ->
        expected = Bench.Clock.mono() + 1000
        :erlang.send_after(1, self(), :tick)

        receive do
          :tick -> loop([Bench.Clock.mono() - expected | acc])
        end
    end
  end
end

defmodule Bench.Capture do
  @moduledoc """
  Incidents worth reading next to the numbers: warnings logged during the run (e.g. a reaper
  that could not delete a pod) and the bench's own observations (a pod not gone in time).
  """
  def start do
    Agent.start(fn -> [] end, name: __MODULE__)
    :logger.add_handler(:bench_capture, __MODULE__, %{level: :warning})
  end

  def incident(text) do
    at = DateTime.utc_now() |> DateTime.truncate(:millisecond) |> DateTime.to_iso8601()
    Agent.update(__MODULE__, &[at <> " " <> text | &1])
  end

  def all, do: __MODULE__ |> Agent.get(& &1) |> Enum.reverse()

  # :logger handler callback.
  def log(%{msg: msg}, _config) do
    text =
      try do
        case msg do
          {:string, s} -> IO.chardata_to_string(s)
          {:report, report} -> inspect(report)
          {format, args} -> IO.chardata_to_string(:io_lib.format(format, args))
        end
      rescue
        _ -> inspect(msg)
      end

    incident("logged: " <> String.slice(text, 0, 500))
  end
end

defmodule Bench.Out do
  @moduledoc false
  # Results accumulate here so that a run stopped by the time cap still writes what it has.
  def start(path, header) do
    Agent.start(fn -> %{path: path, header: header, sections: []} end, name: __MODULE__)
  end

  def load do
    case File.read("/proc/loadavg") do
      {:ok, text} -> text |> String.split(" ") |> Enum.take(3) |> Enum.join(" / ")
      _ -> "?"
    end
  end

  def section(text) do
    text =
      String.trim_trailing(text) <>
        "\n\n_Load average (1 / 5 / 15 min) at the end of this section: #{load()}._"

    IO.puts("\n" <> text)
    Agent.update(__MODULE__, fn s -> %{s | sections: s.sections ++ [text]} end)
  end

  def note(text), do: IO.puts(:stderr, "[bench] " <> text)

  def write(footer \\ "") do
    %{path: path, header: header, sections: sections} = Agent.get(__MODULE__, & &1)
    File.mkdir_p!(Path.dirname(path))
    File.write!(path, Enum.join([header | sections] ++ [footer], "\n\n") <> "\n")
    path
  end

  def table(head, rows) do
    line = fn cells -> "| " <> Enum.join(Enum.map(cells, &to_string/1), " | ") <> " |" end
    sep = "|" <> Enum.map_join(head, "|", fn _ -> "---" end) <> "|"
    Enum.join([line.(head), sep | Enum.map(rows, line)], "\n")
  end
end

defmodule Bench.UpTracer do
  @moduledoc """
  When the remote_up message reached a polling-variant boot process. That process reads its
  mailbox only after its poll saw the pod running, so it traces its own receives: the tracer
  keeps the arrival time (the VM's monotonic clock, shifted to wall-clock µs) of
  `{ref, {:remote_up, pid}}` by the receiving process.
  """
  @table :bench_remote_up

  def start do
    :ets.new(@table, [:named_table, :public, :set])
    pid = spawn(fn -> loop() end)
    :persistent_term.put({__MODULE__, :pid}, pid)
  end

  @doc "Called by the boot process itself before its pod is created."
  def trace_me do
    :erlang.trace(self(), true, [
      :receive,
      :monotonic_timestamp,
      {:tracer, :persistent_term.get({__MODULE__, :pid})}
    ])
  end

  defp loop do
    receive do
      {:trace_ts, pid, :receive, {ref, {:remote_up, _}}, ts} when is_reference(ref) ->
        wall = System.convert_time_unit(ts + System.time_offset(), :native, :microsecond)
        :ets.insert_new(@table, {pid, wall})
        loop()

      _ ->
        loop()
    end
  end

  def ts(pid) do
    case :ets.lookup(@table, pid) do
      [{_, ts}] -> ts
      [] -> nil
    end
  end
end

defmodule Bench do
  @moduledoc false
  alias Bench.{Clock, KubeletLog, Metrics, Out, Probe, Stats, UpTracer}

  ## Budget

  def deadline, do: :persistent_term.get({__MODULE__, :deadline})
  def remaining_s, do: div(deadline() - System.monotonic_time(:millisecond), 1000)

  def fits?(what, estimate_s) do
    if remaining_s() >= estimate_s do
      true
    else
      Out.section(
        "### #{what}\n\nSkipped: about #{estimate_s} s needed, #{remaining_s()} s left of the time cap."
      )

      false
    end
  end

  ## Pods (sleeper:test)

  def sleeper(name), do: LocalCluster.pod_manifest(name, "sleeper:test", args: ["3600"])

  def ready?(pod) do
    get_in(pod, ["status", "phase"]) == "Running" and
      get_in(pod, ["status", "podIP"]) not in [nil, ""]
  end

  # Watch: create, then Kube.await_pod(report_ready: true); the time the {:ready, _} message is
  # received.
  def watch_pod(kube, ns, name) do
    t_create = Clock.wall()

    with {:ok, _} <- Kube.create_pod(kube, ns, sleeper(name)),
         {:ok, %{ref: ref}} <-
           Kube.await_pod(kube, ns, name, timeout: 120_000, report_ready: true) do
      receive do
        {:flame_k8s, ^ref, {:ready, _pod}} ->
          %{key: "#{ns}/#{name}", seen: Clock.wall(), t_create: t_create}

        {:flame_k8s, ^ref, other} ->
          %{key: "#{ns}/#{name}", error: other}
      end
    else
      {:error, reason} -> %{key: "#{ns}/#{name}", error: reason}
    end
  end

  # Polling as the existing pure-Elixir backend does: GET right after the create, then sleep 1 s
  # after every answer that is not ready yet (Running with a pod IP).
  def poll_pod(kube, ns, name) do
    t_create = Clock.wall()

    case Kube.create_pod(kube, ns, sleeper(name)) do
      {:ok, _} ->
        kube
        |> poll(ns, name, 1, System.monotonic_time(:millisecond) + 120_000)
        |> Map.put(:t_create, t_create)

      {:error, reason} ->
        %{key: "#{ns}/#{name}", error: reason}
    end
  end

  defp poll(kube, ns, name, n, deadline) do
    case Kube.get_pod(kube, ns, name) do
      {:ok, pod} ->
        seen = Clock.wall()

        cond do
          ready?(pod) ->
            %{key: "#{ns}/#{name}", seen: seen, reads: n}

          System.monotonic_time(:millisecond) > deadline ->
            %{key: "#{ns}/#{name}", error: :timeout}

          true ->
            Process.sleep(1000)
            poll(kube, ns, name, n + 1, deadline)
        end

      {:error, reason} ->
        %{key: "#{ns}/#{name}", error: reason}
    end
  end

  def delete_pods(kube, ns, keys, timeout_ms \\ 60_000) do
    for key <- keys do
      [^ns, name] = String.split(key, "/", parts: 2)

      case Kube.delete_pod(kube, ns, name, grace_period: 0) do
        :ok ->
          :ok

        {:error, reason} ->
          Bench.Capture.incident("bench could not delete pod #{key}: #{inspect(reason)}")
      end
    end

    KubeletLog.await_all(keys, :gone, timeout_ms)
  end

  # Latency of each result: detection time minus the kubelet's `phase Running` line.
  def latencies(results) do
    keys = for %{seen: _, key: key} <- results, do: key
    missing = KubeletLog.await_all(keys, :running, 10_000)

    lat = for %{seen: seen, key: key} <- results, ts = KubeletLog.ts(key, :running), do: seen - ts

    {lat, missing}
  end

  def concurrently(items, fun, timeout_ms) do
    items
    |> Enum.map(fn item -> Task.async(fn -> fun.(item) end) end)
    |> Task.yield_many(timeout_ms)
    |> Enum.map(fn
      {_task, {:ok, result}} -> result
      {task, _} -> Task.shutdown(task, :brutal_kill) && %{error: :bench_timeout}
    end)
  end

  ## Section 1: readiness latency

  def readiness(kube, ns, pods, batch) do
    rows =
      for {label, mode, fun, n, est} <- [
            {"watch (`Kube.await_pod`, report_ready)", :sequential, &watch_pod/3, pods,
             div(pods, 4) + 10},
            {"poll 1 s (`Kube.get_pod`)", :sequential, &poll_pod/3, pods, round(pods * 1.2) + 10},
            {"watch (`Kube.await_pod`, report_ready)", :concurrent, &watch_pod/3, batch, 20},
            {"poll 1 s (`Kube.get_pod`)", :concurrent, &poll_pod/3, batch, 25}
          ],
          fits?("Readiness #{label} #{mode}", est) do
        Out.note("readiness: #{label}, #{mode}, #{n} pods")
        tag = if fun == (&watch_pod/3), do: "w", else: "p"
        names = for i <- 1..n, do: "rd-#{tag}-#{String.first(Atom.to_string(mode))}-#{i}"

        # One warm-up pod per series, not counted (connections, first watch).
        warm = fun.(kube, ns, "rd-#{tag}-#{String.first(Atom.to_string(mode))}-warmup")
        _ = delete_pods(kube, ns, [warm.key], 30_000)
        before = Metrics.snapshot(kube)

        results =
          case mode do
            :sequential ->
              for name <- names do
                result = fun.(kube, ns, name)
                _ = delete_pods(kube, ns, [result.key], 30_000)
                result
              end

            :concurrent ->
              results = concurrently(names, &fun.(kube, ns, &1), 150_000)
              _ = delete_pods(kube, ns, Enum.map(names, &"#{ns}/#{&1}"))
              results
          end

        diff = Metrics.diff(Metrics.snapshot(kube), before)
        {lat, missing} = latencies(results)
        errors = Enum.count(results, &Map.has_key?(&1, :error))
        mode_label = if mode == :sequential, do: "sequential", else: "concurrent batch of #{n}"
        total = for %{seen: seen, t_create: t_create} <- results, do: seen - t_create

        [
          label,
          mode_label,
          length(lat),
          Stats.ms(Stats.pct(lat, 50)),
          Stats.ms(Stats.pct(lat, 99)),
          Stats.ms(Enum.max(lat, fn -> nil end)),
          Stats.ms(Enum.min(lat, fn -> nil end)),
          Stats.ms(Stats.pct(total, 50)),
          Stats.ms(Stats.pct(total, 99)),
          Stats.num(Metrics.pod_reads(diff) / n),
          errors + length(missing)
        ]
      end

    if rows != [] do
      Out.section("""
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

      #{Out.table(["strategy", "mode", "n", "latency p50 ms", "p99 ms", "max ms", "min ms", "create → ready p50 ms", "create → ready p99 ms", "pod reads / pod", "errors"], rows)}
      """)
    end
  end

  ## Boots (flame-runner:test)

  # One boot through the backend, in its own process like FLAME's Runner. It reports and then
  # waits; killing it lets the backend's reaper delete the pod and secret.
  def spawn_boot(strategy, opts) do
    bench = self()

    pid =
      spawn(fn ->
        result =
          try do
            boot(strategy, opts)
          catch
            kind, reason -> %{error: {kind, reason}}
          end

        send(bench, {:booted, self(), result})
        receive do: (:stop -> :ok)
      end)

    pid
  end

  def boot(:watch, opts) do
    t_init = Clock.wall()
    {:ok, state} = FLAMEK8sBackend.init(opts)
    t_boot = Clock.wall()

    case FLAMEK8sBackend.remote_boot(state) do
      {:ok, _terminator, state} ->
        t_done = Clock.wall()
        timings = state.boot_timings

        %{
          key: "#{state.namespace}/#{state.runner_name}",
          runner: state.runner_name,
          t_init: t_init,
          t_boot: t_boot,
          t_done: t_done,
          t_created: t_boot + timings.created * 1000,
          t_remote_up: t_boot + timings.remote_up * 1000,
          t_running_seen: if(timings[:running], do: t_boot + timings.running * 1000)
        }

      {:error, error} ->
        %{key: "#{state.namespace}/#{state.runner_name}", error: Exception.message(error)}
    end
  end

  # The polling variant, built from the backend's public pieces: the same init (parent pod,
  # sweep, manifests), the same reaper, secret and pod, but the wait polls the pod every second
  # until Running with an IP (as the pure-Elixir backend does), then waits for remote_up.
  def boot(:poll, opts) do
    t_init = Clock.wall()
    {:ok, state} = FLAMEK8sBackend.init(opts)
    t_boot = Clock.wall()
    UpTracer.trace_me()
    start_ms = System.monotonic_time(:millisecond)
    deadline = start_ms + state.boot_timeout
    {:ok, reaper} = Reaper.start(state.kube, state.namespace, self(), false)
    :ok = Reaper.track(reaper, :secret, state.runner_name)
    :ok = Reaper.track(reaper, :pod, state.runner_name)
    {:ok, _} = Kube.create_secret(state.kube, state.namespace, state.secret_manifest)
    {:ok, _} = Kube.create_pod(state.kube, state.namespace, state.pod_manifest)
    t_created = Clock.wall()
    key = "#{state.namespace}/#{state.runner_name}"

    case poll(state.kube, state.namespace, state.runner_name, 1, deadline) do
      %{seen: seen} ->
        parent_ref = state.parent_ref

        receive do
          {^parent_ref, {:remote_up, terminator}} ->
            t_done = Clock.wall()
            :ok = Reaper.monitor(reaper, terminator)

            %{
              key: key,
              runner: state.runner_name,
              t_init: t_init,
              t_boot: t_boot,
              t_done: t_done,
              t_created: t_created,
              t_remote_up: nil,
              t_running_seen: seen
            }
        after
          max(deadline - System.monotonic_time(:millisecond), 0) ->
            %{key: key, error: :remote_up_timeout}
        end

      %{error: reason} ->
        %{key: key, error: reason}
    end
  end

  # When remote_up arrived: as the backend timed it, or (polling variant) as traced.
  def up_time(%{t_remote_up: up}) when is_integer(up), do: up
  def up_time(%{pid: pid}), do: UpTracer.ts(pid)
  def up_time(_), do: nil

  def collect_boots(pids, timeout_ms) do
    deadline = System.monotonic_time(:millisecond) + timeout_ms

    Enum.map(pids, fn pid ->
      receive do
        {:booted, ^pid, result} -> Map.put(result, :pid, pid)
      after
        max(deadline - System.monotonic_time(:millisecond), 0) ->
          %{pid: pid, error: :bench_timeout}
      end
    end)
  end

  # Kills the boot processes; the reapers delete pods and secrets. Waits for the reapers to
  # finish and for the kubelet to log each pod gone.
  def teardown(results, timeout_ms \\ 90_000) do
    Enum.each(results, &Process.exit(&1.pid, :kill))
    deadline = System.monotonic_time(:millisecond) + timeout_ms
    wait_reapers(deadline)
    keys = for %{key: key} <- results, do: key
    KubeletLog.await_all(keys, :gone, max(deadline - System.monotonic_time(:millisecond), 1000))
  end

  defp wait_reapers(deadline) do
    n = DynamicSupervisor.count_children(FLAMEK8sBackend.ReaperSupervisor).active

    if n > 0 and System.monotonic_time(:millisecond) < deadline do
      Process.sleep(20)
      wait_reapers(deadline)
    end
  end

  ## Sections 2 and 3: sequential boots, overhead and API requests

  def sequential_boots(kube, opts, n) do
    if fits?("Sequential boots", n * 4 + 20) do
      Out.note("sequential boots: #{n}, watch (the backend)")
      watch = boot_series(kube, opts, :watch, n)
      overhead_section(watch.results)
      requests_section(watch.diff, n)

      poll =
        if fits?("Sequential boots, polling variant", n * 3 + 10) do
          Out.note("sequential boots: #{n}, polling variant")
          boot_series(kube, opts, :poll, n)
        end

      comparison_section(watch, poll, n)
    end
  end

  defp boot_series(kube, opts, strategy, n) do
    # One warm-up boot (NIF connections, code paths in the page cache), not counted.
    [warm] = collect_boots([spawn_boot(strategy, opts)], 120_000)
    teardown([warm])
    Process.sleep(500)
    before = Metrics.snapshot(kube)

    results =
      for _ <- 1..n do
        [result] = collect_boots([spawn_boot(strategy, opts)], 120_000)
        leftover = teardown([result])
        Map.put(result, :leftover, leftover)
      end

    # A cancelled watch is counted when the server has ended it.
    Process.sleep(1000)
    KubeletLog.sync()
    finals = Enum.count(results, &(&1[:key] && KubeletLog.ts(&1.key, :final_delete)))

    diff =
      kube |> Metrics.snapshot() |> Metrics.diff(before) |> Metrics.split_final_deletes(finals)

    %{results: results, diff: diff}
  end

  defp boot_stats(%{results: results, diff: diff}, n) do
    ok = Enum.reject(results, &Map.has_key?(&1, :error))

    rows =
      for r <- ok, started = KubeletLog.ts(r.key, :started), up = up_time(r) do
        %{
          boot: r.t_done - r.t_boot,
          vm: up - started,
          overhead: r.t_done - r.t_boot - (up - started)
        }
      end

    backend =
      diff
      |> Enum.filter(fn {k, _} -> Metrics.attribute(k) == :backend end)
      |> Enum.map(&elem(&1, 1))
      |> Enum.sum()

    %{
      rows: rows,
      errors: length(results) - length(ok),
      requests: backend / n,
      reads: Metrics.pod_reads(diff) / n
    }
  end

  defp comparison_section(watch, poll, n) do
    line = fn
      label, nil ->
        [label, "-", "skipped (time cap)", "", "", "", "", "", ""]

      label, series ->
        st = boot_stats(series, n)
        col = fn key -> for row <- st.rows, do: row[key] end

        [
          label,
          length(st.rows),
          Stats.ms(Stats.pct(col.(:boot), 50)),
          Stats.ms(Enum.max(col.(:boot), fn -> nil end)),
          Stats.ms(Stats.pct(col.(:vm), 50)),
          Stats.ms(Stats.pct(col.(:overhead), 50)),
          Stats.ms(Enum.max(col.(:overhead), fn -> nil end)),
          Stats.num(st.requests),
          st.errors
        ]
    end

    Out.section("""
    ### 2b. The same sequential boots with a 1-second polling wait

    The polling variant is bench code built from the backend's public pieces: the same `init/1`,
    reaper, secret and pod, then `Kube.get_pod` at once and every 1 s until Running with a pod
    IP (as the pure-Elixir backend waits), then the remote_up message. Its runner-VM time ends
    when the remote_up message arrived (the boot process traces its own receives; it reads the
    message only after its poll succeeded). Requests: everything but the simulated
    kubelet's and background rows, per boot (init, boot and the reaper's deletes).

    #{Out.table(["wait strategy", "n", "boot p50 ms", "boot max ms", "runner VM p50 ms", "overhead p50 ms", "overhead max ms", "API requests / boot", "errors"], [line.("watch (`remote_boot/1`)", watch), line.("poll 1 s (bench variant)", poll)])}
    """)
  end

  defp overhead_section(results) do
    ok = Enum.reject(results, &Map.has_key?(&1, :error))
    errors = length(results) - length(ok)

    rows =
      for r <- ok,
          started = KubeletLog.ts(r.key, :started),
          running = KubeletLog.ts(r.key, :running) do
        vm = r.t_remote_up - started
        boot = r.t_done - r.t_boot

        %{
          init: r.t_boot - r.t_init,
          boot: boot,
          created: r.t_created - r.t_boot,
          kubelet: started - r.t_created,
          vm: vm,
          overhead: boot - vm,
          overhead_init: r.t_done - r.t_init - vm,
          running_seen: if(r.t_running_seen, do: r.t_running_seen - running),
          after_up: r.t_done - r.t_remote_up
        }
      end

    metric = fn label, key ->
      values = for row <- rows, v = row[key], do: v

      [
        label,
        length(values),
        Stats.ms(Stats.pct(values, 50)),
        Stats.ms(Enum.max(values, fn -> nil end)),
        Stats.ms(Stats.mean(values))
      ]
    end

    table =
      Out.table(["", "n", "p50 ms", "max ms", "mean ms"], [
        metric.(
          "`init/1` (GET parent pod, manifests; connect and sweep LIST only when due)",
          :init
        ),
        metric.("`remote_boot/1` total", :boot),
        metric.("  secret + pod created (`boot_timings.created`)", :created),
        metric.(
          "  pod created → container started (simulated kubelet: bind, sandbox, fork/exec)",
          :kubelet
        ),
        metric.("  runner VM: container started → remote_up (`boot_timings.remote_up`)", :vm),
        metric.("**overhead = remote_boot − runner VM**", :overhead),
        metric.("overhead incl. `init/1`", :overhead_init),
        metric.(
          "kubelet `phase Running` line → backend's watch reported running (`boot_timings.running`; absent when remote_up came first)",
          :running_seen
        )
      ])

    Out.section("""
    ## 2. Backend overhead per boot (`flame-runner:test`, #{length(results)} sequential boots after one warm-up)

    Each boot runs `FLAMEK8sBackend.init/1` then `remote_boot/1` in its own process (as FLAME's
    Runner does), with the parent pod object from `LocalCluster.create_parent_pod!/2`. Runner VM
    time = remote_up (`boot_timings.remote_up`, ms since remote_boot started, on the wall clock
    taken just before the call) minus the kubelet's `container app: started pid` line (ms). The
    rest of `remote_boot/1` is overhead: the backend's own requests, the simulated kubelet's
    scheduling and process start, and message delivery. After each boot the process is killed,
    as FLAME's Runner ends; the backend's reaper deletes the pod and the secret (and the runner
    VM, seeing its parent process gone, stops), and the next boot starts once the kubelet logged
    the pod gone.#{if errors > 0, do: " Failed boots: #{errors}.", else: ""}

    #{table}
    """)
  end

  defp requests_section(diff, n) do
    rows =
      diff
      |> Enum.sort_by(fn {key, count} -> {Metrics.attribute(key), -count, key} end)
      |> Enum.map(fn {key, count} ->
        [Metrics.label(key), Metrics.attribute(key), count, Stats.num(count / n)]
      end)

    total = fn who ->
      diff
      |> Enum.filter(fn {k, _} -> Metrics.attribute(k) == who end)
      |> Enum.map(&elem(&1, 1))
      |> Enum.sum()
    end

    Out.section("""
    ## 3. API requests per boot (#{n} sequential boots, full lifecycle: init, boot, reaper's deletes)

    `apiserver_request_total` summed by verb/resource/subresource, before and after the boots of
    section 2, divided by #{n}. Non-resource requests (the bench's own `GET /metrics`) are left
    out; the bench sends no other request during these boots (it waits on the kubelet's log and
    on the reaper processes). "kubelet" rows are the simulated kubelet's work for the pod
    (binding, status, reading the secret, and the DELETE that ends a graceful deletion, counted
    from its log: the metrics cannot tell it from the backend's DELETE), "background" its node
    and lease upkeep and the API server's own reconcilers, independent of the boots. Sweeps of finished runner pods (`init/1`'s LIST)
    happen at most once a minute per parent in this version, so they show up in some runs.

    **backend: #{Stats.num(total.(:backend) / n)} requests per boot**; simulated kubelet: #{Stats.num(total.(:kubelet) / n)}; background: #{Stats.num(total.(:background) / n)}.

    #{Out.table(["request", "sent by", "total", "per boot"], rows)}
    """)
  end

  ## Section 4: storms

  def probe_during(fun) do
    probe = Probe.start()
    t0 = Clock.mono()
    result = fun.()
    wall = Clock.mono() - t0
    samples = Probe.stop(probe)
    {result, wall, samples}
  end

  def storm_row(label, strategy, n, ok, wall, durations, samples, reads, note \\ "") do
    [
      label,
      strategy,
      n,
      ok,
      Stats.s(wall),
      Stats.ms(Stats.pct(durations, 50)),
      Stats.ms(Enum.max(durations, fn -> nil end)),
      length(samples),
      Stats.ms(Stats.pct(samples, 50)),
      Stats.ms(Stats.pct(samples, 99)),
      Stats.ms(Enum.max(samples, fn -> nil end)),
      reads,
      note
    ]
  end

  # Rounds alternate the order (watch, poll / poll, watch) so that neither strategy always
  # runs first on a machine whose load drifts.
  defp order(round) when rem(round, 2) == 1, do: [:watch, :poll]
  defp order(_round), do: [:poll, :watch]

  def storms(kube, ns, opts, n, rounds) do
    Out.note("probe: idle baseline")
    {_, wall, samples} = probe_during(fn -> Process.sleep(3000) end)
    baseline = [storm_row("idle baseline (3 s)", "-", "-", "-", wall, [], samples, "-")]

    pod_rows =
      for round <- 1..rounds,
          strategy <- order(round),
          fits?("Pod storm #{strategy}, round #{round}", 30) do
        pod_storm(kube, ns, strategy, n, round)
      end

    rows = baseline ++ pod_rows ++ boot_storms(kube, opts, n, rounds)

    Out.section("""
    ## 4. Concurrent storms from one parent, with a 1 ms timer probe

    All pods/boots start at once, each in its own process. Wall = from the start until the last
    one is ready (pods) or up (boots: `remote_boot` returned / remote_up received). Duration =
    per pod/boot, from the storm's start. Lateness = how late a `send_after(1 ms)` arrives in
    the parent VM (probe process looping during the storm; includes the 1 ms timer resolution,
    see the idle baseline). Pod reads = GET/LIST/WATCH pods per pod/boot (boot rows include
    `init/1`'s GET of the parent pod, and its sweep LIST when due).

    #{Out.table(["storm", "wait strategy", "N", "ok", "wall s", "duration p50 ms", "duration max ms", "probe samples", "lateness p50 ms", "lateness p99 ms", "lateness max ms", "pod reads / item", "notes"], rows)}
    """)
  end

  defp mem_available_mb do
    case File.read("/proc/meminfo") do
      {:ok, text} ->
        [_, kb] = Regex.run(~r/MemAvailable:\s+(\d+) kB/, text)
        div(String.to_integer(kb), 1024)

      _ ->
        nil
    end
  end

  defp pod_storm(kube, ns, strategy, n, round) do
    Out.note("pod storm: #{strategy}, #{n} sleeper pods, round #{round}")
    fun = if strategy == :watch, do: &watch_pod/3, else: &poll_pod/3
    names = for i <- 1..n, do: "storm-#{strategy}-#{round}-#{i}"
    before = Metrics.snapshot(kube)

    {results, wall, samples} =
      probe_during(fn -> concurrently(names, &fun.(kube, ns, &1), 150_000) end)

    _ = delete_pods(kube, ns, Enum.map(names, &"#{ns}/#{&1}"))
    diff = Metrics.diff(Metrics.snapshot(kube), before)

    t0 =
      results
      |> Enum.map(&Map.get(&1, :t_create))
      |> Enum.reject(&is_nil/1)
      |> Enum.min(fn -> 0 end)

    ok = for %{seen: seen} <- results, do: seen - t0

    storm_row(
      "#{n} `sleeper:test` pods: create → ready (round #{round})",
      if(strategy == :watch, do: "watch", else: "poll 1 s"),
      n,
      length(ok),
      wall,
      ok,
      samples,
      Stats.num(Metrics.pod_reads(diff) / n)
    )
  end

  # Full boots. Each runner is a BEAM VM; if the machine cannot take N of them (memory, or boots
  # failing), the storm is retried with N/2.
  defp boot_storms(kube, opts, n, rounds) do
    mem = mem_available_mb()
    per_vm_mb = 120
    fit = if mem, do: min(n, div(mem - 1024, per_vm_mb)), else: n

    if fit < n do
      Out.note("only #{mem} MB available: boot storm with #{fit} runners instead of #{n}")
    end

    for round <- 1..rounds, strategy <- order(round) do
      boot_storm(
        kube,
        opts,
        strategy,
        max(fit, 1),
        if(fit < n, do: "memory: #{mem} MB available, N reduced from #{n}; ", else: ""),
        round
      )
    end
    |> Enum.concat()
  end

  defp boot_storm(kube, opts, strategy, n, note, round) do
    est = 20 + n * 2

    if fits?("Boot storm #{strategy} (#{n}), round #{round}", est) do
      Out.note("boot storm: #{strategy}, #{n} runners, round #{round}")
      before = Metrics.snapshot(kube)

      opts =
        Keyword.put(opts, :boot_timeout, min(180_000, max((remaining_s() - 30) * 1000, 30_000)))

      {results, wall, samples} =
        probe_during(fn ->
          t0 = Clock.wall()
          pids = for _ <- 1..n, do: spawn_boot(strategy, opts)
          results = collect_boots(pids, opts[:boot_timeout] + 10_000)
          Enum.map(results, &Map.put(&1, :t0, t0))
        end)

      leftover = teardown(results)

      for key <- leftover do
        Bench.Capture.incident(
          "runner pod #{key} not gone 90 s after its boot process was killed"
        )

        :persistent_term.put({Bench, :leftover}, [
          key | :persistent_term.get({Bench, :leftover}, [])
        ])
      end

      Process.sleep(500)
      diff = Metrics.diff(Metrics.snapshot(kube), before)
      ok = for %{t_done: done, t0: t0} <- results, do: done - t0
      errors = for %{error: e} <- results, do: e

      vm =
        for %{key: key} = r <- results,
            s = KubeletLog.ts(key, :started),
            up = up_time(r),
            do: up - s

      notes =
        note <>
          "runner VM start→remote_up p50 #{Stats.ms(Stats.pct(vm, 50))} ms, max #{Stats.ms(Enum.max(vm, fn -> nil end))} ms" <>
          if(errors == [],
            do: "",
            else:
              "; #{length(errors)} failed: #{errors |> Enum.map(&inspect/1) |> Enum.uniq() |> Enum.take(2) |> Enum.join("; ") |> String.slice(0, 300)}"
          ) <>
          if(leftover == [], do: "", else: "; #{length(leftover)} pods not gone after teardown")

      label =
        if strategy == :watch,
          do: "watch (backend `remote_boot/1`)",
          else: "poll 1 s (bench variant)"

      row =
        storm_row(
          "#{n} runner boots (`flame-runner:test`): init + boot (round #{round})",
          label,
          n,
          length(ok),
          wall,
          ok,
          samples,
          Stats.num(Metrics.pod_reads(diff) / n),
          notes
        )

      if errors != [] and n > 5 and remaining_s() > est do
        Out.note("#{length(errors)} of #{n} boots failed; retrying with #{div(n, 2)}")

        [
          row
          | boot_storm(
              kube,
              opts,
              strategy,
              div(n, 2),
              "retry after #{length(errors)}/#{n} failed; ",
              round
            )
        ]
      else
        [row]
      end
    else
      []
    end
  end

  ## Cleanup of anything left in the namespace

  def cleanup(kube, ns) do
    pods =
      case Kube.list_pods(kube, ns) do
        {:ok, pods} ->
          names = for pod <- pods, name = pod["metadata"]["name"], name != "parent", do: name
          Enum.each(names, &Kube.delete_pod(kube, ns, &1, grace_period: 0))
          _ = Kube.delete_pod(kube, ns, "parent", grace_period: 0)
          names

        _ ->
          []
      end

    selector = URI.encode_www_form("app.kubernetes.io/managed-by=flame_k8s_backend")

    secrets =
      case Kube.request(kube, "GET", "/api/v1/namespaces/#{ns}/secrets?labelSelector=#{selector}") do
        {:ok, %{"items" => items}} ->
          names = for item <- items, do: item["metadata"]["name"]
          Enum.each(names, &Kube.delete_secret(kube, ns, &1))
          names

        _ ->
          []
      end

    if pods != [],
      do:
        Bench.Capture.incident(
          "final cleanup deleted #{length(pods)} pod(s): #{Enum.join(pods, ", ")}"
        )

    if secrets != [],
      do:
        Bench.Capture.incident(
          "final cleanup deleted #{length(secrets)} runner secret(s): #{Enum.join(secrets, ", ")}"
        )
  end

  def incidents_section(leftover_keys) do
    KubeletLog.sync()
    path = :persistent_term.get({KubeletLog, :path})

    log =
      case File.read(path),
        do:
          (
            {:ok, text} -> String.split(text, "\n")
            _ -> []
          )

    traces =
      for key <- Enum.uniq(leftover_keys) do
        lines = log |> Enum.filter(&String.contains?(&1, "pod #{key}:")) |> Enum.take(-8)
        "Kubelet log of `#{key}`:\n\n```\n#{Enum.join(lines, "\n")}\n```"
      end

    case Bench.Capture.all() do
      [] ->
        :ok

      incidents ->
        Out.section(
          "## Incidents\n\n" <>
            Enum.map_join(incidents, "\n", &("- " <> &1)) <>
            Enum.map_join(traces, "", &("\n\n" <> &1))
        )
    end
  end
end

## Main

{args, _, invalid} =
  OptionParser.parse(System.argv(),
    strict: [
      pods: :integer,
      batch: :integer,
      boots: :integer,
      storm: :integer,
      rounds: :integer,
      max_seconds: :integer,
      quick: :boolean,
      out: :string
    ]
  )

if invalid != [], do: raise("unknown options: #{inspect(invalid)}")

defaults =
  if args[:quick],
    do: [pods: 10, batch: 10, boots: 3, storm: 10, rounds: 1, max_seconds: 600],
    else: [pods: 100, batch: 50, boots: 10, storm: 50, rounds: 2, max_seconds: 600]

args = Keyword.merge(defaults, args)
started_ms = System.monotonic_time(:millisecond)
:persistent_term.put({Bench, :deadline}, started_ms + args[:max_seconds] * 1000)

now = DateTime.utc_now() |> DateTime.truncate(:second)
stamp = Calendar.strftime(now, "%Y-%m-%dT%H%MZ")
out = args[:out] || Path.join([File.cwd!(), "bench", "results", "boot-#{stamp}.md"])

# The parent: a distributed node on 127.0.0.1 that runner nodes (127.0.0.x) connect back to.
epmd = Path.join(:code.root_dir(), "erts-#{:erlang.system_info(:version)}/bin/epmd")
{_, 0} = System.cmd(epmd, ["-daemon"])
{:ok, _} = Node.start(:"flame_bench_#{:rand.uniform(1_000_000_000)}@127.0.0.1", :longnames)

Node.set_cookie(
  :crypto.strong_rand_bytes(16)
  |> Base.encode32(padding: false)
  |> String.to_atom()
)

# Runner nodes killed at teardown make `global` log "requested disconnect ... to prevent
# overlapping partitions" for each; that is expected here and would bury the tables.
:logger.add_primary_filter(
  :bench_quiet_global,
  {fn event, _ ->
     text =
       try do
         case event.msg do
           {:string, s} ->
             IO.chardata_to_string(s)

           {format, args} when is_list(args) ->
             IO.chardata_to_string(:io_lib.format(format, args))

           _ ->
             ""
         end
       rescue
         _ -> ""
       end

     if String.contains?(text, "overlapping partitions"), do: :stop, else: :ignore
   end, nil}
)

Bench.UpTracer.start()
Bench.Capture.start()
{:ok, _} = Application.ensure_all_started(:flame_k8s_backend)
{:ok, _} = Application.ensure_all_started(:flame)

# The hard cap: whatever is running, write what we have and stop the VM (and with it the
# control plane and every pod process).
spawn(fn ->
  Process.sleep(args[:max_seconds] * 1000 + 5_000)
  Bench.Out.note("time cap of #{args[:max_seconds]} s reached: stopping")

  try do
    path =
      Bench.Out.write(
        "**Stopped by the time cap of #{args[:max_seconds]} s; the sections above are complete, later ones are missing.**"
      )

    Bench.Out.note("partial results in #{path}")
  catch
    kind, reason -> Bench.Out.note("no results written: #{Exception.format(kind, reason)}")
  end

  LocalCluster.stop()
  System.halt(3)
end)

# LocalCluster names its state dir after System.unique_integer/1, which starts at the same small
# numbers in every VM, and localkube wipes a state dir it is given: move the counter on by a
# random amount so that a test run started at the same time on this machine gets another one.
for _ <- 1..:rand.uniform(1_000_000), do: System.unique_integer([:positive])
info = LocalCluster.start!()
kube = LocalCluster.kube!()
Bench.KubeletLog.init(info.kubelet_log)
ns = "bench-#{System.unique_integer([:positive])}"
LocalCluster.create_namespace!(kube, ns)
LocalCluster.create_parent_pod!(kube, ns)
{:ok, version} = Kube.request(kube, "GET", "/version")

commit =
  case System.cmd("git", ["rev-parse", "--short", "HEAD"], stderr_to_stdout: true) do
    {sha, 0} ->
      {changes, _} =
        System.cmd("git", ["status", "--porcelain", "--", "lib", "native", "test/support"])

      String.trim(sha) <>
        if(changes != "",
          do: " (with uncommitted changes in lib/, native/ or test/support/)",
          else: ""
        )

    _ ->
      "unknown"
  end

mem_total_mb =
  case File.read("/proc/meminfo") do
    {:ok, text} ->
      div(
        String.to_integer(hd(Regex.run(~r/MemTotal:\s+(\d+)/, text, capture: :all_but_first))),
        1024
      )

    _ ->
      nil
  end

cpus = :erlang.system_info(:logical_processors_available)

header = """
# Boot benchmark: FLAMEK8sBackend on the local control plane

| | |
|---|---|
| date | #{DateTime.to_iso8601(now)} |
| commit | #{commit} |
| machine | #{cpus} CPUs, #{mem_total_mb} MB RAM |
| Erlang/OTP, Elixir | #{System.otp_release()}, #{System.version()} |
| control plane | kube-apiserver #{version["gitVersion"]} + etcd, simulated kubelet `localkube` (pods are local processes; ready in #{info.ready_ms} ms) |
| load average at start (1 / 5 / 15 min) | #{Bench.Out.load()} |
| parameters | pods #{args[:pods]}, batch #{args[:batch]}, boots #{args[:boots]}, storm #{args[:storm]} × #{args[:rounds]} rounds, time cap #{args[:max_seconds]} s |

Everything runs on this one machine: the parent VM (this bench), kube-apiserver, etcd, the
simulated kubelet and every runner VM share its CPUs, and so does anything else running on the
machine (see the load averages). Percentiles are nearest-rank; with n ≤ 100,
p99 is the largest or second-largest sample.
"""

Bench.Out.start(out, header)
IO.puts(header)

backend_opts = [parent_pod: {ns, "parent"}, kubeconfig: info.kubeconfig, boot_timeout: 60_000]

try do
  Bench.readiness(kube, ns, args[:pods], args[:batch])
  Bench.sequential_boots(kube, backend_opts, args[:boots])
  Bench.storms(kube, ns, backend_opts, args[:storm], args[:rounds])
after
  Bench.cleanup(kube, ns)
  Bench.incidents_section(:persistent_term.get({Bench, :leftover}, []))
end

elapsed = div(System.monotonic_time(:millisecond) - started_ms, 1000)
path = Bench.Out.write("Total run time: #{elapsed} s.")
IO.puts("\nTotal run time: #{elapsed} s. Results written to #{Path.relative_to_cwd(path)}")

# Wait until localkube has stopped every process it started (runner VMs, apiserver, etcd)
# before this VM exits.
LocalCluster.stop()
