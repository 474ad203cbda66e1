defmodule FLAMEK8sBackend.BootStoryE2ETest do
  # What a boot tells beyond its result, against the local control plane: the pod's Events and
  # the container log in a failed boot's error (best effort, never changing the result), and
  # the :telemetry events of boots and cleanups (the stand-in in test/telemetry_standin).
  #
  # The simulated kubelet writes no Events and serves no container logs: the tests write the
  # Events a kubelet or scheduler would, and the API server's own answer to the log request
  # (it cannot reach a kubelet) shows the log as not readable.
  use FLAMEK8sBackend.Test.ClusterCase, async: true

  @moduletag :e2e
  @moduletag timeout: 120_000

  alias FLAMEK8sBackend.BootError

  # Exactly what README's RBAC section requires: no events, no pods/log.
  @required_rules [
    %{
      "apiGroups" => [""],
      "resources" => ["pods"],
      "verbs" => ["get", "list", "watch", "create", "delete"]
    },
    %{"apiGroups" => [""], "resources" => ["secrets"], "verbs" => ["create", "delete"]}
  ]

  setup %{kube: kube, namespace: ns} do
    LocalCluster.create_parent_pod!(kube, ns)

    opts = [
      parent_pod: {ns, "parent"},
      kubeconfig: LocalCluster.info().kubeconfig,
      boot_timeout: 30_000
    ]

    %{opts: opts}
  end

  defp exits(code) do
    container = %{
      "name" => "app",
      "image" => "shell:test",
      "args" => ["-c", "echo runner says goodbye; sleep 1; exit #{code}"]
    }

    %{"spec" => %{"containers" => [container]}}
  end

  # An Event about the runner pod, as a kubelet would write it.
  defp create_event!(kube, ns, pod, reason, message) do
    now = DateTime.utc_now() |> DateTime.truncate(:second) |> DateTime.to_iso8601()

    {:ok, _} =
      Kube.request(kube, "POST", "/api/v1/namespaces/#{ns}/events",
        body: %{
          "metadata" => %{"name" => "#{pod}.#{System.unique_integer([:positive])}"},
          "involvedObject" => %{"kind" => "Pod", "namespace" => ns, "name" => pod},
          "type" => "Warning",
          "reason" => reason,
          "message" => message,
          "count" => 2,
          "firstTimestamp" => now,
          "lastTimestamp" => now,
          "source" => %{"component" => "kubelet"}
        }
      )

    :ok
  end

  # Every event goes to the test, and into a log the test reads at the end.
  defp attach!(events) do
    id = {__MODULE__, make_ref()}
    test = self()
    {:ok, seen} = Agent.start_link(fn -> [] end)

    :ok =
      :telemetry.attach_many(
        id,
        events,
        fn event, measurements, metadata, _ ->
          Agent.update(seen, &[{event, measurements, metadata} | &1])
          send(test, {:event, event, measurements, metadata})
        end,
        nil
      )

    on_exit(fn -> :telemetry.detach(id) end)
    seen
  end

  test "the error carries the pod's events; the same boot's result either way", %{
    kube: kube,
    namespace: ns,
    opts: opts
  } do
    labels = %{"sim-kubelet/fail" => "image-pull"}

    {:ok, state} =
      FLAMEK8sBackend.init(Keyword.put(opts, :manifest, %{"metadata" => %{"labels" => labels}}))

    :ok = create_event!(kube, ns, state.runner_name, "FailedMount", ~s(secret "tls" not found))

    assert {:error, %BootError{phase: :container_start, reason: {:image_pull, _}} = error} =
             FLAMEK8sBackend.remote_boot(state)

    assert [
             %{
               reason: "FailedMount",
               type: "Warning",
               count: 2,
               message: ~s(secret "tls" not found)
             }
           ] = error.events

    # An image that was never pulled has no log to show.
    assert error.log == nil
    assert Exception.message(error) =~ ~s{\n    Warning FailedMount (x2): secret "tls" not found}
  end

  test "a container that exited: its log is asked for, and where it cannot be read the error says so",
       %{opts: opts} do
    {:ok, state} = FLAMEK8sBackend.init(Keyword.put(opts, :manifest, exits(9)))

    assert {:error,
            %BootError{phase: :remote_up, reason: {:container_exited, %{exit_code: 9}}} = error} =
             FLAMEK8sBackend.remote_boot(state)

    assert error.events == []
    # The API server cannot reach the simulated kubelet for the log; a real kubelet serves it.
    assert {:unreadable, why} = error.log
    assert is_binary(why) and why != ""
    assert Exception.message(error) =~ "\n  log: not readable ("
  end

  test "without the optional RBAC verbs: the same result, and a warning says which verb is missing",
       %{kube: kube, namespace: ns, opts: opts} do
    token = LocalCluster.service_account_token!(kube, ns, "required-only", @required_rules)
    kubeconfig = LocalCluster.write_token_kubeconfig!(token)

    {:ok, state} =
      FLAMEK8sBackend.init(Keyword.merge(opts, kubeconfig: kubeconfig, manifest: exits(9)))

    {result, log} = ExUnit.CaptureLog.with_log(fn -> FLAMEK8sBackend.remote_boot(state) end)

    assert {:error,
            %BootError{phase: :remote_up, reason: {:container_exited, %{exit_code: 9}}} = error} =
             result

    assert {error.events, error.log} == {:forbidden, :forbidden}
    refute Exception.message(error) =~ "not readable"
    # The namespace is this test's own: its warnings have not been given yet in this VM.
    assert log =~ ~s(the RBAC verb "list" on "events" is missing)
    assert log =~ ~s(the RBAC verb "get" on "pods/log" is missing)
  end

  test "telemetry: a boot's span and the cleanup of a failed one, without secrets", %{
    opts: opts
  } do
    seen =
      attach!([
        [:flame_k8s_backend, :boot, :start],
        [:flame_k8s_backend, :boot, :stop],
        [:flame_k8s_backend, :boot, :exception],
        [:flame_k8s_backend, :cleanup, :delete]
      ])

    secret = "s3cr3t-#{System.unique_integer([:positive])}"
    opts = Keyword.put(opts, :secret_env, %{"SECRET_SETTING" => secret})

    {:ok, state} = FLAMEK8sBackend.init(opts)
    name = state.runner_name
    {:ok, terminator, _state} = FLAMEK8sBackend.remote_boot(state)

    assert_receive {:event, [:flame_k8s_backend, :boot, :start], _, %{runner_name: ^name} = start}

    assert_receive {:event, [:flame_k8s_backend, :boot, :stop], stop,
                    %{runner_name: ^name} = meta}

    assert meta.runner_node == node(terminator)
    assert meta.telemetry_span_context == start.telemetry_span_context

    phases =
      stop.create_duration + Map.get(stop, :pod_start_duration, 0) + stop.remote_up_duration

    assert phases == stop.duration
    assert stop.remote_up_duration > 0
    assert stop.create_duration > 0

    {:ok, failing} = FLAMEK8sBackend.init(Keyword.put(opts, :manifest, exits(3)))
    failing_name = failing.runner_name
    assert {:error, %BootError{} = error} = FLAMEK8sBackend.remote_boot(failing)

    assert_receive {:event, [:flame_k8s_backend, :boot, :exception], _,
                    %{runner_name: ^failing_name} = failed}

    assert %{kind: :error, phase: phase, reason: {:container_exited, %{exit_code: 3}}} = failed
    assert phase == error.phase
    assert failed.error == error

    for kind <- [:pod, :secret] do
      assert_receive {:event, [:flame_k8s_backend, :cleanup, :delete], %{attempts: 1},
                      %{kind: ^kind, name: ^failing_name} = cleanup}

      assert %{deleter: :reaper, trigger: :boot_failed, result: :ok} = cleanup
    end

    shown = inspect(Agent.get(seen, & &1), limit: :infinity, printable_limit: :infinity)
    refute shown =~ secret
    refute shown =~ Atom.to_string(Node.get_cookie())
  end
end
