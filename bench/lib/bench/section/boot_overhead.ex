defmodule Bench.Section.BootOverhead do
  @moduledoc """
  Section 2: where the time of a backend boot goes, from the backend's `boot_timings` and the
  kubelet's log; overhead is what is not the runner VM's own start.
  """

  alias Bench.{KubeletLog, Report, Stats}
  alias Bench.Format, as: F

  def render(results) do
    ok = Enum.reject(results, &Map.has_key?(&1, :error))
    errors = length(results) - length(ok)
    rows = for r <- ok, row = phases(r), do: row

    metric = fn label, key ->
      values = for row <- rows, v = row[key], do: v

      [
        label,
        length(values),
        F.ms(Stats.pct(values, 50)),
        F.ms(Stats.max(values)),
        F.ms(Stats.mean(values))
      ]
    end

    table =
      Report.table(["", "n", "p50 ms", "max ms", "mean ms"], [
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

    Report.section("""
    ## 2. Backend overhead per boot (`flame-runner:test`, #{length(results)} sequential boots after one warm-up)

    Each boot runs `FLAMEK8sBackend.init/1` then `remote_boot/1` in its own process (as FLAME's
    Runner does), with the parent pod object from `LocalCluster.create_parent_pod!/2`. Runner VM
    time = remote_up (`boot_timings.remote_up`, ms since remote_boot started, on the wall clock
    taken just before the call) minus the kubelet's `container app: started pid` line (ms). The
    rest of `remote_boot/1` is overhead: the backend's own requests, the simulated kubelet's
    scheduling and process start, and message delivery. After each boot the process is killed,
    as FLAME's Runner ends; the backend's reaper deletes the pod and the secret (and the runner
    VM, seeing its parent process gone, stops), and the next boot starts once the kubelet logged
    the pod gone and the API server counted the secret's DELETE.#{if errors > 0, do: " Failed boots: #{errors}.", else: ""}

    #{table}
    """)
  end

  # nil for a boot the kubelet's log does not show started and running.
  defp phases(r) do
    with started when started != nil <- KubeletLog.ts(r.key, :started),
         running when running != nil <- KubeletLog.ts(r.key, :running) do
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
        running_seen: if(r.t_running_seen, do: r.t_running_seen - running)
      }
    else
      _ -> nil
    end
  end
end
