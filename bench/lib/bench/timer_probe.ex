defmodule Bench.TimerProbe do
  @moduledoc """
  The timer-lateness probe: how long the parent VM keeps a ready process waiting. A process loops
  `erlang:send_after(1, self(), :tick)` and records (arrival - (sent + 1 ms)) in µs. Erlang
  timers have 1 ms resolution, so an idle VM shows up to ~1 ms; see the idle baseline.
  """

  alias Bench.Clock

  @doc "Runs `fun` with the probe running; returns `{result, wall µs, lateness samples}`."
  def during(fun) do
    probe = spawn(fn -> loop([]) end)
    t0 = Clock.mono()
    result = fun.()
    wall = Clock.mono() - t0
    {result, wall, stop(probe)}
  end

  defp stop(pid) do
    send(pid, {:stop, self()})

    receive do
      {:probe, ^pid, samples} -> samples
    after
      10_000 -> []
    end
  end

  defp loop(acc) do
    receive do
      {:stop, from} -> send(from, {:probe, self(), acc})
    after
      0 ->
        expected = Clock.mono() + 1000
        :erlang.send_after(1, self(), :tick)

        receive do
          :tick -> loop([Clock.mono() - expected | acc])
        end
    end
  end
end
