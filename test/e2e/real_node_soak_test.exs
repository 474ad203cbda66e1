defmodule FLAMEK8sBackend.RealNodeSoakTest do
  # The soak on the real node (FLAMEK8sBackend.Test.Soak.RealNode): boots from the demo parent
  # in the cluster, interleaved, with the parent VM SIGKILLed mid-boot (during the create and
  # during the await) and restarted in its pod, runner containers SIGKILLed, and the kubelet,
  # containerd and the kube-apiserver restarted under the boots. The suite runs a short one (14
  # boots: each kind twice, each node fault once); test/soak/run-realnode runs the long one and
  # writes its report (FLAME_K8S_SOAK_BOOTS, FLAME_K8S_SOAK_FAULTS, FLAME_K8S_SOAK_REPORT).
  use ExUnit.Case, async: false

  @moduletag :e2e
  @moduletag :real_node
  @moduletag timeout: 7_200_000

  alias FLAMEK8sBackend.Test.RealNode
  alias FLAMEK8sBackend.Test.Soak.RealNode, as: Soak

  case RealNode.test_mode() do
    :running ->
      if RealNode.info().app_image == nil do
        @moduletag skip: "no app image (tools/realnode/image.sh) was imported into the real node"
      end

    :standalone ->
      :ok

    {:skip, reason} ->
      @moduletag skip: reason
  end

  setup_all do
    RealNode.ensure_started!()
    ctx = Soak.deploy_demo!("rn-soak")
    on_exit(fn -> RealNode.delete_namespace(RealNode.kube!(), ctx.namespace) end)
    ctx
  end

  test "mixed boots under node faults and parent kills: nothing leaks", ctx do
    boots = String.to_integer(System.get_env("FLAME_K8S_SOAK_BOOTS", "14"))
    faults = String.to_integer(System.get_env("FLAME_K8S_SOAK_FAULTS", "3"))
    concurrency = String.to_integer(System.get_env("FLAME_K8S_SOAK_CONCURRENCY", "3"))
    seed = String.to_integer(System.get_env("FLAME_K8S_SOAK_SEED", "#{:rand.uniform(1_000_000)}"))
    started = System.monotonic_time(:millisecond)

    Soak.parent!(ctx)
    %{outcomes: outcomes, faults: fault_log} = Soak.run(ctx, boots, concurrency, seed, faults)
    {leaks, sweep_ms, before} = Soak.final_sweep(ctx)
    seconds = div(System.monotonic_time(:millisecond) - started, 1000)

    report =
      Soak.report(outcomes, fault_log, leaks,
        date: DateTime.utc_now() |> DateTime.truncate(:second) |> DateTime.to_iso8601(),
        command:
          "test/soak/run-realnode #{boots} #{concurrency} #{faults} (FLAME_K8S_SOAK_SEED=#{seed})",
        node: "tools/realnode (kubelet, containerd, kube-apiserver v1.36.3, 2-core VM)",
        parent: "the demo app of examples/kubernetes in a pod (image of tools/realnode/image.sh)",
        runner_boot_timeout_ms: Soak.boot_timeout(),
        final_sweep:
          "waited #{sweep_ms} ms for the sweep's age rule, then one init/1 in the parent; " <>
            "left for it: #{length(before.pods)} runner pods, #{length(before.secrets)} Secrets",
        wall_time: "#{seconds} s"
      )

    IO.puts(report)

    case System.get_env("FLAME_K8S_SOAK_REPORT") do
      nil -> :ok
      path -> File.write!(path, report)
    end

    assert Enum.count(outcomes, &(&1.try == 1)) == boots
    # Every kind got to its own outcome at least once, however the faults fell.
    reached = outcomes |> Enum.filter(&Soak.expected?/1) |> MapSet.new(& &1.kind)
    assert reached == MapSet.new(Soak.kinds()) or boots < 2 * length(Soak.kinds()), report
    assert leaks == :ok, report

    unexplained =
      Enum.reject(outcomes, &(Soak.expected?(&1) or Soak.explained_by_fault?(&1, fault_log)))

    assert unexplained == [], report
    node_faults = Enum.filter(fault_log, &(&1.fault in Soak.faults()))
    assert length(node_faults) == faults
    assert Enum.all?(node_faults, & &1.ok), report
  end
end
