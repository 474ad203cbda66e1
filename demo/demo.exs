# bin/demo runs this (MIX_ENV=test: the local control plane harness lives in test/support).
# It boots a runner pod through FLAMEK8sBackend, runs a function there, prints where it ran and
# how long each boot phase took, then cleans up.
alias FLAMEK8sBackend.Kube
alias FLAMEK8sBackend.Test.{LocalCluster, RemoteFuns}

defmodule Demo do
  def say(line \\ ""), do: IO.puts(line)
  def row(label, value), do: say("  " <> String.pad_trailing(label, 34) <> to_string(value))

  def fail!(message) do
    IO.puts(:stderr, "demo failed: " <> message)
    System.halt(1)
  end

  def start_epmd do
    epmd = Path.join(:code.root_dir(), "erts-#{:erlang.system_info(:version)}/bin/epmd")
    {_, 0} = System.cmd(epmd, ["-daemon"])
  end

  # A parent pod object for this VM. Nothing may run it: it names a node no kubelet owns.
  def create_parent_pod!(kube, namespace, name, image) do
    manifest = %{
      "metadata" => %{"name" => name, "labels" => %{"app" => "flame-demo"}},
      "spec" => %{
        "nodeName" => "flame-demo-no-such-node",
        "containers" => [%{"name" => "app", "image" => image}]
      }
    }

    case Kube.create_pod(kube, namespace, manifest) do
      {:ok, pod} ->
        pod

      {:error, reason} ->
        fail!("cannot create the parent pod: #{FLAMEK8sBackend.BootError.describe(reason)}")
    end
  end

  # Boots in a process of its own, as FLAME's Runner does, so that ending it lets the
  # backend's reaper delete the runner pod.
  def boot(opts) do
    demo = self()

    pid =
      spawn(fn ->
        result =
          with {:ok, state} <- FLAMEK8sBackend.init(opts),
               {:ok, terminator, state} <- FLAMEK8sBackend.remote_boot(state) do
            {:ok, terminator, state}
          end

        send(demo, {:booted, self(), result})
        receive do: (:stop -> :ok)
      end)

    receive do
      {:booted, ^pid, {:ok, terminator, state}} -> {pid, terminator, state}
      {:booted, ^pid, {:error, error}} -> fail!(Exception.message(error))
    after
      120_000 -> fail!("no answer from the boot within 120 s")
    end
  end

  def wait_until_gone(kube, namespace, selector, deadline) do
    case Kube.list_pods(kube, namespace, label_selector: selector) do
      {:ok, []} ->
        0

      {:ok, pods} ->
        if System.monotonic_time(:millisecond) > deadline do
          length(pods)
        else
          Process.sleep(100)
          wait_until_gone(kube, namespace, selector, deadline)
        end

      {:error, reason} ->
        fail!("cannot list runner pods: #{inspect(reason)}")
    end
  end
end

{opts, _rest} =
  OptionParser.parse!(System.argv(),
    strict: [
      kubeconfig: :string,
      context: :string,
      namespace: :string,
      image: :string,
      parent_host: :string
    ]
  )

kubeconfig = opts[:kubeconfig] || System.get_env("KUBECONFIG")
Demo.say("flame_k8s_backend demo")
Demo.say()
Demo.start_epmd()

{kube, namespace, image, mode} =
  if kubeconfig do
    image =
      opts[:image] ||
        Demo.fail!("on a real cluster, --image must name your app's image (the runner runs it)")

    host =
      opts[:parent_host] ||
        Demo.fail!(
          "on a real cluster, --parent-host must be an IP of this machine that pods can reach"
        )

    {:ok, _} = Node.start(:"flame_demo@#{host}", :longnames)

    kube =
      case Kube.connect(kubeconfig: kubeconfig, context: opts[:context]) do
        {:ok, kube} -> kube
        {:error, reason} -> Demo.fail!("cannot use #{kubeconfig}: #{inspect(reason)}")
      end

    namespace = opts[:namespace] || "default"
    Demo.row("cluster", "#{kube.server} (#{kubeconfig})")
    {kube, namespace, image, :cluster}
  else
    {:ok, _} = Node.start(:"flame_demo@127.0.0.1", :longnames)

    Demo.say(
      "Starting the local control plane (the first run builds kube-apiserver and etcd, ~10 min) ..."
    )

    info = LocalCluster.start!()
    kube = LocalCluster.kube!()
    namespace = "flame-demo-#{System.unique_integer([:positive])}"
    LocalCluster.create_namespace!(kube, namespace)
    {:ok, version} = Kube.request(kube, "GET", "/version")

    Demo.row(
      "control plane",
      "kube-apiserver #{version["gitVersion"]} at #{info.server}, ready in #{info.ready_ms} ms"
    )

    {kube, namespace, "flame-runner:test", :local}
  end

