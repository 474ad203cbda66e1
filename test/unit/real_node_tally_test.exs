defmodule FLAMEK8sBackend.Test.RealNodeTallyTest do
  use ExUnit.Case, async: true

  import ExUnit.CaptureIO

  alias FLAMEK8sBackend.Test.RealNodeTally

  @moduletag :unit

  doctest RealNodeTally

  test "counts the real-node tests by outcome, and only them, in one line at the end" do
    output =
      capture_io(fn ->
        # Started here, the formatter writes to capture_io's device.
        {:ok, pid} = GenServer.start_link(RealNodeTally, [])

        for {tags, state} <- [
              {%{real_node: true}, nil},
              {%{real_node: true}, nil},
              {%{real_node: true}, {:failed, []}},
              {%{real_node: true}, {:excluded, "FLAME_K8S_REAL_NODE=0"}},
              {%{real_node: true}, {:skipped, "no app image"}},
              {%{}, nil},
              {%{}, {:failed, []}}
            ] do
          GenServer.cast(pid, {:test_finished, %ExUnit.Test{tags: tags, state: state}})
        end

        GenServer.cast(pid, {:suite_finished, %{run: 0, async: 0, load: nil}})
        :sys.get_state(pid)
      end)

    assert output == "real node: 5 scenarios, 2 passed, 1 failed, 2 skipped or excluded\n"
  end
end
