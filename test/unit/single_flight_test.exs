defmodule FLAMEK8sBackend.SingleFlightTest do
  use ExUnit.Case, async: true

  @moduletag :unit

  import FLAMEK8sBackend.Test.ClusterCase, only: [eventually: 2]

  alias FLAMEK8sBackend.SingleFlight

  # A function that counts its runs in `counter` and returns `result`.
  defp counted(counter, result) do
    fn ->
      :counters.add(counter, 1, 1)
      result
    end
  end

  test "concurrent callers share one run and its result" do
    counter = :counters.new(1, [])
    key = {:test, System.unique_integer()}
    test = self()

    fun = fn ->
      send(test, :running)
      receive do: (:finish -> :ok)
      counted(counter, {:error, :nope}).()
    end

    first = Task.async(fn -> SingleFlight.run(key, fun) end)
    assert_receive :running
    [{runner, _}] = Registry.lookup(FLAMEK8sBackend.SingleFlightRegistry, key)
    others = for _ <- 1..4, do: Task.async(fn -> SingleFlight.run(key, fun) end)

    # The others wait on the run under way before it finishes.
    waiting = MapSet.new(others, & &1.pid)

    eventually(
      fn ->
        {:monitored_by, pids} = Process.info(runner, :monitored_by)
        MapSet.subset?(waiting, MapSet.new(pids))
      end,
      5_000
    )

    send(runner, :finish)

    assert Enum.map([first | others], &Task.await/1) == List.duplicate({:error, :nope}, 5)
    assert :counters.get(counter, 1) == 1
  end

  # A caller that got a result starts a new run: nothing is kept, an error least of all.
  test "a call after a run has answered runs again" do
    counter = :counters.new(1, [])
    key = {:test, System.unique_integer()}

    for _ <- 1..2_000, do: assert(SingleFlight.run(key, counted(counter, :error)) == :error)

    assert :counters.get(counter, 1) == 2_000
  end

  test "a raise reaches every caller, and the next call runs again" do
    key = {:test, System.unique_integer()}

    for _ <- 1..2 do
      assert_raise RuntimeError, "boom", fn -> SingleFlight.run(key, fn -> raise "boom" end) end
    end

    assert SingleFlight.run(key, fn -> :ok end) == :ok
  end
end
