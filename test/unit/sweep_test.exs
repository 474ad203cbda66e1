defmodule FLAMEK8sBackend.SweepTest do
  use ExUnit.Case, async: true

  @moduletag :unit
  doctest FLAMEK8sBackend.Sweep

  Code.require_file("support/fake_api_server.exs", __DIR__)

  alias FLAMEK8sBackend.{Kube, Options, Sweep}
  alias FLAMEK8sBackend.Test.{CleanupEvents, FakeApiServer}

  @now ~U[2025-01-01 12:01:00Z]

  defp pod(phase, created) do
    %{"metadata" => %{"creationTimestamp" => created}, "status" => %{"phase" => phase}}
  end

  describe "leftover?/3" do
    test "finished runner pods older than a boot timeout" do
      assert Sweep.leftover?(pod("Succeeded", "2025-01-01T12:00:00Z"), 30_000, @now)
      assert Sweep.leftover?(pod("Failed", "2025-01-01T12:00:00Z"), 30_000, @now)
    end

    test "never a pod that still runs or waits, whatever its age" do
      refute Sweep.leftover?(pod("Running", "2020-01-01T00:00:00Z"), 30_000, @now)
      refute Sweep.leftover?(pod("Pending", "2020-01-01T00:00:00Z"), 30_000, @now)
    end

    test "a pod whose app container terminated while a sidecar runs on (a service mesh)" do
      pod =
        "Running"
        |> pod("2025-01-01T12:00:00Z")
        |> put_in(["metadata", "annotations"], %{"flame-k8s-backend.io/app-container" => "web"})
        |> put_in(["status", "containerStatuses"], [
          %{"name" => "istio-proxy", "state" => %{"running" => %{}}},
          %{"name" => "web", "state" => %{"terminated" => %{"exitCode" => 0}}}
        ])

      assert Sweep.leftover?(pod, 30_000, @now)

      running =
        put_in(pod, ["status", "containerStatuses", Access.at(1), "state"], %{"running" => %{}})

      refute Sweep.leftover?(running, 30_000, @now)

      # Without the annotation (not one of ours, or older) only the phase counts.
      refute Sweep.leftover?(put_in(pod, ["metadata", "annotations"], %{}), 30_000, @now)
    end

    test "never a pod of unknown age" do
      refute Sweep.leftover?(pod("Failed", nil), 30_000, @now)
      refute Sweep.leftover?(pod("Failed", "yesterday"), 30_000, @now)
    end
  end

  test "run/4 deletes finished runner pods and their own secrets, one cleanup event each" do
    test = self()
    uid = "sweep-events-#{System.unique_integer([:positive])}"
    CleanupEvents.forward!(&match?(%{deleter: :sweep, namespace: "sweep-ns"}, &1))

    # Two finished long ago: done-1 with a secret of its own (both go), done-2 taking its
    # cookie from the parent's Secret (only the pod goes); busy still runs (left alone).
    pod = fn name, phase, container ->
      ~s({"metadata":{"name":"#{name}","creationTimestamp":"2020-01-01T00:00:00Z"},) <>
        ~s("spec":{"containers":[#{container}]},"status":{"phase":"#{phase}"}})
    end

    list =
      ~s({"kind":"PodList","apiVersion":"v1","metadata":{},"items":[) <>
        Enum.join(
          [
            pod.(
              "done-1",
              "Succeeded",
              ~s({"name":"app","envFrom":[{"secretRef":{"name":"done-1"}}]})
            ),
            pod.("done-2", "Failed", ~s({"name":"app"})),
            pod.("busy", "Running", ~s({"name":"app"}))
          ],
          ","
        ) <> "]}"

    url =
      FakeApiServer.start!(test, fn
        "GET", "/api/v1/namespaces/sweep-ns/pods" ->
          {200, list}

        "DELETE", "/api/v1/namespaces/sweep-ns/pods/done-2" ->
          {403,
           ~s({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"no","reason":"Forbidden","code":403})}

        "DELETE", _path ->
          {200, ~s({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success"})}
      end)

    {:ok, kube} = Kube.connect(url: url, token: "t")
    parent = %{"metadata" => %{"name" => "web-1", "uid" => uid}}

    assert Sweep.run(kube, "sweep-ns", parent, Options.validate!([])) == :ok

    assert_received {:api_request, "GET", "/api/v1/namespaces/sweep-ns/pods", _}

    deletes =
      for {:api_request, "DELETE", path, _} <- Process.info(self(), :messages) |> elem(1),
          do: path

    assert deletes == [
             "/api/v1/namespaces/sweep-ns/pods/done-1",
             "/api/v1/namespaces/sweep-ns/secrets/done-1",
             "/api/v1/namespaces/sweep-ns/pods/done-2"
           ]

    events =
      for {:cleanup, %{duration: d, attempts: 1}, meta} <-
            Process.info(self(), :messages) |> elem(1),
          is_integer(d) and d >= 0,
          do: Map.take(meta, [:deleter, :trigger, :kind, :name, :result])

    assert [
             %{deleter: :sweep, trigger: :finished, kind: :pod, name: "done-1", result: :ok},
             %{deleter: :sweep, trigger: :finished, kind: :secret, name: "done-1", result: :ok},
             %{
               deleter: :sweep,
               trigger: :finished,
               kind: :pod,
               name: "done-2",
               result: {:error, {:api, 403, "Forbidden", "no"}}
             }
           ] = events
  end

  test "run/4 never fails a boot, not even when the API server is unreachable" do
    {:ok, kube} = Kube.connect(url: "https://127.0.0.1:1", token: "t", request_timeout: 2_000)

    parent = %{
      "metadata" => %{"name" => "web-1", "uid" => "sweep-test-#{System.unique_integer()}"}
    }

    assert Sweep.run(kube, "prod", parent, Options.validate!([])) == :ok
  end
end
