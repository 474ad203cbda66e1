defmodule FLAMEK8sBackend.RequestsPerBootE2ETest do
  # The API requests a boot costs, counted where they arrive: the API server's audit log, by
  # namespace and user. Not async: the shared watch and the sweep are the VM's, and another
  # test's boots would share them.
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

  alias FLAMEK8sBackend.Test.AuditLog

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

  # The backend's requests on pods and secrets in `ns` (the simulated kubelet's left out: it
  # ends each graceful deletion with a DELETE of its own), from the API server's audit log: the
  # server's metrics would also count what earlier tests' reapers still send elsewhere.
  defp requests(ns) do
    %{"namespace" => ns}
    |> LocalCluster.audit_events()
    |> Enum.reject(&(&1["user_agent"] == "localkube"))
  end

  defp since(events, before) do
    seen = MapSet.new(before, & &1["audit_id"])
    Enum.reject(events, &MapSet.member?(seen, &1["audit_id"]))
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
  # shutdown; returns the requests the backend sent for them and what each runner logged at
  # error level.
  defp measure_boots(ns) do
    # The first init reads the parent pod and sweeps: once per VM and per minute, not per boot.
    {:ok, _} = FLAMEK8sBackend.init(opts(ns))
    pool = start_pool!(opts(ns), idle_shutdown_after: short_idle_ms())
    before = requests(ns)

    errors =
      for _ <- 1..@boots do
        info = boot_until_idle_gone!(pool, ns)
        {info.pod_name, runner_errors(ns, info.pod_name)}
      end

    # A request is logged as it completes: wait until the last DELETEs (and the token
    # requests, sent once each runner is up) are.
    eventually(fn ->
      events = ns |> requests() |> since(before)

      Enum.count(events, &(&1["verb"] == "delete")) >= @boots and
        Enum.count(events, &(&1["resource"] == "serviceaccounts")) >= @boots
    end)

    counted =
      ns
      |> requests()
      |> since(before)
      |> AuditLog.count_requests()
      |> Map.reject(fn {{verb, resource, sub}, _n} ->
        sub in ["status", "binding"] or (verb == "get" and resource == "secrets")
      end)

    {counted, Enum.reject(errors, &match?({_pod, []}, &1))}
  end

  defp report(title, counted) do
    rows =
      Enum.map_join(Enum.sort(counted), "\n", fn {{v, r, s}, n} ->
        "  #{v} #{r}#{if s != "", do: "/" <> s} #{n / @boots}"
      end)

    IO.puts("\n#{title}: requests per boot (the backend's, from the audit log)\n#{rows}")
  end

  test "documented setup (cookie from a Secret): a boot is POST pod + DELETE pod and the watch, then the runner's token",
       %{
         kube: kube,
         namespace: ns
       } do
    documented_parent!(kube, ns)
    {counted, runner_errors} = measure_boots(ns)
    report("cookie from a Secret", counted)
    # Each runner shut down without a crash (FLAME's terminator calls system_shutdown/0 once).
    assert runner_errors == []

    assert counted[{"create", "pods", ""}] == @boots
    assert counted[{"delete", "pods", ""}] == @boots
    # Once the runner is up, off the boot's path: the token it deletes its pod with.
    assert counted[{"create", "serviceaccounts", "token"}] == @boots
    # No parent pod read, no secret, no sweep.
    refute Map.has_key?(counted, {"get", "pods", ""})
    refute Map.has_key?(counted, {"create", "secrets", ""})
    refute Map.has_key?(counted, {"delete", "secrets", ""})
    # What is left is the shared watch's own LIST and WATCH.
    assert Map.keys(counted) --
             [
               {"create", "pods", ""},
               {"delete", "pods", ""},
               {"create", "serviceaccounts", "token"},
               {"list", "pods", ""},
               {"watch", "pods", ""}
             ] == []

    # Nothing leaked, and the parent's Secret is still there.
    assert runner_pods(kube, ns) == []
    {:ok, %{"items" => secrets}} = Kube.request(kube, "GET", "/api/v1/namespaces/#{ns}/secrets")
    assert Enum.map(secrets, & &1["metadata"]["name"]) == ["parent-cookie"]
  end

  test "a plain cookie: the runner secret adds its POST and DELETE", %{kube: kube, namespace: ns} do
    LocalCluster.create_parent_pod!(kube, ns)
    {counted, runner_errors} = measure_boots(ns)
    report("plain cookie", counted)
    assert runner_errors == []

    assert counted[{"create", "pods", ""}] == @boots
    assert counted[{"delete", "pods", ""}] == @boots
    assert counted[{"create", "secrets", ""}] == @boots
    assert counted[{"delete", "secrets", ""}] == @boots
    refute Map.has_key?(counted, {"get", "pods", ""})

    assert runner_pods(kube, ns) == []
    {:ok, %{"items" => secrets}} = Kube.request(kube, "GET", "/api/v1/namespaces/#{ns}/secrets")
    assert secrets == []
  end
end
