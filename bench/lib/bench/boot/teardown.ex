defmodule Bench.Boot.Teardown do
  @moduledoc """
  Ends runners as FLAME's Runner ends: kills their boot processes. The backend's reaper then
  deletes each pod and secret (and the runner VM, seeing its parent process gone, stops); the
  polling variant has no reaper, so the bench sends the same deletes for it. Returns once the
  kubelet logged every pod gone and the API server counted every secret's DELETE, so that the
  next boot, or the next count of requests, starts clean.
  """

  alias Bench.{ApiRequests, Concurrent, Incidents, KubeletLog}
  alias FLAMEK8sBackend.Kube

  @doc "Returns the keys of the pods not gone by the timeout."
  def run(kube, results, timeout_ms \\ 90_000) do
    run(kube, kube, results, timeout_ms, &KubeletLog.await_all(&1, :gone, &2))
  end

  @doc """
  On the real node: the same, with the pods' removal from the API seen by listing them (no
  simulated kubelet's log to read); `client` sends the deletes the polling variant's reaper
  would (`kube` reads the API server's metrics and lists).
  """
  def run_real(kube, client, namespace, results, timeout_ms) do
    run(kube, client, results, timeout_ms, &await_removed(kube, namespace, &1, &2))
  end

  defp run(kube, client, results, timeout_ms, await_gone) do
    deadline = System.monotonic_time(:millisecond) + timeout_ms
    secret_deletes = kube |> ApiRequests.snapshot() |> ApiRequests.count("DELETE", "secrets")
    Enum.each(results, &Process.exit(&1.pid, :kill))
    polled = for %{strategy: :poll, key: _} = result <- results, do: result
    Concurrent.map(polled, &delete_like_the_reaper(client, &1), timeout_ms)
    keys = for %{key: key} <- results, do: key
    missing = await_gone.(keys, max(remaining(deadline), 1000))

    await_secret_deletes(
      kube,
      secret_deletes + Enum.count(results, &secret_delete_due?/1),
      deadline
    )

    missing
  end

  # Only runners that have a secret of their own. A backend boot that failed was cleaned up
  # before it returned; one that booted is reaped now.
  defp secret_delete_due?(%{secret: false}), do: false

  defp secret_delete_due?(%{strategy: :watch, key: _} = result),
    do: not Map.has_key?(result, :error)

  defp secret_delete_due?(%{strategy: :poll, key: _}), do: true
  defp secret_delete_due?(_), do: false

  # As the reaper: a runner that booted gets its pod's grace period, one that did not gets none.
  defp delete_like_the_reaper(kube, %{key: key} = result) do
    [ns, name] = String.split(key, "/", parts: 2)
    grace = if Map.has_key?(result, :error), do: [grace_period: 0], else: []
    report_failed_delete(key, "pod", Kube.delete_pod(kube, ns, name, grace))

    if result[:secret] != false,
      do: report_failed_delete(key, "secret", Kube.delete_secret(kube, ns, name))
  end

  defp report_failed_delete(_key, _kind, :ok), do: :ok

  defp report_failed_delete(key, kind, {:error, reason}),
    do: Incidents.record("bench could not delete runner #{kind} #{key}: #{inspect(reason)}")

  defp await_secret_deletes(kube, expected, deadline) do
    counted = ApiRequests.await_count(kube, "DELETE", "secrets", expected, deadline)

    if counted < expected do
      Incidents.record(
        "teardown: the API server counted #{expected - counted} runner secret DELETE(s) fewer than expected"
      )
    end
  end

  defp remaining(deadline), do: deadline - System.monotonic_time(:millisecond)

  # The keys ("namespace/pod") still listed after `timeout_ms` (checked every 200 ms).
  defp await_removed(kube, namespace, keys, timeout_ms) do
    deadline = System.monotonic_time(:millisecond) + timeout_ms

    Stream.repeatedly(fn ->
      {:ok, pods} = Kube.list_pods(kube, namespace)
      listed = MapSet.new(pods, &"#{namespace}/#{&1["metadata"]["name"]}")
      Enum.filter(keys, &MapSet.member?(listed, &1))
    end)
    |> Enum.reduce_while(keys, fn missing, _ ->
      if missing == [] or remaining(deadline) <= 0,
        do: {:halt, missing},
        else: Process.sleep(200) && {:cont, missing}
    end)
  end
end
