alias FLAMEK8sBackend.Test.{LocalCluster, RealNode}

# Mix prunes the code paths of OTP applications the project does not list; the tests use these
# (TLS servers and downloads in the install-path tests).
Enum.each([:inets, :ssl, :public_key], &Mix.ensure_application!/1)

# The ExUnit VM is the FLAME parent: a distributed node that runner pods (local BEAM nodes on
# 127.0.0.x) connect back to.
{_, 0} =
  System.cmd(Path.join(:code.root_dir(), "erts-#{:erlang.system_info(:version)}/bin/epmd"), [
    "-daemon"
  ])

# A random part keeps concurrent test runs on one machine (one epmd) apart. Distribution over
# IPv6 (`-proto_dist inet6_tcp`, the real node's IPv6 run) needs an IPv6 host part.
loopback =
  if :init.get_argument(:proto_dist) == {:ok, [[~c"inet6_tcp"]]}, do: "::1", else: "127.0.0.1"

{:ok, _} =
  Node.start(
    :"flame_parent_#{System.system_time(:millisecond) |> rem(1_000_000)}_#{:rand.uniform(99_999)}@#{loopback}",
    :longnames
  )

Node.set_cookie(
  :crypto.strong_rand_bytes(16)
  |> Base.encode32(padding: false)
  |> String.to_atom()
)

# Plain `mix test` runs only what needs nothing but this VM (the :unit tests). The slow suites
# are opt-in tags, and bin/test includes them all:
#
#   :cluster      the local control plane (kube-apiserver + etcd, simulated kubelet)
#   :integration  builds of apps that depend on this library, and the NIF's install paths
#   :real_node    the real node (tools/realnode: kubelet, containerd, pods); changes the host
#   :ipv6         real-node tests that also run on the IPv6 node (bin/test: --only ipv6)
#   :kind         a kind cluster made by examples/kind/kind.sh
#
# A service starts only when its tag is included, or for `mix test file:line`, which may pick
# a test of any tag (the real node excepted: it changes the host's network).
opt_in = [:cluster, :integration, :real_node, :kind]
included = ExUnit.configuration()[:include]
location? = Enum.any?(included, &match?({key, _} when key in [:line, :location], &1))
wanted? = fn tag -> tag in included end

if wanted?.(:cluster) or wanted?.(:integration) or location? do
  LocalCluster.start!()
  ExUnit.after_suite(fn _ -> LocalCluster.stop() end)
end

exclude = opt_in

# The real node (tools/realnode): real kubelet, containerd and pods. A machine that cannot run
# it (no root, no cgroups, FLAME_K8S_REAL_NODE=0) says so in one line and runs the rest, unless
# FLAME_K8S_REAL_NODE=require (CI) makes that a failure; a machine that can but fails to start
# it fails the run, as does a teardown that leaves the machine different from before.
exclude =
  with true <- wanted?.(:real_node) or wanted?.(:ipv6),
       :ok <- RealNode.availability() do
    RealNode.start!()

    ExUnit.after_suite(fn _ ->
      case RealNode.stop() do
        :ok ->
          IO.puts("real node stopped; the machine is as before")

        {:error, diff} ->
          IO.puts("real node teardown left the machine changed:\n#{diff}")
          System.halt(1)
      end
    end)

    exclude
  else
    false ->
      exclude

    {:error, why} ->
      if System.get_env("FLAME_K8S_REAL_NODE") == "require" do
        IO.puts("FLAME_K8S_REAL_NODE=require, but the real node cannot run here: #{why}")
        System.halt(1)
      end

      IO.puts("real node tests excluded: #{why}")
      [:real_node | exclude]
  end

ExUnit.start(
  exclude: exclude,
  formatters: [
    ExUnit.CLIFormatter,
    FLAMEK8sBackend.Test.KubeletLogFormatter,
    FLAMEK8sBackend.Test.RealNodeTally
  ]
)
