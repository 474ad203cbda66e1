defmodule FLAMEK8sBackend.SoakTest do
  # Many mixed, interleaved boots (FLAMEK8sBackend.Test.Soak): success, missing image,
  # unschedulable, crash on start, runner VM killed after boot, FLAME Runner process killed
  # mid-boot, idle shutdown. The suite runs 20; test/soak/run runs 200 and commits the report
  # (FLAME_K8S_SOAK_BOOTS, FLAME_K8S_SOAK_REPORT); FLAME_K8S_SOAK_RESTARTS=N also kills and
  # restarts the kube-apiserver N times under the boots. Runs alone in its VM for that (the
  # restarts would hit other tests): test/soak/run does.
  use FLAMEK8sBackend.Test.ClusterCase, async: true

  @moduletag :e2e
  @moduletag timeout: 3_600_000

  alias FLAMEK8sBackend.Test.Soak

  setup :parent_setup

  test "mixed boots: every failure carries phase and reason, nothing leaks", %{
    kube: kube,
    namespace: ns,
    opts: opts
  } do
    boots = String.to_integer(System.get_env("FLAME_K8S_SOAK_BOOTS", "20"))
    seed = String.to_integer(System.get_env("FLAME_K8S_SOAK_SEED", "#{:rand.uniform(1_000_000)}"))
    concurrency = String.to_integer(System.get_env("FLAME_K8S_SOAK_CONCURRENCY", "4"))
    restarts = String.to_integer(System.get_env("FLAME_K8S_SOAK_RESTARTS", "0"))
    started = System.monotonic_time(:millisecond)

    {outcomes, restart_ms} = Soak.run(kube, ns, opts, boots, concurrency, seed, restarts)
    leaks = Soak.await_no_runner_objects(kube, ns, 90_000)
    seconds = div(System.monotonic_time(:millisecond) - started, 1000)

    report =
      Soak.Report.report(outcomes, leaks, restart_ms,
        seed: seed,
        concurrency: concurrency,
        boot_timeout_ms: opts[:boot_timeout],
        wall_time: "#{seconds} s (boots and cleanup)"
      )

    case System.get_env("FLAME_K8S_SOAK_REPORT") do
      nil -> :ok
      path -> File.write!(path, report)
    end

    assert length(outcomes) == boots
    assert MapSet.new(Enum.map(outcomes, & &1.kind)) == MapSet.new(Soak.kinds()) or boots < 7

    for %{outcome: :boot_error} = outcome <- outcomes do
      assert Soak.described_failure?(outcome), "no phase or reason: #{inspect(outcome)}"
    end

    assert leaks == :ok, report
    # A boot that met the API server restarting fails on it, and says so.
    unexpected =
      Enum.reject(
        outcomes,
        &(Soak.expected?(&1) or (restarts > 0 and Soak.transport_failure?(&1)))
      )

    assert unexpected == [], report
  end
end
