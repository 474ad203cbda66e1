defmodule Bench.ApiRequests.Attribution do
  @moduledoc """
  Who sent the requests the API server counted (`Bench.ApiRequests`): the simulated kubelet
  binds pods, patches their status, reads the secrets/configmaps its containers reference,
  ends graceful deletions and watches pods across all namespaces (re-watching when the server
  closes its watch during a burst); the backend (or, in the readiness series, the bench's wait strategy
  and its create/delete) sends the other pod and secret requests; nodes and leases (the
  kubelet's upkeep) and the API server's own reconcilers (endpoints of the `kubernetes`
  service, ...) are background, not the boots' doing.
  """

  @type sender :: :backend | :kubelet | :background

  @spec sender(Bench.ApiRequests.key()) :: sender()
  def sender({_verb, "pods", "final delete", _}), do: :kubelet
  def sender({_verb, "pods", "binding", _}), do: :kubelet
  def sender({_verb, "pods", "status", _}), do: :kubelet
  def sender({"GET", "secrets", _, _}), do: :kubelet
  def sender({"GET", "configmaps", _, _}), do: :kubelet
  def sender({_verb, "pods (all namespaces)", _, _}), do: :kubelet
  def sender({_verb, resource, _, _}) when resource in ["pods", "secrets"], do: :backend
  def sender(_), do: :background

  @doc "All requests of one sender."
  def total(counts, sender) do
    for({key, n} <- counts, sender(key) == sender, do: n) |> Enum.sum()
  end

  @doc """
  The simulated kubelet ends each graceful deletion with a DELETE of its own, which the metrics
  cannot tell from the backend's: moves `finals` (counted in the kubelet's log) from
  `DELETE pods` to a row of the kubelet's.
  """
  def split_final_deletes(counts, 0), do: counts

  def split_final_deletes(counts, finals) do
    # Successful DELETEs first: the kubelet's final DELETE is one.
    keys =
      counts
      |> Map.keys()
      |> Enum.filter(&match?({"DELETE", "pods", "", _}, &1))
      |> Enum.sort_by(fn {_, _, _, code} -> code != "" end)

    {counts, left} =
      Enum.reduce(keys, {counts, finals}, fn key, {counts, left} ->
        take = min(left, counts[key])
        {Map.update!(counts, key, &(&1 - take)), left - take}
      end)

    counts
    |> Map.reject(fn {_key, count} -> count == 0 end)
    |> Map.put({"DELETE", "pods", "final delete", ""}, finals - left)
  end

  @doc "A request row's name in the report."
  def label({"DELETE", "pods", "final delete", _}),
    do: "DELETE pods (the kubelet's, ending a graceful deletion)"

  def label({verb, res, sub, code}) do
    path = if sub == "", do: res, else: "#{res}/#{sub}"
    if code == "", do: "#{verb} #{path}", else: "#{verb} #{path} → #{code}"
  end
end
