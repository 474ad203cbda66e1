defmodule Bench.ParentNode do
  @moduledoc """
  Makes this VM the parent: a distributed node on `host` (127.0.0.1, which the simulated
  kubelet's runner nodes on 127.0.0.x reach; the real node's pods reach the bridge address) with
  a random name and cookie. `bench/run` starts the VM with `--no-start`, so this happens before
  any application starts.
  """

  alias Bench.LogMessage

  def start!(host \\ "127.0.0.1") do
    epmd = Path.join(:code.root_dir(), "erts-#{:erlang.system_info(:version)}/bin/epmd")
    {_, 0} = System.cmd(epmd, ["-daemon"])
    {:ok, _} = Node.start(:"flame_bench_#{:rand.uniform(1_000_000_000)}@#{host}", :longnames)
    cookie = :crypto.strong_rand_bytes(16) |> Base.encode32(padding: false)
    Node.set_cookie(String.to_atom(cookie))
    quiet_global_partitions()
  end

  # Runner nodes killed at teardown make `global` log "requested disconnect ... to prevent
  # overlapping partitions" for each; that is expected here and would bury the tables.
  defp quiet_global_partitions do
    :logger.add_primary_filter(
      :bench_quiet_global,
      {fn event, _ ->
         if String.contains?(LogMessage.text(event), "overlapping partitions"),
           do: :stop,
           else: :ignore
       end, nil}
    )
  end
end
