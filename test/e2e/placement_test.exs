defmodule FLAMEK8sBackend.PlacementE2ETest do
  # Resources and placement through the API server: the runner pod carries what the pool gives,
  # and what the one node cannot take fails at :scheduling with the scheduler's own message.
  # The simulated scheduler (tools/localkube/sched.go) checks the node selector, required node
  # affinity and resource requests against the node's allocatable resources (cpu, memory,
  # pods, ephemeral-storage: no GPUs); it ignores taints, so tolerations are checked on the
  # pod only.
  use FLAMEK8sBackend.Test.ClusterCase, async: true

  @moduletag :e2e
  @moduletag timeout: 120_000

  alias FLAMEK8sBackend.BootError
  alias FLAMEK8sBackend.Test.RemoteFuns

  setup :parent_setup

  defp boot_error!(opts) do
    {:ok, state} = FLAMEK8sBackend.init(opts)
    assert {:error, %BootError{} = error} = FLAMEK8sBackend.remote_boot(state)
    assert runner_pods(LocalCluster.kube!(), elem(opts[:parent_pod], 0)) == []
    error
  end

  test "the runner pod carries the pool's node selector, tolerations, resources and grace period",
       %{kube: kube, namespace: ns, opts: opts} do
    toleration = %{
      "key" => "flame-k8s-backend.io/runners",
      "operator" => "Exists",
      "effect" => "NoSchedule"
    }

    resources = %{
      "requests" => %{"cpu" => "100m", "memory" => "64Mi"},
      "limits" => %{"memory" => "1Gi"}
    }

    pool =
      start_pool!(
        Keyword.merge(opts,
          resources: resources,
          node_selector: %{"kubernetes.io/os" => "linux"},
          tolerations: [toleration],
          shutdown_timeout: 5_000
        )
      )

    assert {runner, 9} = FLAME.call(pool, RemoteFuns.square(3))
    assert runner != node()

    assert [%{"spec" => spec}] = runner_pods(kube, ns)
    assert spec["nodeSelector"] == %{"kubernetes.io/os" => "linux"}
    # Admission may add its own (DefaultTolerationSeconds' not-ready and unreachable).
    assert toleration in spec["tolerations"]
    assert hd(spec["containers"])["resources"] == resources
    assert spec["terminationGracePeriodSeconds"] == 15
  end

  test "a pool asking for a GPU the node lacks fails at :scheduling: Insufficient nvidia.com/gpu",
       %{opts: opts} do
    opts =
      Keyword.merge(opts,
        unschedulable: :fail,
        resources: %{limits: %{"nvidia.com/gpu" => 1}}
      )

    assert %BootError{phase: :scheduling, reason: {:unschedulable, message}} = boot_error!(opts)
    assert message =~ "Insufficient nvidia.com/gpu"
  end

  test "a parent's node selector the node lacks: inherited it fails, node_selector: nil boots",
       %{kube: kube, namespace: ns, opts: opts} do
    {:ok, _} =
      Kube.create_pod(kube, ns, %{
        "metadata" => %{"name" => "picky-parent", "labels" => %{"app" => "parent"}},
        "spec" => %{
          "nodeName" => "elsewhere",
          "nodeSelector" => %{"flame-k8s-backend.io/pool" => "web"},
          "containers" => [%{"name" => "app", "image" => "flame-runner:test"}]
        }
      })

    opts = Keyword.merge(opts, parent_pod: {ns, "picky-parent"}, unschedulable: :fail)

    assert %BootError{phase: :scheduling, reason: {:unschedulable, message}} = boot_error!(opts)
    assert message =~ "didn't match Pod's node affinity/selector"

    pool = start_pool!(Keyword.put(opts, :node_selector, nil))
    assert {_runner, 16} = FLAME.call(pool, RemoteFuns.square(4))
    assert [%{"spec" => spec}] = runner_pods(kube, ns)
    refute Map.has_key?(spec, "nodeSelector")
  end

  # PriorityClass and RuntimeClass are cluster-wide: one of each per test run, named after the
  # test's namespace, deleted afterwards.
  defp create_cluster_object!(kube, path, object) do
    {:ok, _} = Kube.request(kube, "POST", path, body: object)
    name = object["metadata"]["name"]
    on_exit(fn -> Kube.request(LocalCluster.kube!(), "DELETE", "#{path}/#{name}") end)
    name
  end

  test "affinity, priority class and runtime class reach the pod, which the API server admits",
       %{kube: kube, namespace: ns, opts: opts} do
    priority_class =
      create_cluster_object!(kube, "/apis/scheduling.k8s.io/v1/priorityclasses", %{
        "metadata" => %{"name" => "flame-batch-#{ns}"},
        "value" => 1_000
      })

    runtime_class =
      create_cluster_object!(kube, "/apis/node.k8s.io/v1/runtimeclasses", %{
        "metadata" => %{"name" => "flame-runc-#{ns}"},
        "handler" => "runc"
      })

    affinity = %{
      "nodeAffinity" => %{
        "requiredDuringSchedulingIgnoredDuringExecution" => %{
          "nodeSelectorTerms" => [
            %{
              "matchExpressions" => [
                %{"key" => "kubernetes.io/os", "operator" => "In", "values" => ["linux"]}
              ]
            }
          ]
        }
      }
    }

    pool =
      start_pool!(
        Keyword.merge(opts,
          affinity: affinity,
          priority_class_name: priority_class,
          runtime_class_name: runtime_class
        )
      )

    assert {_runner, 25} = FLAME.call(pool, RemoteFuns.square(5))
    assert [%{"spec" => spec}] = runner_pods(kube, ns)
    assert spec["affinity"] == affinity
    assert {spec["priorityClassName"], spec["priority"]} == {priority_class, 1_000}
    assert spec["runtimeClassName"] == runtime_class
  end
end
