defmodule Bench.RemoteUpTracer do
  @moduledoc """
  When the remote_up message reached a polling-variant boot process. That process reads its
  mailbox only after its poll saw the pod running, so it traces its own receives: the tracer
  keeps the arrival time (the VM's monotonic clock, shifted to wall-clock µs) of
  `{ref, {:remote_up, pid}}` by the receiving process.
  """

  @table :bench_remote_up

  def start do
    :ets.new(@table, [:named_table, :public, :set])
    pid = spawn(fn -> loop() end)
    :persistent_term.put({__MODULE__, :pid}, pid)
  end

  @doc "Called by the boot process itself before its pod is created."
  def trace_me do
    :erlang.trace(self(), true, [
      :receive,
      :monotonic_timestamp,
      {:tracer, :persistent_term.get({__MODULE__, :pid})}
    ])
  end

  @doc "When remote_up reached `pid` (wall-clock µs), or nil."
  def ts(pid) do
    case :ets.lookup(@table, pid) do
      [{_, ts}] -> ts
      [] -> nil
    end
  end

  defp loop do
    receive do
      {:trace_ts, pid, :receive, {ref, {:remote_up, _}}, ts} when is_reference(ref) ->
        wall = System.convert_time_unit(ts + System.time_offset(), :native, :microsecond)
        :ets.insert_new(@table, {pid, wall})
        loop()

      _ ->
        loop()
    end
  end
end
