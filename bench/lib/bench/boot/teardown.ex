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
    deadline = System.monotonic_time(:millisecond) + timeout_ms
    secret_deletes = kube |> ApiRequests.snapshot() |> ApiRequests.count("DELETE", "secrets")
    Enum.each(results, &Process.exit(&1.pid, :kill))
    polled = for %{strategy: :poll, key: _} = result <- results, do: result
    Concurrent.map(polled, &delete_like_the_reaper(kube, &1), timeout_ms)
    keys = for %{key: key} <- results, do: key
    missing = KubeletLog.await_all(keys, :gone, max(remaining(deadline), 1000))

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
end
