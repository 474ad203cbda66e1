defmodule Bench.Sampler do
  @moduledoc """
  Samples during a burst, for its peaks: every 100 ms this VM's memory (`:erlang.memory(:total)`,
  the VM's own allocations) and the OS process's resident set (`VmRSS` in /proc/self/status:
  the VM plus the NIF's Rust heap and Tokio runtime, which live in the same process) and the
  pod watches the backend's client has open (`Kube.open_watches/1`); every second the pod
  watches the API server is serving (`Bench.ApiServerMetrics.pod_watches/1`, from a process of
  its own, since reading /metrics takes tens of ms).
  """

  alias Bench.ApiServerMetrics
  alias FLAMEK8sBackend.Kube

  @local_ms 100
  @server_ms 250

  @doc """
  `client`: the backend's connection; `kube`: the bench's, for /metrics. `counters`: nil or
  a `:counters` ref of the boots waiting for their pod (1) and in flight (2); each time the
  waiting ones first reach one of the `live_at` counts (ascending), the sampler also measures
  the live memory (`live/1`).
  """
  def start(client, kube, counters \\ nil, live_at \\ []) do
    %{
      local:
        spawn(fn ->
          Process.put(:live_at, live_at)
          loop(fn -> local(client, counters) end, @local_ms, [])
        end),
      server:
        spawn(fn ->
          loop(
            fn -> ApiServerMetrics.pod_watches(ApiServerMetrics.fetch(kube)) end,
            @server_ms,
            []
          )
        end)
    }
  end

  @doc "Stops both samplers: `%{local: [%{vm:, rss:, client_watches:}], server_watches: [n]}`."
  def stop(%{local: local, server: server}) do
    %{local: collect(local), server_watches: collect(server)}
  end

  @doc "The memory figures now: `%{vm: bytes, rss: bytes}`."
  def memory, do: %{vm: :erlang.memory(:total), rss: rss()}

  defp local(client, counters) do
    sample = Map.put(memory(), :client_watches, Kube.open_watches(client))
    n = if counters, do: :counters.get(counters, 1), else: 0

    case Process.get(:live_at) do
      [next | _] = thresholds when n >= next ->
        Process.put(:live_at, Enum.drop_while(thresholds, &(&1 <= n)))
        Map.put(sample, :live, live(counters))

      _ ->
        sample
    end
  end

  @doc """
  The VM's live memory: every process garbage-collected first, so what is left is what the
  processes hold, not garbage waiting for their next collection.
  `%{vm: bytes, waiting: n, in_flight: n}`, the boots counted after the collection.
  """
  def live(counters) do
    for pid <- Process.list(), do: :erlang.garbage_collect(pid)

    %{
      vm: :erlang.memory(:total),
      waiting: :counters.get(counters, 1),
      in_flight: :counters.get(counters, 2)
    }
  end

  defp collect(pid) do
    send(pid, {:stop, self()})

    receive do
      {:samples, ^pid, samples} -> Enum.reverse(samples)
    after
      15_000 -> []
    end
  end

  defp loop(sample, every_ms, acc) do
    acc = [sample.() | acc]

    receive do
      {:stop, from} -> send(from, {:samples, self(), acc})
    after
      every_ms -> loop(sample, every_ms, acc)
    end
  end

  defp rss do
    with {:ok, text} <- File.read("/proc/self/status"),
         [kb] <- Regex.run(~r/VmRSS:\s+(\d+) kB/, text, capture: :all_but_first) do
      String.to_integer(kb) * 1024
    else
      _ -> 0
    end
  end
end
