defmodule FLAMEK8sBackend.Test.RealNodeTally do
  @moduledoc """
  An ExUnit formatter that ends the run with one line counting the real-node scenarios (tests
  tagged `:real_node`) by outcome, so that a CI log shows they ran, not only that nothing failed.
  """
  use GenServer

  @impl true
  def init(_opts), do: {:ok, %{}}

  @impl true
  def handle_cast({:test_finished, %ExUnit.Test{tags: %{real_node: true}} = test}, tally),
    do: {:noreply, Map.update(tally, outcome(test.state), 1, &(&1 + 1))}

  def handle_cast({:suite_finished, _times}, tally) do
    IO.puts(line(tally))
    {:noreply, tally}
  end

  def handle_cast(_event, tally), do: {:noreply, tally}

  @doc """
  The line for a tally of outcomes.

      iex> FLAMEK8sBackend.Test.RealNodeTally.line(%{passed: 23, failed: 1})
      "real node: 24 scenarios, 23 passed, 1 failed, 0 skipped or excluded"
  """
  def line(tally) do
    [passed, failed, skipped] = for k <- [:passed, :failed, :skipped], do: Map.get(tally, k, 0)

    "real node: #{passed + failed + skipped} scenarios, #{passed} passed, #{failed} failed, " <>
      "#{skipped} skipped or excluded"
  end

  defp outcome(nil), do: :passed
  defp outcome({:failed, _}), do: :failed
  defp outcome({:invalid, _}), do: :failed
  defp outcome(_skipped_or_excluded), do: :skipped
end
