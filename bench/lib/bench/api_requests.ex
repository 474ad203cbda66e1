defmodule Bench.ApiRequests do
  @moduledoc """
  The API-request counter: counts requests where they arrive, in the API server's own
  `apiserver_request_total` (its /metrics), not in the client. A snapshot sums the counter by
  `{verb, resource, subresource, code}` (code `""` for every 2xx; pod requests across all
  namespaces have the resource `"pods (all namespaces)"`). Non-resource requests
  (resource `""`, such as the bench's own GET /metrics) are left out, so reading the counter does
  not count.
  """

  alias FLAMEK8sBackend.Kube

  @all_pods "pods (all namespaces)"

  @type key :: {verb :: String.t(), resource :: String.t(), subresource :: String.t(), String.t()}
  @type counts :: %{key() => number()}

  @spec snapshot(Kube.t()) :: counts()
  def snapshot(kube), do: kube |> Bench.ApiServerMetrics.fetch() |> from_text()

  @doc "The counts in a /metrics text already read (`Bench.ApiServerMetrics.fetch/1`)."
  @spec from_text(String.t()) :: counts()
  def from_text(text) do
    text
    |> String.split("\n")
    |> Enum.filter(&String.starts_with?(&1, "apiserver_request_total{"))
    |> Enum.reduce(%{}, fn line, acc ->
      {labels, count} = parse(line)
      code = labels["code"] || ""
      code = if String.starts_with?(code, "2"), do: "", else: code
      key = {labels["verb"], resource(labels), labels["subresource"] || "", code}

      if labels["resource"] in [nil, ""],
        do: acc,
        else: Map.update(acc, key, count, &(&1 + count))
    end)
  end

  @doc "What was counted between two snapshots (keys that did not change are left out)."
  def diff(after_snap, before_snap) do
    after_snap
    |> Enum.map(fn {key, count} -> {key, round(count - Map.get(before_snap, key, 0))} end)
    |> Enum.reject(fn {_key, d} -> d == 0 end)
    |> Map.new()
  end

  @doc "Requests of `verb` on `resource` (any subresource, any code)."
  def count(counts, verb, resource) do
    for({{^verb, ^resource, _, _}, n} <- counts, do: n) |> Enum.sum()
  end

  @doc "Reads of pods: GET, LIST and WATCH (a WATCH is counted when it ends)."
  def pod_reads(counts) do
    for({{verb, "pods", "", _}, n} <- counts, verb in ~w(GET LIST WATCH), do: n) |> Enum.sum()
  end

  @doc """
  Waits until the server has counted at least `at_least` requests of `verb` on `resource`;
  returns the last count.
  """
  def await_count(kube, verb, resource, at_least, deadline_ms) do
    n = kube |> snapshot() |> count(verb, resource)

    if n >= at_least or System.monotonic_time(:millisecond) > deadline_ms do
      n
    else
      Process.sleep(100)
      await_count(kube, verb, resource, at_least, deadline_ms)
    end
  end

  # Pod requests across all namespaces are the simulated kubelet's informer (its LIST and
  # WATCH, again after the server closed its watch during a burst); the backend's and the
  # bench's are all in one namespace.
  defp resource(%{"resource" => "pods", "scope" => "cluster"}), do: @all_pods
  defp resource(labels), do: labels["resource"]

  defp parse(line) do
    [labels, value] =
      Regex.run(~r/^apiserver_request_total\{(.*)\} (\S+)$/, line, capture: :all_but_first)

    labels =
      Map.new(Regex.scan(~r/(\w+)="([^"]*)"/, labels, capture: :all_but_first), &List.to_tuple/1)

    {count, _} = Float.parse(value)
    {labels, count}
  end
end
