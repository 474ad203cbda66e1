defmodule FLAMEK8sBackend.SingleFlight do
  @moduledoc false
  # One run of a function per key at a time, for the whole VM: concurrent callers with the same
  # key share the run under way and its result, whatever it is (an error, a raise). A caller
  # that comes once the run has answered starts a new one, so nothing is kept here: callers
  # keep what they want to keep (ParentPod and SharedClient put a success in :persistent_term).
  #
  # The run happens in a process of its own, registered under the key, so that a caller that
  # dies takes nobody's answer with it. The caller that starts it is answered without asking;
  # callers that find it registered ask it for the result. It leaves the registry before it
  # answers anyone, so a caller that has its answer and calls again starts a new run; one that
  # asks just as it ends sees it go down and starts a new run itself.

  @registry FLAMEK8sBackend.SingleFlightRegistry

  @doc "Runs `fun` for `key`, or waits for the run of it under way; returns (or raises) its result."
  @spec run(term(), (-> result)) :: result when result: term()
  def run(key, fun) when is_function(fun, 0) do
    case Registry.lookup(@registry, key) do
      [{runner, _}] -> ask(runner, key, fun)
      [] -> start(key, fun)
    end
  end

  defp ask(runner, key, fun) do
    monitor = Process.monitor(runner)
    send(runner, {:ask, self(), monitor})

    receive do
      {^monitor, result} ->
        Process.demonitor(monitor, [:flush])
        unwrap(result)

      {:DOWN, ^monitor, :process, ^runner, _reason} ->
        run(key, fun)
    end
  end

  # Starts the run and waits for its answer, or asks the one another caller started first.
  defp start(key, fun) do
    caller = self()
    tag = make_ref()

    {pid, monitor} =
      spawn_monitor(fn ->
        case Registry.register(@registry, key, nil) do
          {:ok, _} -> serve(key, fun, {caller, tag})
          {:error, {:already_registered, other}} -> send(caller, {tag, {:other, other}})
        end
      end)

    receive do
      {^tag, {:other, other}} ->
        Process.demonitor(monitor, [:flush])
        ask(other, key, fun)

      {^tag, result} ->
        Process.demonitor(monitor, [:flush])
        unwrap(result)

      # Killed before it could answer: start again.
      {:DOWN, ^monitor, :process, ^pid, _reason} ->
        run(key, fun)
    end
  end

  defp unwrap({:ok, result}), do: result
  defp unwrap({:raised, kind, reason, stacktrace}), do: :erlang.raise(kind, reason, stacktrace)

  defp serve(key, fun, {starter, tag}) do
    result =
      try do
        {:ok, fun.()}
      catch
        kind, reason -> {:raised, kind, reason, __STACKTRACE__}
      end

    Registry.unregister(@registry, key)
    send(starter, {tag, result})
    # Those that asked while it ran, or found it registered just before it left.
    answer_all(result)
  end

  defp answer_all(result) do
    receive do
      {:ask, from, ref} ->
        send(from, {ref, result})
        answer_all(result)
    after
      0 -> :ok
    end
  end
end
