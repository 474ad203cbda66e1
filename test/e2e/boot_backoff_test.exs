defmodule FLAMEK8sBackend.BootBackoffE2ETest do
  # Boots of a pool whose boots fail for a reason that does not fix itself within seconds back
  # off (FLAMEK8sBackend.BootBackoff): counted where the requests arrive, the API server's audit
  # log. Not async: the last test times 30 s of FLAME's retries, which a loaded machine would
  # stretch.
  use FLAMEK8sBackend.Test.ClusterCase, async: false

  @moduletag :e2e
  @moduletag timeout: 180_000

  alias FLAMEK8sBackend.{BootBackoff, BootError}
  alias FLAMEK8sBackend.Test.{AuditLog, RemoteFuns}

  setup :parent_setup

  @missing_image "registry.invalid/app:404"

  defp missing_image(opts) do
    container = %{"name" => "app", "image" => @missing_image}
    Keyword.put(opts, :manifest, %{"spec" => %{"containers" => [container]}})
  end

  # One boot as FLAME makes it (a fresh init/1 for each runner), timed.
  defp boot(opts) do
    {:ok, state} = FLAMEK8sBackend.init(opts)
    started = System.monotonic_time(:millisecond)
    result = FLAMEK8sBackend.remote_boot(state)
    {result, System.monotonic_time(:millisecond) - started, state}
  end

  defp boot_error(opts) do
    {{:error, %BootError{} = error}, ms, _state} = boot(opts)
    {error, ms}
  end

  # The backend's requests in `ns` (the simulated kubelet's left out).
  defp requests(ns) do
    %{"namespace" => ns}
    |> LocalCluster.audit_events()
    |> Enum.reject(&(&1["user_agent"] == "localkube"))
  end

  defp since(events, before) do
    seen = MapSet.new(before, & &1["audit_id"])
    Enum.reject(events, &MapSet.member?(seen, &1["audit_id"]))
  end

  # A request is logged as it completes: wait until every pod created since `before` has had
  # its DELETE logged, then count.
  defp settled_counts(ns, before) do
    eventually(
      fn ->
        counts = ns |> requests() |> since(before) |> AuditLog.count_requests()
        Map.get(counts, {"delete", "pods", ""}, 0) >= Map.get(counts, {"create", "pods", ""}, 0)
      end,
      30_000
    )

    ns |> requests() |> since(before) |> AuditLog.count_requests()
  end

  defp window_over(error_opts) do
    {:ok, state} = FLAMEK8sBackend.init(error_opts)
    # Waits out the window (2 s after a first failure) by asking the table, not by sleeping.
    eventually(fn -> BootBackoff.check(state.backoff_key) == :boot end, 10_000)
  end

  test "a missing image: one pod, and the boots after it come back cached at once", %{
    kube: kube,
    namespace: ns,
    opts: opts
  } do
    opts = missing_image(opts)
    # The first init of a parent reads its pod and sweeps: not a boot's requests.
    {:ok, _} = FLAMEK8sBackend.init(opts)
    before = requests(ns)

    {first, _ms} = boot_error(opts)
    assert %BootError{phase: :container_start, reason: {:image_pull, _}, cached: nil} = first

    for _ <- 1..5 do
      {error, ms} = boot_error(opts)
      assert %{failures: 1, age_ms: age, retry_in_ms: retry_in} = error.cached
      assert {error.phase, error.reason, error.pod} == {first.phase, first.reason, first.pod}
      assert age + retry_in == BootBackoff.window_ms(1)
      assert ms < 500
      assert Exception.message(error) =~ "not retried: the same failure"
    end

    counts = settled_counts(ns, before)
    # One boot's worth: the runner's secret and pod, created and deleted once, and its watch.
    assert counts[{"create", "pods", ""}] == 1
    assert counts[{"create", "secrets", ""}] == 1
    assert counts[{"delete", "pods", ""}] == 1

    assert Map.keys(counts) -- [{"list", "pods", ""}, {"watch", "pods", ""}] ==
             [
               {"create", "pods", ""},
               {"create", "secrets", ""},
               {"delete", "pods", ""},
               {"delete", "secrets", ""}
             ]

    # After the window, a real boot again: it fails again, and the window doubles.
    window_over(opts)
    {again, _ms} = boot_error(opts)
    assert again.cached == nil
    assert again.pod != first.pod
    {error, _ms} = boot_error(opts)
    assert %{failures: 2, retry_in_ms: retry_in} = error.cached
    assert retry_in > BootBackoff.window_ms(1)
    assert runner_pods(kube, ns) == []
  end

  test "other options boot at once, and a success ends the back-off", %{opts: opts} do
    # One pool's options throughout (the same function, the same key) whose runner pod has
    # the missing image until the test says it is there.
    image = start_supervised!({Agent, fn -> @missing_image end})

    manifest = fn parent, _app ->
      case Agent.get(image, & &1) do
        :parent_image ->
          parent

        missing ->
          update_in(parent, ["spec", "containers"], fn containers ->
            Enum.map(containers, &Map.put(&1, "image", missing))
          end)
      end
    end

    opts = Keyword.put(opts, :manifest, manifest)
    {first, _ms} = boot_error(opts)
    assert %BootError{reason: {:image_pull, _}, cached: nil} = first
    assert {%BootError{cached: %{failures: 1}}, _ms} = boot_error(opts)

    # Other options are another pool: its first boot is a real one.
    {other, _ms} = boot_error(Keyword.put(opts, :env, %{"OTHER" => "1"}))
    assert other.cached == nil and other.pod != first.pod

    # The image is pushed: after the window the next boot succeeds and forgets the failures.
    Agent.update(image, fn _ -> :parent_image end)
    window_over(opts)
    assert {{:ok, _terminator, booted}, _ms, state} = boot(opts)
    assert booted.runner_node_name != nil
    assert BootBackoff.check(state.backoff_key) == :boot

    # The image goes missing again: a real boot, and a first window (not a third).
    Agent.update(image, fn _ -> @missing_image end)
    assert {%BootError{cached: nil}, _ms} = boot_error(opts)
    assert {%BootError{cached: %{failures: 1}}, _ms} = boot_error(opts)
  end

  test "a container that crashed is not cached: each boot is a real one", %{
    namespace: ns,
    opts: opts
  } do
    labels = %{"sim-kubelet/fail" => "crash", "sim-kubelet/exit-code" => "7"}
    opts = Keyword.put(opts, :manifest, %{"metadata" => %{"labels" => labels}})
    {:ok, _} = FLAMEK8sBackend.init(opts)
    before = requests(ns)

    errors = for _ <- 1..3, do: elem(boot_error(opts), 0)

    for error <- errors do
      assert %BootError{reason: {:container_exited, %{exit_code: 7}}, cached: nil} = error
    end

    assert errors |> Enum.map(& &1.pod) |> Enum.uniq() |> length() == 3
    assert settled_counts(ns, before)[{"create", "pods", ""}] == 3
  end

  # FLAME's pool retries a failed boot about a second after it while callers wait: what one
  # caller's 30 s wait for a runner costs on a pool whose image is missing.
  # FLAME logs each failed boot task at :error: captured, not printed.
  @tag capture_log: true
  test "a 30 s FLAME.call on a missing-image pool: pods created and API requests", %{
    namespace: ns,
    opts: opts
  } do
    opts = missing_image(opts)
    {:ok, _} = FLAMEK8sBackend.init(opts)
    test = self()
    id = {__MODULE__, make_ref()}

    :ok =
      :telemetry.attach(
        id,
        [:flame_k8s_backend, :boot, :exception],
        fn _event, _measurements, metadata, _ ->
          send(test, {:boot_failed, Map.get(metadata, :cached, false)})
        end,
        nil
      )

    on_exit(fn -> :telemetry.detach(id) end)
    pool = start_pool!(opts)
    before = requests(ns)

    assert {:timeout, _} = catch_exit(FLAME.call(pool, &RemoteFuns.whereami/0, timeout: 30_000))
    stop_supervised!(pool)
    counts = settled_counts(ns, before)
    pods = Map.get(counts, {"create", "pods", ""}, 0)
    requests = counts |> Map.values() |> Enum.sum()
    failed = collect_failures(%{true => 0, false => 0})

    IO.puts(
      "\nboot back-off: #{pods} pods created, #{requests} API requests, " <>
        "#{failed[false]} failed boots and #{failed[true]} cached ones in a 30 s FLAME.call " <>
        "on a missing-image pool"
    )

    # Without back-off a boot every 1-2 s: about 15 pods. With it, boots at about 0, 3, 7
    # and 15 s (windows of 2, 4 and 8 s after failures of about 1 s), then 30 s from the 4th.
    assert pods in 2..6
    assert failed[true] > failed[false]
  end

  defp collect_failures(acc) do
    receive do
      {:boot_failed, cached?} -> collect_failures(Map.update!(acc, cached?, &(&1 + 1)))
    after
      0 -> acc
    end
  end
end
