defmodule Bench.Main do
  @moduledoc """
  The boot benchmark of `FLAMEK8sBackend` on the local control plane, section by section:
  readiness of pods (1), sequential boots (2, 3, 2b), storms (4), incidents; or only the
  scaling sections (`--scaling`, `--real-node`), or only the cold boot budget (`--budget`). Prints the tables
  and writes them as Markdown (`Bench.Report`). A benchmark, not a test: `bench/run [options]`
  (`Bench.Options`).
  """

  alias Bench.{
    Budget,
    ControlPlane,
    Incidents,
    Options,
    Plot,
    ParentNode,
    RemoteUpTracer,
    Report,
    RunInfo
  }

  alias Bench.Section
  alias FLAMEK8sBackend.Test.RealNode

  def run(argv) do
    args = Options.parse!(argv)
    started_ms = System.monotonic_time(:millisecond)
    Budget.start(args[:max_seconds], fn -> stop_at_cap(args[:max_seconds]) end)
    now = DateTime.utc_now() |> DateTime.truncate(:second)

    # Real-node pods reach this VM at the bridge address, not at 127.0.0.1.
    ParentNode.start!(if args[:real_node], do: RealNode.bridge_address(), else: "127.0.0.1")
    RemoteUpTracer.start()
    Incidents.start()
    {:ok, _} = Application.ensure_all_started(:flame_k8s_backend)
    {:ok, _} = Application.ensure_all_started(:flame)

    cp = if args[:real_node], do: ControlPlane.start_real!(), else: ControlPlane.start!()

    prefix =
      cond do
        args[:budget] -> "budget"
        args[:real_node] -> "scaling-realnode"
        args[:scaling] -> "scaling"
        true -> "boot"
      end

    path = args[:out] || Report.default_path(now, prefix)
    Report.start(path, RunInfo.header(now, args, cp))

    try do
      cond do
        args[:budget] ->
          Section.Budget.run(cp, args[:budget_boots])

        args[:real_node] ->
          cp |> Section.Scaling.run_real(args[:real_n]) |> Plot.write(path, "the real node")

        args[:scaling] ->
          cp |> Section.Scaling.run(args[:scaling_n], args[:runner_n]) |> Plot.write(path)

        true ->
          Section.Readiness.run(cp, args[:pods], args[:batch])
          Section.SequentialBoots.run(cp, args[:boots])
          Section.Storms.run(cp, args[:storm], args[:rounds])
      end
    after
      ControlPlane.clean(cp)
      Section.Incidents.render()
    end

    elapsed = div(System.monotonic_time(:millisecond) - started_ms, 1000)
    path = Report.write("Total run time: #{elapsed} s.")
    IO.puts("\nTotal run time: #{elapsed} s. Results written to #{Path.relative_to_cwd(path)}")

    # Wait until localkube has stopped every process it started (runner VMs, apiserver, etcd),
    # or the real node is down and the machine as before, before this VM exits.
    ControlPlane.stop(cp)
  end

  # Whatever is running at the cap: write what the report has and stop the VM, and with it the
  # control plane and every pod process.
  defp stop_at_cap(max_seconds) do
    Report.note("time cap of #{max_seconds} s reached: stopping")

    try do
      path =
        Report.write(
          "**Stopped by the time cap of #{max_seconds} s; the sections above are complete, later ones are missing.**"
        )

      Report.note("partial results in #{path}")
    catch
      kind, reason -> Report.note("no results written: #{Exception.format(kind, reason)}")
    end

    ControlPlane.stop_any()
    System.halt(3)
  end
end
