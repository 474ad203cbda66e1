defmodule Bench.Clock do
  @moduledoc """
  Timestamps in µs. `wall/0` is CLOCK_REALTIME, the clock of the kubelet's log timestamps, so
  the two can be subtracted; `mono/0` for intervals within this VM.
  """

  def wall, do: System.os_time(:microsecond)
  def mono, do: System.monotonic_time(:microsecond)
end
