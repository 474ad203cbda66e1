alias FLAMEK8sBackend.Test.LocalCluster

# The ExUnit VM is the FLAME parent: a distributed node that runner pods (local BEAM nodes on
# 127.0.0.x) connect back to.
{_, 0} =
  System.cmd(Path.join(:code.root_dir(), "erts-#{:erlang.system_info(:version)}/bin/epmd"), [
    "-daemon"
  ])

# A random part keeps concurrent test runs on one machine (one epmd) apart.
{:ok, _} =
  Node.start(
    :"flame_parent_#{System.system_time(:millisecond) |> rem(1_000_000)}_#{:rand.uniform(99_999)}@127.0.0.1",
    :longnames
  )

Node.set_cookie(
  :crypto.strong_rand_bytes(16)
  |> Base.encode32(padding: false)
  |> String.to_atom()
)

exclude =
  case System.get_env("FLAME_K8S_LOCAL_CLUSTER") do
    "0" ->
      IO.puts("FLAME_K8S_LOCAL_CLUSTER=0: tests against the local control plane are excluded")
      [:cluster, :kind]

    _ ->
      LocalCluster.start!()
      ExUnit.after_suite(fn _ -> LocalCluster.stop() end)
      [:kind]
  end

ExUnit.start(
  exclude: exclude,
  formatters: [ExUnit.CLIFormatter, FLAMEK8sBackend.Test.KubeletLogFormatter]
)
