defmodule Bench.Section.Budget do
  @moduledoc """
  The cold boot budget (`bench/run --budget [--budget-boots N]`, with `--real-node` on the
  real node): sequential boots of runner pods by the backend (`init/1` + `remote_boot/1`),
  one at a time, each a cold boot of a fresh pod, with several sets of backend options
  (variants, `@variants`) interleaved round-robin (the order rotates every round, so no
  variant always follows the same one), and each boot broken down into its parts on the
  machine's wall clock:

    * create: before `remote_boot/1` → the pod create answered (the parent's clock,
      `boot_timings.created`);
    * scheduling: → the pod's binding (the audit log's `pods/binding` create when the API
      server's policy records it; on the local control plane else the simulated kubelet's
      `bound to` line, which is also the binder);
    * kubelet pickup: binding → containerd received `RunPodSandbox` (real node only);
    * sandbox and network: → the sandbox is ready (containerd's `RunPodSandbox … returns`;
      locally the kubelet's `sandbox ready` line, its pod IP allocated);
    * container start: → the app container started (containerd's `StartContainer … returns
      successfully`; locally the kubelet's `started pid` line);
    * VM start: → the runner VM's own start (asked of the runner by `:erpc` after remote_up:
      `:erlang.system_info(:start_time)` on its system clock);
    * connect: → remote_up (the parent's clock, `boot_timings.remote_up`);
    * total: before `remote_boot/1` → remote_up.

  After each boot its process is killed as FLAME's Runner ends, and the next boot starts once
  the pod is gone (`Bench.Boot.Teardown`).
  """

  alias Bench.{Boot, ContainerdLog, ControlPlane, KubeletLog, Report, Stats}
  alias Bench.Boot.Teardown
  alias Bench.Format, as: F
  alias FLAMEK8sBackend.Test.RealNode

  # {name, backend options merged over the bench's own (a `:manifest` map is deep-merged into
  # the bench's), what it changes}. The first is the baseline the others are compared with.
  @variants [
    {"before", [release_mode: :embedded, tmp_dir: "/tmp/flame", service_account_token: :mount],
     "the runner pod before the budget's cuts: `release_mode: :embedded` (releases' own " <>
       "default), the token volume (`service_account_token: :mount`) and the `flame-tmp` " <>
       "emptyDir (`tmp_dir: \"/tmp/flame\"`)"},
    {"interactive", [tmp_dir: "/tmp/flame", service_account_token: :mount],
     "`release_mode: :interactive` alone, with both volumes"},
    {"default", [],
     "the backend's defaults: interactive, no token volume (`service_account_token: " <>
       ":handover`), no emptyDir (`tmp_dir: :auto`, a writable root): no volume at all (the " <>
       "bench's parent pods have none to copy)"}
  ]

  # {key, label, from, to}: a part is `to − from`, the first of `from`'s events that is known.
  @parts [
    {:create, "create (→ pod create answered)", [:t_boot], :created},
    {:scheduling, "scheduling (→ bound)", [:created], :bound},
    {:pickup, "kubelet pickup (bound → RunPodSandbox received)", [:bound], :sandbox_requested},
    {:sched_pickup, "scheduling + kubelet pickup (created → RunPodSandbox received)", [:created],
     :sandbox_requested},
    {:sandbox, "sandbox and network (→ sandbox ready)", [:sandbox_requested, :bound],
     :sandbox_ready},
    {:container, "container start (→ container started)", [:sandbox_ready], :started},
    {:vm, "VM start (→ runner VM's own start)", [:started], :vm_start},
    {:connect, "connect (→ remote_up at the parent)", [:vm_start], :remote_up},
    {:total, "**total** (before `remote_boot/1` → remote_up)", [:t_boot], :remote_up}
  ]

  @boot_timeout_ms 120_000

  @doc "The variants: `{name, options, description}`."
  def variants, do: @variants

  @doc "Runs `n` boots per variant (fewer when the time cap comes first) and renders the table."
  def run(%ControlPlane{kube: kube} = cp, n) do
    base = ControlPlane.backend_opts(cp)
    # One warm-up boot (NIF connections, code paths and the image in the page cache), not counted.
    Report.note("budget: warm-up boot")
    boot(cp, kube, opts(base, elem(hd(@variants), 1)))
    k = length(@variants)

    boots =
      Enum.reduce_while(0..(n - 1), [], fn round, acc ->
        if Bench.Budget.remaining_s() >= round_estimate_s(cp) do
          order = rotate(@variants, rem(round, k))

          Report.note(
            "budget: round #{round + 1}/#{n}: #{Enum.map_join(order, ", ", &elem(&1, 0))}"
          )

          results =
            for {name, variant, _} <- order,
                do: Map.put(boot(cp, kube, opts(base, variant)), :variant, name)

          {:cont, acc ++ results}
        else
          {:halt, acc}
        end
      end)

    rounds = div(length(boots), k)
    render(cp, add_node_times(cp, boots), n, rounds)
  end

  defp round_estimate_s(%ControlPlane{node: :real}), do: length(@variants) * 8
  defp round_estimate_s(_cp), do: length(@variants) * 3

  defp rotate(list, i), do: Enum.drop(list, i) ++ Enum.take(list, i)

  # The bench's options with the variant's on top; a `:manifest` map merges into the bench's
  # (the real node's sets the runner image).
  defp opts(base, variant) do
    Keyword.merge(base, variant, fn
      :manifest, a, b when is_map(a) and is_map(b) -> deep_merge(a, b)
      _key, _a, b -> b
    end)
  end

  defp deep_merge(a, b) do
    Map.merge(a, b, fn
      _key, x, y when is_map(x) and is_map(y) -> deep_merge(x, y)
      _key, _x, y -> y
    end)
  end

  # One boot, its runner VM's start asked while it still runs, then its teardown.
  defp boot(cp, kube, opts) do
    [result] = Boot.collect([Boot.spawn(:watch, opts, kube)], @boot_timeout_ms)
    result = Map.put(result, :vm_start, vm_start(result[:runner_node]))

    left =
      case cp.node do
        :local -> Teardown.run(kube, [result])
        :real -> Teardown.run_real(kube, ControlPlane.client(cp), cp.namespace, [result], 90_000)
      end

    if left != [],
      do: Bench.Incidents.pod_left_over(hd(left), "pod #{hd(left)} not gone after its boot")

    result
  end

  # The runner VM's start on its own system clock (µs since the epoch): when its monotonic
  # clock started, shifted by its time offset. Three calls: the runner has none of the bench's
  # modules to run a function of them.
  defp vm_start(nil), do: nil

  defp vm_start(node) do
    start = :erpc.call(node, :erlang, :system_info, [:start_time], 5_000)
    offset = :erpc.call(node, :erlang, :time_offset, [], 5_000)
    :erpc.call(node, :erlang, :convert_time_unit, [start + offset, :native, :microsecond], 5_000)
  catch
    _kind, _reason -> nil
  end

  # Every boot's node-side events (µs since the epoch), read once all boots are done.
  defp add_node_times(%ControlPlane{node: :local} = cp, boots) do
    KubeletLog.sync()
    bindings = bindings(cp)

    for b <- boots do
      node =
        if b[:key] do
          %{
            bound: bindings[b.key] || KubeletLog.ts(b.key, :bound),
            sandbox_ready: KubeletLog.ts(b.key, :sandbox_ready),
            started: KubeletLog.ts(b.key, :started)
          }
        else
          %{}
        end

      Map.merge(b, node)
    end
  end

  defp add_node_times(%ControlPlane{node: :real, namespace: ns} = cp, boots) do
    timeline = ContainerdLog.timeline(RealNode.info().logs_dir <> "/containerd.log", ns, "app")
    bindings = bindings(cp)

    for b <- boots do
      Map.merge(b, Map.put(Map.get(timeline, b[:key], %{}), :bound, bindings[b[:key]]))
    end
  end

  # `%{"namespace/pod" => µs}`: when the API server received each pod's binding, if its audit
  # policy records `pods/binding` (the policies of both control planes may record `pods` only).
  defp bindings(%ControlPlane{cluster: cluster, namespace: ns}) do
    %{"namespace" => ns, "verb" => "create", "resource" => "pods", "subresource" => "binding"}
    |> cluster.audit_events()
    |> Enum.reduce(%{}, fn event, acc ->
      case DateTime.from_iso8601(event["time"] || "") do
        {:ok, dt, 0} ->
          Map.put_new(acc, "#{ns}/#{event["name"]}", DateTime.to_unix(dt, :microsecond))

        _ ->
          acc
      end
    end)
  end

  # The parts of one boot (µs), nil where an event is missing.
  defp parts(b) do
    events = %{
      t_boot: b[:t_boot],
      created: b[:t_created],
      bound: b[:bound],
      sandbox_requested: b[:sandbox_requested],
      sandbox_ready: b[:sandbox_ready],
      started: b[:started],
      vm_start: b[:vm_start],
      remote_up: b[:t_remote_up]
    }

    for {key, _label, froms, to} <- @parts, into: %{} do
      from = Enum.find_value(froms, &events[&1])
      {key, if(from && events[to], do: events[to] - from)}
    end
  end

  defp render(cp, boots, n, rounds) do
    names = Enum.map(@variants, &elem(&1, 0))
    ok = for b <- boots, not Map.has_key?(b, :error), do: b
    by_variant = Enum.group_by(ok, & &1.variant, &parts/1)
    [first | others] = names

    pct = fn name, key, p ->
      values = for parts <- Map.get(by_variant, name, []), v = parts[key], do: v
      Stats.pct(values, p)
    end

    # Parts no boot has (the kubelet pickup without binding times, locally) are left out.
    shown =
      for {key, label, _, _} = part <- @parts,
          Enum.any?(names, &pct.(&1, key, 50)),
          not (key == :sched_pickup and
                 Enum.any?(names, fn name -> pct.(name, :scheduling, 50) end)),
          do: {key, label, part}

    rows =
      for {key, label, _} <- shown do
        cells =
          for name <- names, do: "#{F.ms(pct.(name, key, 50))} / #{F.ms(pct.(name, key, 90))}"

        deltas =
          for name <- others do
            "#{delta(pct.(name, key, 50), pct.(first, key, 50))} / #{delta(pct.(name, key, 90), pct.(first, key, 90))}"
          end

        [label | cells] ++ deltas
      end

    head =
      ["part (ms)" | Enum.map(names, &"#{&1} p50 / p90")] ++
        Enum.map(others, &"#{&1} − #{first} p50 / p90")

    counts =
      for {name, _, what} <- @variants do
        mine = Enum.filter(boots, &(&1.variant == name))
        errors = for %{error: e} <- mine, do: e

        failed =
          if errors == [], do: "", else: errors |> Enum.uniq() |> Enum.map_join("; ", &inspect/1)

        [name, what, length(mine) - length(errors), length(errors), String.slice(failed, 0, 300)]
      end

    Report.section("""
    ## Cold boot budget, variant against variant (#{rounds} of #{n} rounds, interleaved)

    Sequential boots by the backend (`FLAMEK8sBackend.init/1` + `remote_boot/1`, each in a process
    of its own as FLAME's Runner boots them), one at a time after one warm-up: each boot is a fresh
    pod, torn down and gone before the next starts. Each round boots every variant once, the order
    rotating by one each round. Every part is a difference of two timestamps on this machine's wall
    clock (all processes share it): #{sources(cp)}
    Nearest-rank p50 / p90 per variant; the difference columns are the variant's p50 (p90) minus the
    first variant's.

    #{Report.table(head, rows)}

    #{Report.table(["variant", "options", "ok", "failed", "errors"], counts)}
    """)
  end

  defp delta(a, b) when is_number(a) and is_number(b) do
    sign = if a - b >= 0, do: "+", else: ""
    sign <> F.ms(a - b)
  end

  defp delta(_a, _b), do: "-"

  defp sources(%ControlPlane{node: :real}) do
    """
    create and connect from the parent (`boot_timings`, ms); the binding from the audit log's
    `pods/binding` requestReceivedTimestamp (absent when the node's audit policy does not record
    `pods/binding`: then scheduling and the kubelet's pickup show as one part); sandbox requested /
    ready and container started from containerd's log (ns); the runner VM's start from the runner
    itself (`:erlang.system_info(:start_time)` plus its time offset, asked by `:erpc`).
    """
  end

  defp sources(_cp) do
    """
    create and connect from the parent (`boot_timings`, ms); bound, sandbox ready and container
    started from the simulated kubelet's log (ms; it binds the pod itself, and its sandbox is a pod
    IP, no network namespace; no kubelet pickup part); the runner VM's start from the runner itself
    (`:erlang.system_info(:start_time)` plus its time offset, asked by `:erpc`). Runners here are
    `elixir` processes, not releases: `RELEASE_MODE` changes nothing, so `interactive` against
    `default` shows the run's noise.
    """
  end
end
