defmodule Bench.Budget do
  @moduledoc """
  The run's time cap (`--max-seconds`). Sections ask `fits?/2` before they start, so that a run
  skips what would not fit rather than being cut off in the middle; a watchdog still stops the
  run at the cap in case an estimate was wrong.
  """

  alias Bench.Report

  @doc "Sets the deadline and starts the watchdog, which calls `on_cap` 5 s after it."
  def start(max_seconds, on_cap) do
    :persistent_term.put({__MODULE__, :deadline}, now_ms() + max_seconds * 1000)

    spawn(fn ->
      Process.sleep(max_seconds * 1000 + 5_000)
      on_cap.()
    end)
  end

  def remaining_s, do: div(:persistent_term.get({__MODULE__, :deadline}) - now_ms(), 1000)

  @doc "Whether `estimate_s` seconds are left; if not, the report says what was skipped."
  def fits?(what, estimate_s) do
    if remaining_s() >= estimate_s do
      true
    else
      Report.section(
        "### #{what}\n\nSkipped: about #{estimate_s} s needed, #{remaining_s()} s left of the time cap."
      )

      false
    end
  end

  defp now_ms, do: System.monotonic_time(:millisecond)
end
