defmodule FLAMEK8sBackend.SingleFlight do
  @moduledoc false
  # One run of a function per key at a time, for the whole VM: concurrent callers with the same
  # key share the run under way and its result, whatever it is (an error, a raise). A caller
  # that comes once the run is over starts a new one, so nothing is kept here: callers keep
  # what they want to keep (ParentPod and SharedClient put a success in :persistent_term).
  #
  # The run happens in a process of its own, registered under the key, so that a caller that
  # dies takes nobody's answer with it. Callers that arrive while it runs ask it for the
  # result; one that asks just as it ends sees it go down and starts a new run.

  @registry FLAMEK8sBackend.SingleFlightRegistry

  @doc "Runs `fun` for `key`, or waits for the run of it under way; returns (or raises) its result."
  @spec run(term(), (-> result)) :: result when result: term()
  def run(key, fun) when is_function(fun, 0) do
    runner =
      case Registry.lookup(@registry, key) do
        [{pid, _}] -> pid
        [] -> start(key, fun)
      end

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

  defp unwrap({:ok, result}), do: result
  defp unwrap({:raised, kind, reason, stacktrace}), do: :erlang.raise(kind, reason, stacktrace)

  # Starts the run, or finds the one another caller started first.
  defp start(key, fun) do
    caller = self()
    ref = make_ref()

    {pid, monitor} =
      spawn_monitor(fn ->
        case Registry.register(@registry, key, nil) do
          {:ok, _} ->
            send(caller, {ref, self()})
            serve(key, fun)

          {:error, {:already_registered, other}} ->
            send(caller, {ref, other})
        end
      end)

    receive do
      {^ref, runner} ->
        Process.demonitor(monitor, [:flush])
        runner

      # It died before it could say (killed): whoever asks it next sees it down and retries.
      {:DOWN, ^monitor, :process, ^pid, _reason} ->
        pid
    end
  end

  defp serve(key, fun) do
    result =
      try do
        {:ok, fun.()}
      catch
        kind, reason -> {:raised, kind, reason, __STACKTRACE__}
      end

    answer_all(result)
    Registry.unregister(@registry, key)
    # Those that found it registered just before it left.
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
