defmodule Bench.Boot do
  @moduledoc """
  Runner boots, each in a process of its own as FLAME's Runner boots them: the process boots,
  reports to the bench and waits; killing it ends the runner (`Bench.Boot.Teardown`).

  Strategies: `:watch`, the backend itself (`Bench.Boot.Backend`), and `:poll`, the bench's
  polling variant of it (`Bench.Boot.Polling`). A result is `%{strategy:, pid:, key:, runner:,
  t_init:, t_boot:, t_done:, t_created:, t_remote_up:, t_running_seen:}` (wall µs; the last two
  may be nil; the backend's boots add `runner_node:`) or `%{strategy:, pid:, error:}`, with `key:` ("namespace/pod") once the runner was
  named.
  """

  alias Bench.RemoteUpTracer

  @doc "Starts one boot; `kube` is the client the polling variant sends its requests with."
  def spawn(strategy, backend_opts, kube) do
    bench = self()

    Kernel.spawn(fn ->
      result =
        try do
          boot(strategy, backend_opts, kube)
        catch
          kind, reason -> %{error: {kind, reason}}
        end

      send(bench, {:booted, self(), Map.put(result, :strategy, strategy)})
      receive do: (:stop -> :ok)
    end)
  end

  @doc "The boots' results in the order of `pids`; a boot not done by the timeout is an error."
  def collect(pids, timeout_ms) do
    deadline = System.monotonic_time(:millisecond) + timeout_ms

    Enum.map(pids, fn pid ->
      receive do
        {:booted, ^pid, result} -> Map.put(result, :pid, pid)
      after
        max(deadline - System.monotonic_time(:millisecond), 0) ->
          %{pid: pid, error: :bench_timeout}
      end
    end)
  end

  @doc "When remote_up arrived: as the backend timed it, or (polling variant) as traced."
  def up_time(%{t_remote_up: up}) when is_integer(up), do: up
  def up_time(%{pid: pid}), do: RemoteUpTracer.ts(pid)
  def up_time(_), do: nil

  defp boot(:watch, opts, _kube), do: Bench.Boot.Backend.run(opts)
  defp boot(:poll, opts, kube), do: Bench.Boot.Polling.run(opts, kube)
end
