defmodule FLAMEK8sBackend.RequestsPerBootE2ETest do
  # The API requests a boot costs, counted where they arrive: the API server's
  # apiserver_request_total (its /metrics; reading it is not a resource request, so it does not
  # count). Not async: the counter is the whole server's, and no other test may send requests
  # while one is measured.
  #
  # The simulated kubelet mounts no service account token, so here a runner never sends its
  # own DELETE (FLAMEK8sBackend.SelfDelete skips without one) and the parent's reaper sends
  # the one DELETE of each boot. What a runner does at shutdown shows in its own log instead:
  # a crash of FLAME's terminator there (e.g. on a stray message left by system_shutdown/0)
  # makes FLAME start a new one, which stops the system a second time (on a real node, a
  # second DELETE of the runner's pod), so a crash report in a runner's log fails these tests.
  # test/e2e/real_node_test.exs counts a runner's own DELETEs from the real node's audit log.
  use FLAMEK8sBackend.Test.ClusterCase, async: false

  @moduletag :e2e
  @moduletag timeout: 180_000

  alias FLAMEK8sBackend.Test.RemoteFuns

  @boots 3

  # The parent as in examples/kubernetes/deployment.yaml: RELEASE_COOKIE from a Secret, and
  # the VM runs with that cookie.
  defp documented_parent!(kube, ns) do
    cookie = LocalCluster.create_documented_parent!(kube, ns)
    previous = System.get_env("RELEASE_COOKIE")
    System.put_env("RELEASE_COOKIE", cookie)

    ExUnit.Callbacks.on_exit(fn ->
      if previous,
        do: System.put_env("RELEASE_COOKIE", previous),
        else: System.delete_env("RELEASE_COOKIE")
    end)
  end

  defp opts(ns) do
    [parent_pod: {ns, "parent"}, kubeconfig: LocalCluster.info().kubeconfig, boot_timeout: 30_000]
  end

  # `{verb, resource, subresource} => count`, summed over response codes.
  defp snapshot(kube) do
    {:ok, text} = Kube.request(kube, "GET", "/metrics")

    for "apiserver_request_total{" <> rest <- String.split(text, "\n"),
        [labels, value] = String.split(rest, "} ", parts: 2),
        labels =
          Map.new(
            Regex.scan(~r/(\w+)="([^"]*)"/, labels, capture: :all_but_first),
            &List.to_tuple/1
          ),
        labels["resource"] not in [nil, ""],
        reduce: %{} do
      acc ->
        {count, _} = Float.parse(value)
        key = {labels["verb"], labels["resource"], labels["subresource"] || ""}
        Map.update(acc, key, count, &(&1 + count))
    end
  end

  defp diff(after_snap, before_snap) do
    for {key, n} <- after_snap, d = round(n - Map.get(before_snap, key, 0)), d != 0, into: %{} do
      {key, d}
    end
  end

  # The simulated kubelet ends each graceful deletion with a DELETE of its own: counted from
  # its log, as the metrics cannot tell it from the backend's.
  defp kubelet_final_deletes(ns) do
    Enum.count(LocalCluster.kubelet_log(ns), &(&1 =~ "finished: deleted with grace period 0"))
  end

  # What a runner's VM logged at error level (a crash report), from its container's log.
  defp runner_errors(ns, pod) do
    log = Path.join([LocalCluster.info().state_dir, "pods", "#{ns}_#{pod}", "app.log"])

    log
    |> File.read!()
    |> String.split(~r/\n(?=\n|\d\d:\d\d:\d\d\.\d+ \[)/)
    |> Enum.filter(&(&1 =~ "[error]"))
  end

  # Boots `@boots` runners one after the other through a pool, each ended by its idle
  # shutdown; returns the requests the server counted, the kubelet's own left out, and what
  # each runner logged at error level.
  defp measure_boots(kube, ns) do
    # The first init reads the parent pod and sweeps: once per VM and per minute, not per boot.
    {:ok, _} = FLAMEK8sBackend.init(opts(ns))
    pool = start_pool!(opts(ns), idle_shutdown_after: 200)
    before = snapshot(kube)

    errors =
      for _ <- 1..@boots do
        info = FLAME.call(pool, &RemoteFuns.whereami/0)
        Node.monitor(info.node, true)
        assert_receive {:nodedown, _}, 30_000
        # Waiting on the kubelet's log sends no request.
        eventually(
          fn ->
            Enum.any?(
              LocalCluster.kubelet_log(ns),
              &(&1 =~ "#{info.pod_name}: removed from the API")
            )
          end,
          30_000
        )

        {info.pod_name, runner_errors(ns, info.pod_name)}
      end

    finals = kubelet_final_deletes(ns)
    # A request is counted as it completes: wait until the last DELETEs are.
    eventually(fn ->
      Map.get(diff(snapshot(kube), before), {"DELETE", "pods", ""}, 0) >= @boots + finals
    end)

    counted = diff(snapshot(kube), before)

    counted =
      Map.update(counted, {"DELETE", "pods", ""}, 0, &(&1 - finals))
      |> Map.reject(fn {{_verb, resource, sub}, n} ->
        n == 0 or resource not in ["pods", "secrets"] or sub in ["status", "binding"]
      end)
      |> Map.reject(fn {{verb, resource, _}, _} -> verb == "GET" and resource == "secrets" end)

    {counted, Enum.reject(errors, &match?({_pod, []}, &1))}
  end

  defp report(title, counted) do
    rows =
      Enum.map_join(Enum.sort(counted), "\n", fn {{v, r, s}, n} ->
        "  #{v} #{r}#{if s != "", do: "/" <> s} #{n / @boots}"
      end)

    IO.puts("\n#{title}: requests per boot (backend; the simulated kubelet's left out)\n#{rows}")
  end

  test "documented setup (cookie from a Secret): a boot is POST pod + DELETE pod and the watch",
       %{
         kube: kube,
         namespace: ns
       } do
    documented_parent!(kube, ns)
    {counted, runner_errors} = measure_boots(kube, ns)
    report("cookie from a Secret", counted)
    # Each runner shut down without a crash (FLAME's terminator calls system_shutdown/0 once).
    assert runner_errors == []

    assert counted[{"POST", "pods", ""}] == @boots
    assert counted[{"DELETE", "pods", ""}] == @boots
    # No parent pod read, no secret, no sweep.
    refute Map.has_key?(counted, {"GET", "pods", ""})
    refute Map.has_key?(counted, {"POST", "secrets", ""})
    refute Map.has_key?(counted, {"DELETE", "secrets", ""})
    # What is left is the shared watch's own LIST and WATCH.
    assert Map.keys(counted) --
             [
               {"POST", "pods", ""},
               {"DELETE", "pods", ""},
               {"LIST", "pods", ""},
               {"WATCH", "pods", ""}
             ] == []

    # Nothing leaked, and the parent's Secret is still there.
    assert runner_pods(kube, ns) == []
    {:ok, %{"items" => secrets}} = Kube.request(kube, "GET", "/api/v1/namespaces/#{ns}/secrets")
    assert Enum.map(secrets, & &1["metadata"]["name"]) == ["parent-cookie"]
  end

  test "a plain cookie: the runner secret adds its POST and DELETE", %{kube: kube, namespace: ns} do
    LocalCluster.create_parent_pod!(kube, ns)
    {counted, runner_errors} = measure_boots(kube, ns)
    report("plain cookie", counted)
    assert runner_errors == []

    assert counted[{"POST", "pods", ""}] == @boots
    assert counted[{"DELETE", "pods", ""}] == @boots
    assert counted[{"POST", "secrets", ""}] == @boots
    assert counted[{"DELETE", "secrets", ""}] == @boots
    refute Map.has_key?(counted, {"GET", "pods", ""})

    assert runner_pods(kube, ns) == []
    {:ok, %{"items" => secrets}} = Kube.request(kube, "GET", "/api/v1/namespaces/#{ns}/secrets")
    assert secrets == []
  end
end
