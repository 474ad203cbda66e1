defmodule FLAMEK8sBackend.SweepTest do
  use ExUnit.Case, async: true

  @moduletag :unit
  doctest FLAMEK8sBackend.Sweep

  alias FLAMEK8sBackend.{Kube, Options, Sweep}

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

  test "run/4 never fails a boot, not even when the API server is unreachable" do
    {:ok, kube} = Kube.connect(url: "https://127.0.0.1:1", token: "t", request_timeout: 2_000)

    parent = %{
      "metadata" => %{"name" => "web-1", "uid" => "sweep-test-#{System.unique_integer()}"}
    }

    assert Sweep.run(kube, "prod", parent, Options.validate!([])) == :ok
  end
end
