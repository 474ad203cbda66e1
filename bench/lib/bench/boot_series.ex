defmodule Bench.BootSeries do
  @moduledoc """
  Sequential runner boots with one strategy, one at a time after one warm-up: each boot is torn
  down and its pod gone before the next starts, so every figure is a boot on a quiet system.
  Counts the API requests of the whole series (`Bench.ApiRequests`).
  """

  alias Bench.{ApiRequests, Boot, ControlPlane, KubeletLog}
  alias Bench.ApiRequests.Attribution
  alias Bench.Boot.Teardown

  @boot_timeout_ms 120_000

  @doc "Returns `%{results: [Bench.Boot result], counted: requests by key}`."
  def run(%ControlPlane{kube: kube} = cp, strategy, n) do
    opts = ControlPlane.backend_opts(cp)

    boot_once = fn ->
      [result] = Boot.collect([Boot.spawn(strategy, opts, kube)], @boot_timeout_ms)
      result
    end

    # One warm-up boot (NIF connections, code paths in the page cache), not counted.
    Teardown.run(kube, [boot_once.()])
    Process.sleep(500)
    before = ApiRequests.snapshot(kube)

    results =
      for _ <- 1..n do
        result = boot_once.()
        Teardown.run(kube, [result])
        result
      end

    # A cancelled watch is counted when the server has ended it.
    Process.sleep(1000)
    KubeletLog.sync()
    finals = Enum.count(results, &(&1[:key] && KubeletLog.ts(&1.key, :final_delete)))

    counted =
      kube
      |> ApiRequests.snapshot()
      |> ApiRequests.diff(before)
      |> Attribution.split_final_deletes(finals)

    %{results: results, counted: counted}
  end

  @doc """
  Per boot of a series: boot time, runner VM time (container started → remote_up) and the
  overhead (the rest), the backend's requests per boot, and the failed boots.
  """
  def stats(%{results: results, counted: counted}, n) do
    ok = Enum.reject(results, &Map.has_key?(&1, :error))

    rows =
      for r <- ok, started = KubeletLog.ts(r.key, :started), up = Boot.up_time(r) do
        %{
          boot: r.t_done - r.t_boot,
          vm: up - started,
          overhead: r.t_done - r.t_boot - (up - started)
        }
      end

    column = fn key -> for row <- rows, do: row[key] end

    %{
      n: length(rows),
      boot: column.(:boot),
      vm: column.(:vm),
      overhead: column.(:overhead),
      errors: length(results) - length(ok),
      requests: Attribution.total(counted, :backend) / n
    }
  end
end
