defmodule FLAMEK8sBackend.SweepTest do
  use ExUnit.Case, async: true

  @moduletag :unit
  doctest FLAMEK8sBackend.Sweep

  Code.require_file("support/fake_api_server.exs", __DIR__)

  alias FLAMEK8sBackend.{Kube, Options, Reaper, Sweep}
  alias FLAMEK8sBackend.Test.{CleanupEvents, FakeApiServer}

  @now ~U[2025-01-01 12:01:00Z]

  defp pod(phase, created) do
    %{"metadata" => %{"creationTimestamp" => created}, "status" => %{"phase" => phase}}
  end

  @boot_timeout_annotation "flame-k8s-backend.io/boot-timeout-ms"

  describe "leftover?/3" do
    # The sweep's margin over an object's own boot timeout is 30 s: 30 s + 30 s = 60 s.
    test "a runner object older than its boot timeout and the margin, whatever its phase" do
      for phase <- ["Pending", "Running", "Succeeded", "Failed"] do
        assert Sweep.leftover?(pod(phase, "2025-01-01T11:59:59Z"), 30_000, @now)
      end

      for phase <- ["Pending", "Running"] do
        refute Sweep.leftover?(pod(phase, "2025-01-01T12:00:01Z"), 30_000, @now)
      end

      # A Secret has no phase.
      secret = %{"metadata" => %{"creationTimestamp" => "2025-01-01T11:59:59Z"}}
      assert Sweep.leftover?(secret, 30_000, @now)

      refute Sweep.leftover?(
               put_in(secret, ["metadata", "creationTimestamp"], "2025-01-01T12:00:01Z"),
               30_000,
               @now
             )
    end

    test "an unfinished object's own boot timeout (its annotation) counts, not the sweeping pool's" do
      # Created by a pool with a boot timeout of 10 minutes, swept by one of 30 s.
      pod =
        "Pending"
        |> pod("2025-01-01T11:50:30Z")
        |> put_in(["metadata", "annotations"], %{@boot_timeout_annotation => "600000"})

      refute Sweep.leftover?(pod, 30_000, @now)
      assert Sweep.leftover?(pod, 30_000, ~U[2025-01-01 12:01:01Z])

      # Created by a pool with a boot timeout of 1 s, swept by one of 10 minutes.
      quick = put_in(pod, ["metadata", "annotations", @boot_timeout_annotation], "1000")
      assert Sweep.leftover?(quick, 600_000, @now)
    end

    test "a finished pod once it is older than a boot timeout: nothing but a boot in flight, which a reaper tracks, still needs it" do
      for phase <- ["Succeeded", "Failed"] do
        assert Sweep.leftover?(pod(phase, "2025-01-01T12:00:29Z"), 30_000, @now)
        refute Sweep.leftover?(pod(phase, "2025-01-01T12:00:31Z"), 30_000, @now)
      end

      # A sidecar (a service mesh) keeps the pod Running after the runner VM exited.
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
    end

    test "never one of unknown age" do
      refute Sweep.leftover?(pod("Failed", nil), 30_000, @now)
      refute Sweep.leftover?(pod("Failed", "yesterday"), 30_000, @now)
    end
  end

  @status_ok ~s({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success"})
  @forbidden ~s({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",) <>
               ~s("message":"no","reason":"Forbidden","code":403})

  defp object_json(name, created, extra \\ "") do
    ~s({"metadata":{"name":"#{name}","creationTimestamp":"#{created}"}#{extra}})
  end

  defp pod_json(name, phase, created, container \\ ~s({"name":"app"})) do
    object_json(
      name,
      created,
      ~s(,"spec":{"containers":[#{container}]},"status":{"phase":"#{phase}"})
    )
  end

  defp list_json(items),
    do: ~s({"kind":"List","apiVersion":"v1","metadata":{},"items":[#{Enum.join(items, ",")}]})

  # A fake API server with these runner pods and secrets in "sweep-ns"; DELETEs of the
  # paths in `forbidden` are refused, all others work.
  defp sweep_server!(pods, secrets, forbidden \\ []) do
    FakeApiServer.start!(self(), fn
      "GET", "/api/v1/namespaces/sweep-ns/pods" ->
        {200, list_json(pods)}

      "GET", "/api/v1/namespaces/sweep-ns/secrets" when is_list(secrets) ->
        {200, list_json(secrets)}

      "GET", "/api/v1/namespaces/sweep-ns/secrets" ->
        {403, @forbidden}

      "DELETE", path ->
        if path in forbidden, do: {403, @forbidden}, else: {200, @status_ok}
    end)
  end

  defp sent_deletes do
    for {:api_request, "DELETE", path, _} <- Process.info(self(), :messages) |> elem(1),
        do: String.replace_prefix(path, "/api/v1/namespaces/sweep-ns/", "")
  end

  defp sweep!(url) do
    {:ok, kube} = Kube.connect(url: url, token: "t")
    uid = "sweep-#{System.unique_integer([:positive])}"
    parent = %{"metadata" => %{"name" => "web-1", "uid" => uid}}
    assert Sweep.run(kube, "sweep-ns", parent, Options.validate!([])) == :ok
    kube
  end

  # A FLAME Runner stand-in and a live reaper of this VM tracking the pod and secret `name`.
  defp tracked!(kube, name) do
    owner = spawn(fn -> Process.sleep(:infinity) end)
    {:ok, reaper} = Reaper.start(kube, "sweep-ns", owner, false, 60_000)
    :ok = Reaper.track(reaper, :secret, name)
    :ok = Reaper.track(reaper, :pod, name)

    on_exit(fn ->
      DynamicSupervisor.terminate_child(FLAMEK8sBackend.ReaperSupervisor, reaper)
      Process.exit(owner, :kill)
    end)
  end

  @long_ago "2020-01-01T00:00:00Z"

  test "run/4 deletes this parent's old runner pods whatever their phase, and old secrets whose pod is gone, one cleanup event each" do
    CleanupEvents.forward!(&match?(%{deleter: :sweep, namespace: "sweep-ns"}, &1))
    young = DateTime.to_iso8601(DateTime.utc_now())

    pods = [
      # With a secret of its own, which goes too.
      pod_json(
        "done-1",
        "Succeeded",
        @long_ago,
        ~s({"name":"app","envFrom":[{"secretRef":{"name":"done-1"}}]})
      ),
      # Stuck since: never finished (an image that cannot be pulled, a missing secret).
      pod_json("stuck-1", "Pending", @long_ago),
      pod_json("runs-1", "Running", @long_ago),
      # Younger than its boot timeout: a boot of another VM of this parent, maybe.
      pod_json("young-1", "Pending", young)
    ]

    secrets = [
      object_json("done-1", @long_ago),
      # Its pod was never created (the parent VM died in between), or is gone.
      object_json("orphan-1", @long_ago),
      object_json("young-1", young)
    ]

    sweep!(sweep_server!(pods, secrets, ["/api/v1/namespaces/sweep-ns/pods/runs-1"]))

    assert Enum.sort(sent_deletes()) ==
             Enum.sort([
               "pods/done-1",
               "secrets/done-1",
               "pods/stuck-1",
               "pods/runs-1",
               "secrets/orphan-1"
             ])

    events =
      for {:cleanup, %{duration: d, attempts: 1}, meta} <-
            Process.info(self(), :messages) |> elem(1),
          is_integer(d) and d >= 0,
          meta.deleter == :sweep and meta.trigger == :orphaned,
          do: {meta.kind, meta.name, meta.result}

    assert Enum.sort(events) ==
             Enum.sort([
               {:pod, "done-1", :ok},
               {:secret, "done-1", :ok},
               {:pod, "stuck-1", :ok},
               {:pod, "runs-1", {:error, {:api, 403, "Forbidden", "no"}}},
               {:secret, "orphan-1", :ok}
             ])
  end

  test "run/4 never deletes what a live reaper of this VM tracks, however old" do
    url =
      sweep_server!([pod_json("booted-1", "Succeeded", @long_ago)], [
        object_json("booted-1", @long_ago)
      ])

    {:ok, kube} = Kube.connect(url: url, token: "t")
    tracked!(kube, "booted-1")

    sweep!(url)

    assert sent_deletes() == []
  end

  test "run/4: a finished pod older than a boot timeout goes, with its secret however young" do
    ago = &DateTime.to_iso8601(DateTime.add(DateTime.utc_now(), -&1, :second))
    own_secret = ~s({"name":"app","envFrom":[{"secretRef":{"name":"ended-1"}}]})
    pods = [pod_json("ended-1", "Succeeded", ago.(40), own_secret)]
    secrets = [object_json("ended-1", ago.(41)), object_json("young-2", ago.(41))]

    sweep!(sweep_server!(pods, secrets))

    assert Enum.sort(sent_deletes()) == ["pods/ended-1", "secrets/ended-1"]
  end

  test "run/4 without list on secrets: a swept pod's own secret still goes" do
    pods = [
      pod_json(
        "done-2",
        "Failed",
        @long_ago,
        ~s({"name":"app","envFrom":[{"secretRef":{"name":"done-2"}}]})
      ),
      # Its cookie comes from the parent's Secret: no secret of its own to delete.
      pod_json("done-3", "Failed", @long_ago, ~s({"name":"app"}))
    ]

    sweep!(sweep_server!(pods, :forbidden))

    assert Enum.sort(sent_deletes()) == ["pods/done-2", "pods/done-3", "secrets/done-2"]
  end

  test "run/4 never fails a boot, not even when the API server is unreachable" do
    {:ok, kube} = Kube.connect(url: "https://127.0.0.1:1", token: "t", request_timeout: 2_000)

    parent = %{
      "metadata" => %{"name" => "web-1", "uid" => "sweep-test-#{System.unique_integer()}"}
    }

    assert Sweep.run(kube, "prod", parent, Options.validate!([])) == :ok
  end
end