Node.set_cookie(
  :crypto.strong_rand_bytes(16)
  |> Base.encode32(padding: false)
  |> String.to_atom()
)

parent_name = "flame-demo-parent-#{System.unique_integer([:positive])}"
parent = Demo.create_parent_pod!(kube, namespace, parent_name, image)
Demo.row("parent node", node())
Demo.row("parent pod", "#{namespace}/#{parent_name}")

backend_opts =
  [parent_pod: {namespace, parent_name}, boot_timeout: 60_000] ++
    if(kubeconfig,
      do: [kubeconfig: kubeconfig],
      else: [kubeconfig: LocalCluster.info().kubeconfig]
    ) ++
    if(opts[:context], do: [context: opts[:context]], else: [])

Demo.say()
Demo.say("Booting a runner pod through FLAMEK8sBackend ...")
{booter, terminator, state} = Demo.boot(backend_opts)
runner = node(terminator)
timings = state.boot_timings
Demo.row("runner pod", "#{namespace}/#{state.runner_name}")
Demo.row("runner node", runner)
Demo.say()
Demo.row("boot phase", "ms since remote_boot started")
Demo.row("secret + pod created", timings.created)
Demo.row("pod running (watch event)", Map.get(timings, :running, "- (remote_up came first)"))
Demo.row("runner node up (remote_up)", timings.remote_up)

Demo.say()
Demo.say("Running a function on the runner ...")
pod_ip = :erpc.call(runner, System, :get_env, ["POD_IP"], 10_000)
pi = :erpc.call(runner, :math, :pi, [], 10_000)

Demo.row(
  ":math.pi() computed on",
  "#{:erpc.call(runner, :erlang, :node, [], 10_000)} (pod IP #{pod_ip}) = #{pi}"
)

if mode == :local do
  Demo.say()
  Demo.say("FLAME.call through a FLAME.Pool backed by FLAMEK8sBackend ...")

  # As an app does it: the pool's child spec under a supervisor (FLAME.Pool.start_link/1 alone
  # lacks the runner and task supervisors the child spec starts with it).
  {:ok, _} =
    Supervisor.start_link(
      [
        {FLAME.Pool,
         name: DemoPool,
         backend: {FLAMEK8sBackend, backend_opts},
         min: 0,
         max: 1,
         max_concurrency: 10,
         boot_timeout: 60_000,
         idle_shutdown_after: 1_000}
      ],
      strategy: :one_for_one
    )

  started = System.monotonic_time(:millisecond)
  info = FLAME.call(DemoPool, &RemoteFuns.whereami/0)
  Demo.row("FLAME.call ran on", "#{info.node} (pod #{info.pod_name})")
  Demo.row("call incl. boot", "#{System.monotonic_time(:millisecond) - started} ms")
  {square_node, square} = FLAME.call(DemoPool, RemoteFuns.square(42))
  reused = if square_node == info.node, do: "same runner, reused", else: "another runner"
  Demo.row("42 * 42 computed on", "#{square_node} = #{square} (#{reused})")
end

Demo.say()
Demo.say("Cleaning up ...")
Process.exit(booter, :kill)
selector = FLAMEK8sBackend.RunnerPod.selector(parent)

left =
  Demo.wait_until_gone(kube, namespace, selector, System.monotonic_time(:millisecond) + 30_000)

:ok = Kube.delete_pod(kube, namespace, parent_name, grace_period: 0)
Demo.row("runner pods left", left)
if left != 0, do: Demo.fail!("#{left} runner pod(s) still there")
Demo.say()
Demo.say("Done.")
