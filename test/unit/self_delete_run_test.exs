defmodule FLAMEK8sBackend.SelfDeleteRunTest do
  # SelfDelete.run/0 runs in FLAME's terminator (system_shutdown/0 is called there), a process
  # that traps exits and crashes on any message it does not expect. A crash there restarts the
  # terminator, which then stops the system again: the runner deleted its pod twice.
  use ExUnit.Case, async: false

  @moduletag :unit

  alias FLAMEK8sBackend.SelfDelete
  alias FLAMEK8sBackend.Test.ProbeBackend

  test "run/0 links nothing to its caller, and what it started is gone when it returns" do
    Process.flag(:trap_exit, true)
    # What this process spawns and links to, told to a tracer (a process is not its own).
    tracer = spawn(fn -> collect_traces([]) end)
    :erlang.trace(self(), true, [:procs, {:tracer, tracer}])
    :ok = SelfDelete.run()
    :erlang.trace(self(), false, [:procs])
    delivered = :erlang.trace_delivered(self())
    assert_receive {:trace_delivered, _, ^delivered}
    send(tracer, {:traces, self()})
    assert_receive {:traces, traces}

    assert [_worker] = spawned = for({:trace, _, :spawn, pid, _} <- traces, do: pid)
    assert for({:trace, _, :link, pid} <- traces, do: pid) == []
    refute Enum.any?(spawned, &Process.alive?/1)
    refute_received {:EXIT, _, _}
    refute_received {:DOWN, _, _, _, _}
  end

  test "in FLAME's terminator: system_shutdown/0 once, and the terminator does not crash" do
    Process.register(self(), :flame_probe)
    ProbeBackend.on_shutdown(&SelfDelete.run/0)
    on_exit(fn -> ProbeBackend.on_shutdown(nil) end)

    name = :"Elixir.SelfDeleteRunTest.Terminator#{System.unique_integer([:positive])}"
    parent = FLAME.Parent.new(make_ref(), self(), ProbeBackend, "nonode", nil)
    start_supervised!({FLAME.Terminator, name: name, parent: parent})
    assert_receive {_ref, {:remote_up, terminator}}
    monitor = Process.monitor(terminator)

    :ok = FLAME.Terminator.schedule_idle_shutdown(terminator, 0, fn -> true end, false)
    assert_receive {ProbeBackend, {:system_shutdown, ^terminator}}

    :ok = stop_supervised({FLAME.Terminator.Supervisor, name})
    assert_receive {:DOWN, ^monitor, :process, ^terminator, :shutdown}
    # No crash, so no terminator started again to stop the system a second time.
    refute_received {_ref, {:remote_up, _}}
    refute_received {ProbeBackend, {:system_shutdown, _}}
  end

  defp collect_traces(traces) do
    receive do
      {:traces, to} -> send(to, {:traces, Enum.reverse(traces)})
      trace -> collect_traces([trace | traces])
    end
  end
end
