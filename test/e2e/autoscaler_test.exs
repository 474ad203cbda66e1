defmodule FLAMEK8sBackend.AutoscalerE2ETest do
  # Boots that understand autoscalers, against the local control plane: a runner pod no node
  # can take (a node selector the one node lacks) waits Unschedulable under the default
  # `unschedulable: :wait`, and the test writes, through the API server, the Events a cluster
  # autoscaler or Karpenter would write about it once it is (the simulated cluster has none).
  # The boot learns of them from its own watch of the pod's Events.
  use FLAMEK8sBackend.Test.ClusterCase, async: true

  @moduletag :e2e
  @moduletag timeout: 120_000

  alias FLAMEK8sBackend.BootError

  # Long enough for the Event to be written and seen on a busy machine; each boot that is
  # meant to time out waits this long.
  @scaling_boot_timeout 10_000
  # A boot meant to fail at once is given all the time in the world: its result is no timeout.
  @long_boot_timeout 90_000

  # The parent's Role as in examples/kubernetes/rbac.yaml, without `list` and `watch` on events.
  @rules_without_events [
    %{
      "apiGroups" => [""],
      "resources" => ["pods"],
      "verbs" => ["get", "list", "watch", "create", "delete"]
    },
    %{"apiGroups" => [""], "resources" => ["secrets"], "verbs" => ["create", "delete"]}
  ]

  setup :parent_setup

  # Backend options for a runner no node of the cluster can take.
  defp unplaceable(opts, boot_timeout) do
    Keyword.merge(opts,
      node_selector: %{"flame-k8s-backend.io/pool" => "gpu"},
      boot_timeout: boot_timeout
    )
  end

  # Starts the boot of `opts` in a task (the runner says remote_up to the process that ran
  # init/1) and waits until its pod is Unschedulable; returns the task, the pod's name and uid.
  defp boot_unschedulable!(kube, ns, opts) do
    test = self()

    task =
      Task.async(fn ->
        {:ok, state} = FLAMEK8sBackend.init(opts)
        send(test, {:runner_name, self(), state.runner_name})
        FLAMEK8sBackend.remote_boot(state)
      end)

    pid = task.pid
    assert_receive {:runner_name, ^pid, name}, 30_000
    {task, name, await_unschedulable!(kube, ns, name)}
  end

  # Waits (on a watch of its own) until the scheduler has marked the runner pod Unschedulable;
  # returns its uid.
  defp await_unschedulable!(kube, ns, name) do
    {:ok, await} = Kube.await_pod(kube, ns, name, timeout: 30_000, unschedulable: :fail)
    ref = await.ref
    assert_receive {:flame_k8s, ^ref, {:failed, {:unschedulable, _message}}}, 35_000
    {:ok, pod} = Kube.get_pod(kube, ns, name)
    pod["metadata"]["uid"]
  end

  # A core/v1 Event about the runner pod, as the cluster autoscaler or Karpenter records it
  # (client-go's recorder: `source.component` and `reportingComponent` both the component).
  defp record!(kube, ns, {name, uid}, component, type, reason, message) do
    now = DateTime.utc_now() |> DateTime.truncate(:second) |> DateTime.to_iso8601()

    {:ok, _} =
      Kube.request(kube, "POST", "/api/v1/namespaces/#{ns}/events",
        body: %{
          "metadata" => %{"name" => "#{name}.#{System.unique_integer([:positive])}"},
          "involvedObject" => %{
            "kind" => "Pod",
            "namespace" => ns,
            "name" => name,
            "uid" => uid,
            "apiVersion" => "v1"
          },
          "type" => type,
          "reason" => reason,
          "message" => message,
          "count" => 1,
          "firstTimestamp" => now,
          "lastTimestamp" => now,
          "source" => %{"component" => component},
          "reportingComponent" => component
        }
      )

    :ok
  end

  # The same through events.k8s.io/v1, as a recorder of that API writes it.
  defp record_v1!(kube, ns, {name, uid}, controller, type, reason, note) do
    now = DateTime.utc_now() |> DateTime.to_iso8601()

    {:ok, _} =
      Kube.request(kube, "POST", "/apis/events.k8s.io/v1/namespaces/#{ns}/events",
        body: %{
          "metadata" => %{"name" => "#{name}.#{System.unique_integer([:positive])}"},
          "regarding" => %{
            "kind" => "Pod",
            "namespace" => ns,
            "name" => name,
            "uid" => uid,
            "apiVersion" => "v1"
          },
          "eventTime" => now,
          "reportingController" => controller,
          "reportingInstance" => "#{controller}-7d9f8c6b5-x2k4q",
          "action" => "Scheduling",
          "type" => type,
          "reason" => reason,
          "note" => note
        }
      )

    :ok
  end

  # The boot's `[:flame_k8s_backend, :boot, :exception]` events come to the test.
  defp attach_exceptions! do
    id = {__MODULE__, make_ref()}
    test = self()

    :ok =
      :telemetry.attach(
        id,
        [:flame_k8s_backend, :boot, :exception],
        fn _event, _measurements, metadata, _ -> send(test, {:boot_exception, metadata}) end,
        nil
      )

    on_exit(fn -> :telemetry.detach(id) end)
  end

  defp boot_result(task), do: Task.await(task, @long_boot_timeout + 30_000)

  @scale_up "pod triggered scale-up: [{eks-runners-2ac4b5e1-7d1f-9a3c-8e55-0b6d4f2c1a97 0->1 (max: 5)}]"

  # The cluster autoscaler's word that it is adding a node for the pod.
  defp record_scale_up!(kube, ns, pod) do
    record!(kube, ns, pod, "cluster-autoscaler", "Normal", "TriggeredScaleUp", @scale_up)
  end

  test "TriggeredScaleUp: a boot that times out is at :scaling_up, in its error and telemetry, and says to raise boot_timeout",
       %{kube: kube, namespace: ns, opts: opts} do
    attach_exceptions!()

    {task, name, uid} = boot_unschedulable!(kube, ns, unplaceable(opts, @scaling_boot_timeout))
    :ok = record_scale_up!(kube, ns, {name, uid})

    assert {:error, %BootError{phase: :scaling_up, reason: {:timeout, info}} = error} =
             boot_result(task)

    assert info.detail == "cluster-autoscaler: " <> @scale_up
    message = Exception.message(error)
    assert message =~ "failed while waiting for a new node: timed out after"
    assert message =~ @scale_up
    assert message =~ "raise the pool's :boot_timeout for autoscaled pools"
    # The error's Events tell the same story.
    assert Enum.any?(error.events, &(&1.reason == "TriggeredScaleUp"))

    assert_receive {:boot_exception,
                    %{
                      runner_name: ^name,
                      phase: :scaling_up,
                      error: %BootError{phase: :scaling_up}
                    }}

    assert runner_pods(kube, ns) == []
  end

  test "NotTriggerScaleUp: the boot fails at once at :scheduling with the autoscaler's message",
       %{kube: kube, namespace: ns, opts: opts} do
    attach_exceptions!()
    {task, name, uid} = boot_unschedulable!(kube, ns, unplaceable(opts, @long_boot_timeout))
    why = "pod didn't trigger scale-up: 1 node(s) didn't match Pod's node affinity/selector"
    :ok = record!(kube, ns, {name, uid}, "cluster-autoscaler", "Normal", "NotTriggerScaleUp", why)
    recorded = System.monotonic_time()
    result = boot_result(task)
    took = System.convert_time_unit(System.monotonic_time() - recorded, :native, :microsecond)

    IO.puts(
      "\nNotTriggerScaleUp: the boot failed #{took / 1000} ms after the Event's POST returned"
    )

    assert {:error,
            %BootError{
              phase: :scheduling,
              reason: {:no_scale_up, %{source: "cluster-autoscaler", message: ^why} = info}
            } = error} = result

    assert info.scheduler =~ "didn't match Pod's node affinity/selector"

    assert Exception.message(error) =~
             "cluster-autoscaler cannot add a node that would fit: #{why}"

    assert_receive {:boot_exception,
                    %{runner_name: ^name, phase: :scheduling, reason: {:no_scale_up, _}}}

    assert runner_pods(kube, ns) == []
  end

  test "Karpenter's Nominated: :scaling_up", %{kube: kube, namespace: ns, opts: opts} do
    {task, name, uid} = boot_unschedulable!(kube, ns, unplaceable(opts, @scaling_boot_timeout))
    nominated = "Pod should schedule on: nodeclaim/default-cvkcv"
    :ok = record!(kube, ns, {name, uid}, "karpenter", "Normal", "Nominated", nominated)

    assert {:error, %BootError{phase: :scaling_up, reason: {:timeout, %{detail: detail}}}} =
             boot_result(task)

    assert detail == "karpenter: " <> nominated
  end

  test "Karpenter's FailedScheduling (through events.k8s.io/v1): the boot fails at once",
       %{kube: kube, namespace: ns, opts: opts} do
    {task, name, uid} = boot_unschedulable!(kube, ns, unplaceable(opts, @long_boot_timeout))

    why =
      ~s(Failed to schedule pod, incompatible with nodepool "default", daemonset overhead=) <>
        ~s({"cpu":"675m","memory":"390Mi","pods":"6"}, incompatible requirements, label ) <>
        ~s("flame-k8s-backend.io/pool" does not have known values)

    :ok = record_v1!(kube, ns, {name, uid}, "karpenter", "Warning", "FailedScheduling", why)

    assert {:error,
            %BootError{
              phase: :scheduling,
              reason: {:no_scale_up, %{source: "karpenter", message: ^why}}
            }} = boot_result(task)
  end

  test "the scheduler's own FailedScheduling is no autoscaler's word: the boot waits on",
       %{kube: kube, namespace: ns, opts: opts} do
    {task, name, uid} = boot_unschedulable!(kube, ns, unplaceable(opts, @scaling_boot_timeout))
    why = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."

    :ok =
      record_v1!(kube, ns, {name, uid}, "default-scheduler", "Warning", "FailedScheduling", why)

    assert {:error, %BootError{phase: :scheduling, reason: {:timeout, %{detail: detail}}}} =
             boot_result(task)

    assert detail =~ "didn't match Pod's node affinity/selector"
  end

  # The simulated kubelet keeps a pod labelled `sim-kubelet/fail: unschedulable`
  # Unschedulable, and binds it once the label is gone: the node the autoscaler added.
  test "a scale-up, then the node: the boot goes on and the runner comes up",
       %{kube: kube, namespace: ns, opts: opts} do
    opts = Keyword.merge(opts, labels: %{"sim-kubelet/fail" => "unschedulable"})
    {task, name, uid} = boot_unschedulable!(kube, ns, opts)

    :ok = record_scale_up!(kube, ns, {name, uid})

    {:ok, _} =
      Kube.request(kube, "PATCH", "/api/v1/namespaces/#{ns}/pods/#{name}",
        body: %{"metadata" => %{"labels" => %{"sim-kubelet/fail" => nil}}},
        content_type: "application/merge-patch+json"
      )

    assert {:ok, terminator, _state} = boot_result(task)
    assert is_pid(terminator) and node(terminator) != node()
  end

  test "a parent that may not read events: the boot is as without autoscaler events",
       %{kube: kube, namespace: ns, opts: opts} do
    token = LocalCluster.service_account_token!(kube, ns, "no-events", @rules_without_events)
    kubeconfig = LocalCluster.write_token_kubeconfig!(token)
    opts = opts |> Keyword.put(:kubeconfig, kubeconfig) |> unplaceable(@scaling_boot_timeout)
    {task, name, uid} = boot_unschedulable!(kube, ns, opts)
    why = "pod didn't trigger scale-up: 1 node(s) didn't match Pod's node affinity/selector"
    :ok = record!(kube, ns, {name, uid}, "cluster-autoscaler", "Normal", "NotTriggerScaleUp", why)

    {result, _log} = ExUnit.CaptureLog.with_log(fn -> boot_result(task) end)

    assert {:error, %BootError{phase: :scheduling, reason: {:timeout, %{detail: detail}}}} =
             result

    assert detail =~ "didn't match Pod's node affinity/selector"
    assert runner_pods(kube, ns) == []
  end
end
