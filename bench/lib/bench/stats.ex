defmodule Bench.Stats do
  @moduledoc "Summaries of samples; each is `nil` for no samples."

  @doc "Nearest-rank percentile `p` (0..100)."
  def pct([], _p), do: nil

  def pct(values, p) do
    sorted = Enum.sort(values)
    n = length(sorted)
    idx = max(ceil(p / 100 * n) - 1, 0)
    Enum.at(sorted, min(idx, n - 1))
  end

  def mean([]), do: nil
  def mean(values), do: Enum.sum(values) / length(values)

  def max(values), do: Enum.max(values, fn -> nil end)
  def min(values), do: Enum.min(values, fn -> nil end)
end
