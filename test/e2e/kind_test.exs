defmodule FLAMEK8sBackend.KindTest do
  # The end-to-end scenarios on a real cluster: the flame_demo app (examples/kind/flame_demo)
  # deployed to kind with the example manifests. examples/kind/kind.sh sets all of it up and
  # runs `mix test --only kind test/e2e/kind_test.exs`; excluded by default (test/test_helper.exs).
  # It needs kind and kubectl, which CI does not have: the same three scenarios run on every CI
  # run on the real node instead (test/e2e/real_node_test.exs, RealNodeParentTest: the FLAME
  # call, the idle shutdown, the pool whose image cannot be pulled), with the same app and
  # manifests.
  #
  # From outside the cluster, with $KUBECONFIG: FLAME calls run in the parent pod through
  # `kubectl exec deploy/flame-demo -- bin/flame_demo rpc ...`, and the runner pods are checked
  # through FLAMEK8sBackend.Kube.
  use ExUnit.Case, async: false

  @moduletag :e2e

  alias FLAMEK8sBackend.Kube

  @moduletag :kind
  @moduletag timeout: 300_000

  @managed_by "app.kubernetes.io/managed-by=flame_k8s_backend"

  setup_all do
    kubeconfig = System.get_env("KUBECONFIG") || Path.expand("~/.kube/config")
    System.find_executable("kubectl") || raise "the kind tests need kubectl on PATH"

    kube =
      case Kube.connect(kubeconfig: kubeconfig) do
        {:ok, kube} ->
          kube

        {:error, reason} ->
          raise "cannot use #{kubeconfig}: #{inspect(reason)}; the kind tests run against the " <>
                  "cluster examples/kind/kind.sh sets up (it sets KUBECONFIG)"
      end

    %{
      kube: kube,
      namespace: System.get_env("FLAME_DEMO_NAMESPACE", "default"),
      deployment: System.get_env("FLAME_DEMO_DEPLOYMENT", "flame-demo")
    }
  end

  test "a FLAME call runs on a runner pod, which is not adopted by the Deployment", ctx do
    %{parent: parent, runner: runner} = rpc!(ctx, "FlameDemo.where()")

    assert runner.node != parent.node
    assert runner.pod != parent.pod
    assert Atom.to_string(runner.node) == "#{runner.pod}@#{runner.pod_ip}"
    assert rpc!(ctx, "FlameDemo.square(12)") == 144

    {:ok, pod} = Kube.get_pod(ctx.kube, ctx.namespace, runner.pod)
    labels = pod["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "flame_k8s_backend"
    refute Map.has_key?(labels, "excluster")
    assert [%{"kind" => "Pod", "name" => owner}] = pod["metadata"]["ownerReferences"]
    assert owner == parent.pod

    # The pitfall of deployment.yaml: a runner matching the Deployment's selector would be
    # adopted by its ReplicaSet and deleted as a surplus replica.
    {:ok, deployment} =
      Kube.request(
        ctx.kube,
        "GET",
        "/apis/apps/v1/namespaces/#{ctx.namespace}/deployments/#{ctx.deployment}"
      )

    selector = deployment["spec"]["selector"]["matchLabels"]
    refute Enum.all?(selector, fn {key, value} -> labels[key] == value end)
  end

  test "an idle runner pod and its secret go away", ctx do
    %{runner: runner} = rpc!(ctx, "FlameDemo.where()")
    assert {:ok, _} = Kube.get_pod(ctx.kube, ctx.namespace, runner.pod)

    # The demo pool's idle_shutdown_after is 10 s; allow for the pod's graceful deletion.
    assert eventually(120_000, fn ->
             {:ok, pods} = Kube.list_pods(ctx.kube, ctx.namespace, label_selector: @managed_by)
             runner.pod not in Enum.map(pods, & &1["metadata"]["name"])
           end),
           "runner pod #{runner.pod} still exists 120 s after its call"

    assert {:error, {:api, 404, _, _}} =
             Kube.request(
               ctx.kube,
               "GET",
               "/api/v1/namespaces/#{ctx.namespace}/secrets/#{runner.pod}"
             )
  end

  test "a pool whose image cannot be pulled reports the BootError", ctx do
    bad_image = System.get_env("FLAME_DEMO_BAD_IMAGE", "registry.invalid/flame-demo:missing")

    assert {:error, message} = rpc!(ctx, "FlameDemo.bad_image_call()")
    assert is_binary(message), "no boot failure was reported: #{inspect(message)}"
    assert message =~ "cannot pull image"
    assert message =~ bad_image

    # The failed runner pods are deleted by the backend.
    assert eventually(60_000, fn ->
             {:ok, pods} = Kube.list_pods(ctx.kube, ctx.namespace, label_selector: @managed_by)

             not Enum.any?(pods, fn pod ->
               Enum.any?(pod["spec"]["containers"], &(&1["image"] == bad_image))
             end)
           end)
  end

  # Evaluates `expr` in the parent pod's running release; FlameDemo.Cli.print/1 marks the result.
  defp rpc!(ctx, expr) do
    args = [
      "exec",
      "-n",
      ctx.namespace,
      "deploy/#{ctx.deployment}",
      "--",
      "bin/flame_demo",
      "rpc",
      "FlameDemo.Cli.print(#{expr})"
    ]

    {output, status} = System.cmd("kubectl", args, stderr_to_stdout: true)
    assert status == 0, "kubectl #{Enum.join(args, " ")} exited with #{status}:\n#{output}"

    case Regex.run(~r/^FLAME_DEMO_RESULT (\S+)$/m, output) do
      [_, encoded] -> encoded |> Base.decode64!() |> :erlang.binary_to_term()
      nil -> flunk("no result from #{expr}:\n#{output}")
    end
  end

  # Whether fun returns true within timeout ms (checked every second).
  defp eventually(timeout, fun) do
    deadline = System.monotonic_time(:millisecond) + timeout
    poll(fun, deadline)
  end

  defp poll(fun, deadline) do
    cond do
      fun.() ->
        true

      System.monotonic_time(:millisecond) > deadline ->
        false

      true ->
        Process.sleep(1_000)
        poll(fun, deadline)
    end
  end
end
