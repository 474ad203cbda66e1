defmodule Bench.ApiServerMetrics do
  @moduledoc """
  What the API server's own /metrics say besides the request counter (`Bench.ApiRequests`):
  the pod watches it is serving (`apiserver_longrunning_requests`, a gauge) and how long it
  took to answer requests (`apiserver_request_duration_seconds`, a histogram). Reading
  /metrics is a non-resource request, so it does not show up in the counts it reads.
  """

  alias FLAMEK8sBackend.Kube

  @type buckets :: %{(upper_bound_s :: float() | :inf) => count :: number()}

  @doc "The /metrics text (about 1.5 MB on the local control plane)."
  @spec fetch(Kube.t()) :: String.t()
  def fetch(kube) do
    {:ok, text} = Kube.request(kube, "GET", "/metrics")
    text
  end

  @doc "Pod WATCH requests the server is serving now, in any scope (the kubelet's included)."
  @spec pod_watches(String.t()) :: non_neg_integer()
  def pod_watches(text) do
    ~r/^apiserver_longrunning_requests\{([^}]*)\} (\S+)$/m
    |> Regex.scan(text, capture: :all_but_first)
    |> Enum.filter(fn [labels, _] ->
      String.contains?(labels, ~s(resource="pods")) and
        String.contains?(labels, ~s(verb="WATCH")) and
        String.contains?(labels, ~s(subresource=""))
    end)
    |> Enum.map(fn [_, value] -> value |> Float.parse() |> elem(0) |> round() end)
    |> Enum.sum()
  end

  @doc """
  The request-duration histogram of `verb` on `resource` (no subresource), summed over the
  other labels: cumulative counts by upper bound.
  """
  @spec durations(String.t(), String.t(), String.t()) :: buckets()
  def durations(text, verb, resource) do
    ~r/^apiserver_request_duration_seconds_bucket\{([^}]*)\} (\S+)$/m
    |> Regex.scan(text, capture: :all_but_first)
    |> Enum.reduce(%{}, fn [labels, value], acc ->
      if String.contains?(labels, ~s(verb="#{verb}")) and
           String.contains?(labels, ~s(resource="#{resource}")) and
           String.contains?(labels, ~s(subresource="")) do
        [le] = Regex.run(~r/le="([^"]+)"/, labels, capture: :all_but_first)
        {count, _} = Float.parse(value)
        Map.update(acc, bound(le), count, &(&1 + count))
      else
        acc
      end
    end)
  end

  @doc "The histogram of what happened between two readings."
  @spec diff(buckets(), buckets()) :: buckets()
  def diff(after_buckets, before_buckets),
    do: Map.new(after_buckets, fn {le, n} -> {le, n - Map.get(before_buckets, le, 0)} end)

  @doc "How many requests the histogram holds."
  @spec total(buckets()) :: number()
  def total(buckets), do: Map.get(buckets, :inf, 0)

  @doc """
  Quantile `q` (0..1) in µs, interpolated linearly within its bucket as Prometheus'
  `histogram_quantile` does; nil for an empty histogram. A quantile in the last (+Inf) bucket
  is the largest finite bound.
  """
  @spec quantile(buckets(), float()) :: number() | nil
  def quantile(buckets, q) do
    total = total(buckets)

    if total <= 0 do
      nil
    else
      finite = buckets |> Enum.reject(&(elem(&1, 0) == :inf)) |> Enum.sort()
      rank = q * total
      find(finite, rank, 0.0, 0)
    end
  end

  defp find([], _rank, prev_le, _prev_count), do: prev_le * 1_000_000

  defp find([{le, count} | rest], rank, prev_le, prev_count) do
    if count >= rank and count > prev_count do
      (prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)) * 1_000_000
    else
      find(rest, rank, le, count)
    end
  end

  defp bound("+Inf"), do: :inf

  defp bound(le) do
    {f, _} = Float.parse(le)
    f
  end
end
