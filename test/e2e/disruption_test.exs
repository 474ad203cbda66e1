defmodule FLAMEK8sBackend.DisruptionE2ETest do
  # Why a booted runner went, against the local control plane: the parent follows its runner
  # pods through the shared watch and emits [:flame_k8s_backend, :runner, :disruption] and
  # [:flame_k8s_backend, :runner, :down]. Kubernetes' side is injected through the API server:
  # an eviction (the API server sets DisruptionTarget EvictionByEvictionAPI, then deletes), a
  # preemption (the condition the scheduler would set, through the status subresource, then
  # the delete), and a plain delete. An idle shutdown is no `:down`.
  use FLAMEK8sBackend.Test.ClusterCase, async: true

  import ExUnit.CaptureLog

  @moduletag :e2e
  @moduletag timeout: 120_000

  alias FLAMEK8sBackend.Test.{RemoteFuns, Soak}

  setup :parent_setup

  @disruption [:flame_k8s_backend, :runner, :disruption]
  @down [:flame_k8s_backend, :runner, :down]

  setup %{namespace: ns} do
    forward_events!([@disruption, @down], ns)
    :ok
  end

  defp boot!(opts) do
    {:ok, state} = FLAMEK8sBackend.init(opts)
    {:ok, terminator, state} = FLAMEK8sBackend.remote_boot(state)
    {node(terminator), state.runner_name}
  end

  defp evict!(kube, ns, name) do
    :ok = evict_pod!(kube, ns, name)

    at = System.system_time()
    %{condition: at, delete: at}
  end

  # What the scheduler writes on a pod it preempts, before it deletes it.
  defp preempt!(kube, ns, name) do
    {:ok, _} =
      Kube.request(kube, "PATCH", "/api/v1/namespaces/#{ns}/pods/#{name}/status",
        body: %{
          "status" => %{
            "conditions" => [
              %{
                "type" => "DisruptionTarget",
                "status" => "True",
                "reason" => "PreemptionByScheduler",
                "message" => "flame-test/high: preempting to accommodate a higher priority pod"
              }
            ]
          }
        },
        content_type: "application/strategic-merge-patch+json"
      )

    patched = System.system_time()
    :ok = Kube.delete_pod(kube, ns, name)
    %{condition: patched, delete: System.system_time()}
  end

  defp ms_since(system_time, from),
    do: System.convert_time_unit(system_time - from, :native, :microsecond) / 1000

  defp went_down_lines(log, name),
    do:
      log
      |> String.split("\n")
      |> Enum.filter(&(&1 =~ "runner pod" and &1 =~ "#{name} went down"))

  # The runner node down, and every runner pod and secret of the namespace gone.
  defp assert_nothing_left(kube, ns, runner) do
    Node.monitor(runner, true)
    assert_receive {:nodedown, ^runner}, 30_000
    assert Soak.await_no_runner_objects(kube, ns, 30_000) == :ok
  end

  for {how, inject, reason} <- [
        {"evicted", :evict!, "EvictionByEvictionAPI"},
        {"preempted", :preempt!, "PreemptionByScheduler"}
      ] do
    test "a booted runner #{how}: :disruption, then :down with #{reason}, one warning, nothing left",
         %{kube: kube, namespace: ns, opts: opts} do
      {runner, name} = boot!(opts)
      pod = "#{ns}/#{name}"

      log =
        capture_log(fn ->
          acted = unquote(inject)(kube, ns, name)

          assert_receive {:event, @disruption, %{system_time: disrupted},
                          %{pod: ^pod, runner_name: ^name, runner_node: ^runner} = meta},
                         10_000

          assert %{namespace: ^ns, reason: unquote(reason), message: message} = meta
          assert is_binary(message)

          assert_receive {:event, @down, %{system_time: down},
                          %{pod: ^pod, reason: unquote(reason), message: ^message} = down_meta},
                         30_000

          assert %{namespace: ^ns, runner_name: ^name, runner_node: ^runner} = down_meta
          assert Map.has_key?(down_meta, :exit_code)

          IO.puts(
            "\n#{unquote(how)}: :disruption #{ms_since(disrupted, acted.condition)} ms after " <>
              "the condition's request returned, :down #{ms_since(down, acted.delete)} ms " <>
              "after the delete's"
          )

          assert_nothing_left(kube, ns, runner)
        end)

      assert [line] = went_down_lines(log, name)
      assert line =~ "[warning]"
      assert line =~ unquote(reason)
      refute_received {:event, @down, _, _}
      refute_received {:event, @disruption, _, _}
    end
  end

  test "a runner pod deleted by someone else: :down with reason Deleted, no :disruption", %{
    kube: kube,
    namespace: ns,
    opts: opts
  } do
    {runner, name} = boot!(opts)

    log =
      capture_log(fn ->
        :ok = Kube.delete_pod(kube, ns, name)

        assert_receive {:event, @down, _, %{runner_name: ^name, reason: "Deleted"} = meta},
                       30_000

        assert meta.runner_node == runner
        assert_nothing_left(kube, ns, runner)
      end)

    assert [_line] = went_down_lines(log, name)
    refute_received {:event, @disruption, _, _}
  end

  test "an idle shutdown is an orderly end: no :down, no warning", %{
    kube: kube,
    namespace: ns,
    opts: opts
  } do
    pool = start_pool!(opts, idle_shutdown_after: short_idle_ms())

    log =
      capture_log(fn ->
        info = FLAME.call(pool, &RemoteFuns.whereami/0)
        assert_nothing_left(kube, ns, info.node)
        # The runner's reaper is done once it tracks nothing: it decided by then.
        eventually(
          fn -> not FLAMEK8sBackend.Reaper.tracked?(ns, :secret, info.pod_name) end,
          30_000
        )

        send(self(), {:pod_name, info.pod_name})
      end)

    assert_received {:pod_name, name}
    assert went_down_lines(log, name) == []
    refute_received {:event, @down, _, _}
    refute_received {:event, @disruption, _, _}
  end
end
