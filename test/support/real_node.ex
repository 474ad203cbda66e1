defmodule FLAMEK8sBackend.Test.RealNode do
  @moduledoc """
  A real single-node Kubernetes cluster for tests: kubelet, containerd, runc, CNI bridge,
  kube-scheduler, kube-controller-manager, kube-proxy and CoreDNS, started by
  `tools/realnode/up` (see its header) and stopped by `tools/realnode/down`. Pods are real
  containers on the bridge `flk8s-br0` (10.244.0.1/24); the API server listens on 10.244.0.1.
  With `FLAME_K8S_REALNODE_IPV6=1` it starts with `up --ipv6`: IPv6 first (pods, Services, the
  node and the API server on fd00:10:244::1), IPv4 beside it; the test VM then runs Erlang
  distribution over IPv6 too (`ELIXIR_ERL_OPTIONS="-proto_dist inet6_tcp"`, see bin/test).

  Only one node runs per machine. `up` is given this VM's OS pid: if the VM dies without
  `stop/0`, a watchdog runs `down`.

  Images (no registry; pulls are refused at once):

    * `info().pause_image` - the static pause binary (`/pause`, sleeps until TERM)
    * `info().busybox_image` - a static busybox (`/bin/sh`, `ip`, `nslookup`, ...)
    * `info().app_image` - `{ref, archive}` of `tools/realnode/image.sh` (a `mix release`
      with this library), or `nil` when it was not built
  """

  use FLAMEK8sBackend.Test.ControlPlane, namespace_prefix: "rn-"

  alias FLAMEK8sBackend.Kube

  @root Path.expand("../..", __DIR__)
  @bridge_ip {10, 244, 0, 1}
  @bridge_ip6 {0xFD00, 0x10, 0x244, 0, 0, 0, 0, 1}
  @node_name "flame-realnode"

  @doc """
  `:ok` when this machine can run the real node, else `{:error, one_line_reason}`.
  `FLAME_K8S_REAL_NODE=0` turns it off; with `FLAME_K8S_REAL_NODE=require` test_helper.exs
  fails the run when it cannot run.
  """
  def availability do
    case System.get_env("FLAME_K8S_REAL_NODE") do
      "0" ->
        {:error, "FLAME_K8S_REAL_NODE=0"}

      _ ->
        case System.cmd(script("can-run"), [], stderr_to_stdout: true) do
          {_, 0} -> :ok
          {out, _} -> {:error, out |> String.trim() |> String.split("\n") |> List.last()}
        end
    end
  end

  @doc "Whether this machine can run the real node (see `availability/0`)."
  def available?, do: availability() == :ok

  @doc """
  Builds what is missing (`tools/realnode/build.sh`, cached), starts the node
  (`tools/realnode/up`) and returns its info, also kept for `info/0`:

    * `:kubeconfig` (admin), `:apiserver` (`https://10.244.0.1:<port>`), `:state_dir`,
      `:ca_pem`, `:audit_log`, `:node_name`, `:bridge_ip` (a tuple; also the DNS server),
      `:pause_image`, `:busybox_image`, `:app_image`, `:up_s` (what `up` measured),
      `:build_ms`, `:ready_ms` (build + up, as seen from here)

  Options:

    * `:images` - more OCI image archives to import
    * `:app_image` - `{ref, archive}`; `:build` runs `tools/realnode/image.sh` (its last stdout
      line is `<ref> <archive>`); default `:auto`: `:build` when image.sh exists, else none
    * `:state_dir` - default `/var/lib/flame_k8s_backend/realnode`
    * `:port` - the API server's port (default 16443)
  """
  @impl true
  def start!(opts \\ []) do
    started = System.monotonic_time(:millisecond)
    build = run_build!()
    build_ms = System.monotonic_time(:millisecond) - started

    app_image = app_image!(Keyword.get(opts, :app_image, :auto))
    images = Keyword.get(opts, :images, []) ++ if(app_image, do: [elem(app_image, 1)], else: [])
    state_dir = Keyword.get(opts, :state_dir, default_state_dir())

    args =
      ["--state-dir", state_dir, "--owner-pid", System.pid()] ++
        Enum.flat_map(images, &["--image", &1]) ++
        if(port = opts[:port], do: ["--port", to_string(port)], else: []) ++
        if(ipv6?(), do: ["--ipv6"], else: [])

    ready = run_up!(args)
    pki = Path.join(state_dir, "pki")

    info = %{
      kubeconfig: ready.kubeconfig,
      apiserver: ready.apiserver,
      server: ready.apiserver,
      up_s: String.to_float(ready.elapsed),
      state_dir: state_dir,
      ca_pem: File.read!(Path.join(pki, "ca.crt")),
      audit_log: Path.join([state_dir, "logs", "audit.log"]),
      logs_dir: Path.join(state_dir, "logs"),
      containerd_socket: Path.join([state_dir, "containerd", "containerd.sock"]),
      node_name: @node_name,
      bridge_ip: bridge_ip(),
      pause_image: build["PAUSE_IMAGE"],
      busybox_image: build["BUSYBOX_IMAGE"],
      app_image: app_image,
      build_ms: build_ms,
      ready_ms: System.monotonic_time(:millisecond) - started
    }

    put_info(info)

    IO.puts(
      "real node ready in #{info.ready_ms} ms (build #{build_ms} ms, up #{ready.elapsed} s) " <>
        "at #{info.apiserver} (#{info.kubeconfig})"
    )

    info
  end

  @doc """
  Like `start!/1`, but `{:ok, info}` or `{:error, one_line_reason}` (e.g. another real node
  already runs on this machine: one per machine).
  """
  def start(opts \\ []) do
    {:ok, start!(opts)}
  rescue
    error -> {:error, error |> Exception.message() |> String.split("\n") |> hd()}
  end

  @doc """
  Stops the node (`tools/realnode/down`) and checks that the machine is as before
  (`tools/realnode/check-clean`). `:ok`, or `{:error, what_differs}` (also printed).
  """
  @impl true
  def stop do
    case info_or_nil() do
      nil ->
        :ok

      %{state_dir: state_dir} ->
        erase_info()

        {down_out, down_status} =
          System.cmd(script("down"), ["--state-dir", state_dir], stderr_to_stdout: true)

        {check_out, check_status} = System.cmd(script("check-clean"), ["--state-dir", state_dir])

        if down_status == 0 and check_status == 0 do
          :ok
        else
          message = "real node not cleanly stopped:\n#{down_out}\n#{check_out}"
          IO.puts(:stderr, message)
          {:error, message}
        end
    end
  end

  @doc """
  How a test module runs on the real node: `:running` (test_helper.exs started it),
  `:standalone` (`FLAME_K8S_REAL_NODE=1`: the module starts it with `ensure_started!/0`) or
  `{:skip, reason}`. Read when the test file loads (after test_helper.exs).
  """
  def test_mode do
    cond do
      running?() ->
        :running

      System.get_env("FLAME_K8S_REAL_NODE") == "1" ->
        :standalone

      true ->
        {:skip,
         "the real node is not running (test_helper.exs starts it when tools/realnode/can-run passes; FLAME_K8S_REAL_NODE=1 starts it from the test module)"}
    end
  end

  @doc """
  Starts the node unless it runs, and stops it after the suite (for `:standalone` runs).
  """
  def ensure_started!(opts \\ []) do
    if running?() do
      info()
    else
      info = start!(opts)

      ExUnit.after_suite(fn _ ->
        case stop() do
          :ok -> IO.puts("real node stopped; the machine is as before")
          {:error, _} -> :ok
        end
      end)

      info
    end
  end

  @doc """
  Creates a namespace and waits for the `default` ServiceAccount the controller-manager makes
  (a pod created before it exists is refused).
  """
  @impl true
  def create_namespace!(kube, name) do
    {:ok, _} =
      Kube.request(kube, "POST", "/api/v1/namespaces", body: %{"metadata" => %{"name" => name}})

    wait_until!(
      fn ->
        match?(
          {:ok, _},
          Kube.request(kube, "GET", "/api/v1/namespaces/#{name}/serviceaccounts/default")
        )
      end,
      30_000,
      "ServiceAccount #{name}/default"
    )

    name
  end

  @doc "Deletes a namespace (background: its pods go with their grace periods)."
  def delete_namespace(kube, name) do
    Kube.request(kube, "DELETE", "/api/v1/namespaces/#{name}")
    :ok
  end

  @doc """
  A ServiceAccount `name` bound to a Role with `rules`, and a kubeconfig (in the state dir) that
  authenticates as it with a TokenRequest token (valid for `:expiration_seconds`, default 600);
  returns the kubeconfig's path.
  """
  def service_account_kubeconfig!(kube, namespace, name, rules, opts \\ []) do
    kube
    |> service_account_token!(namespace, name, rules, opts)
    |> write_token_kubeconfig!(namespace: namespace)
  end

  @doc """
  A pod manifest: `image` with `imagePullPolicy: Never`, a 1 s grace period, `restartPolicy:
  Never`. Options: `:labels`, `:command`, `:args`, `:container` (merged into the container),
  `:spec` (merged into the spec), `:metadata` (merged into the metadata).
  """
  def pod_manifest(name, image, opts \\ []) do
    container =
      %{"name" => "main", "image" => image, "imagePullPolicy" => "Never"}
      |> put_present("command", opts[:command])
      |> put_present("args", opts[:args])
      |> Map.merge(Keyword.get(opts, :container, %{}))

    %{
      "metadata" =>
        Map.merge(
          %{"name" => name, "labels" => Keyword.get(opts, :labels, %{})},
          Keyword.get(opts, :metadata, %{})
        ),
      "spec" =>
        Map.merge(
          %{
            "restartPolicy" => "Never",
            "terminationGracePeriodSeconds" => 1,
            "containers" => [container]
          },
          Keyword.get(opts, :spec, %{})
        )
    }
  end

  @doc """
  A running parent pod for the backend to read (`FLAMEK8sBackend.init/1` builds the runner
  from it): the pause image unless `:image` is given; env `FROM_PARENT=inherited` unless `:env`
  (a list of env entries) is given.
  """
  def create_parent_pod!(kube, namespace, opts \\ []) do
    name = Keyword.get(opts, :name, "parent")
    image = Keyword.get(opts, :image, info().pause_image)

    manifest =
      pod_manifest(name, image,
        labels: Keyword.get(opts, :labels, %{"app" => "parent"}),
        container: %{
          "name" => "app",
          "env" => Keyword.get(opts, :env, [%{"name" => "FROM_PARENT", "value" => "inherited"}])
        },
        spec: %{
          "serviceAccountName" => Keyword.get(opts, :service_account, "default"),
          "restartPolicy" => "Always"
        }
      )

    {:ok, _} = Kube.create_pod(kube, namespace, manifest)
    await_running!(kube, namespace, name)
  end

  @doc "Waits for a pod to be Running and ready (a watch); returns the pod."
  def await_running!(kube, namespace, name, timeout \\ 60_000) do
    {:ok, await} = Kube.await_pod(kube, namespace, name, timeout: timeout)
    ref = await.ref

    receive do
      {:flame_k8s, ^ref, {:ready, pod}} -> pod
      {:flame_k8s, ^ref, other} -> raise "pod #{namespace}/#{name} not running: #{inspect(other)}"
    after
      timeout + 5_000 -> raise "pod #{namespace}/#{name}: no answer from the watch"
    end
  end

  @doc "Waits until `fun` returns a truthy value (checked every 100 ms); returns it."
  def wait_until!(fun, timeout, what) do
    deadline = System.monotonic_time(:millisecond) + timeout
    do_wait_until(fun, deadline, timeout, what)
  end

  defp do_wait_until(fun, deadline, timeout, what) do
    cond do
      result = fun.() ->
        result

      System.monotonic_time(:millisecond) > deadline ->
        raise "#{what}: not within #{timeout} ms"

      true ->
        Process.sleep(100)
        do_wait_until(fun, deadline, timeout, what)
    end
  end

  @doc "Runs `ctr -n k8s.io ARGS` against the node's containerd; returns `{output, status}`."
  def ctr(args) do
    System.cmd("ctr", ["--address", info().containerd_socket, "-n", "k8s.io" | args],
      stderr_to_stdout: true
    )
  end

  @doc "Whether this run's node is IPv6 first (`FLAME_K8S_REALNODE_IPV6=1`)."
  def ipv6?, do: System.get_env("FLAME_K8S_REALNODE_IPV6") == "1"

  @doc "The DNS server pods use (CoreDNS on the host): `{10, 244, 0, 1}`, or its IPv6 address."
  def dns_server, do: bridge_ip()

  @doc "The bridge's address on the host, which pods reach (and Erlang node names use): `\"10.244.0.1\"`."
  def bridge_address, do: bridge_ip() |> :inet.ntoa() |> to_string()

  defp bridge_ip, do: if(ipv6?(), do: @bridge_ip6, else: @bridge_ip)

  @doc "Whether `ip` (a string) is a pod address of the node, in its first family."
  def pod_address?(ip) do
    if ipv6?(),
      do: String.starts_with?(ip, "fd00:10:244::"),
      else: String.starts_with?(ip, "10.244.0.")
  end

  @doc "A/AAAA lookup against the node's CoreDNS, as DNSCluster does it: a list of IP tuples."
  def dns_lookup(name, type \\ :a) do
    :inet_res.lookup(String.to_charlist(name), :in, type,
      nameservers: [{bridge_ip(), 53}],
      timeout: 2_000
    )
  end

  @doc """
  Writes the example manifests (`examples/kubernetes/*.yaml`) as `examples/kind/kind.sh`
  adapts them to the demo app (`flame-demo`, one replica, a fresh cookie) into `dir`, with the
  app image of this run; returns `%{files: paths, cookie: cookie}`.
  """
  def render_demo_manifests!(dir) do
    {ref, _archive} = info().app_image || raise "no app image (tools/realnode/image.sh)"
    File.mkdir_p!(dir)

    {_, 0} =
      System.cmd(Path.join(@root, "examples/kind/kind.sh"), ["--render-manifests", dir],
        stderr_to_stdout: true
      )

    files = Path.wildcard(Path.join(dir, "*.yaml"))

    for file <- files do
      File.write!(
        file,
        String.replace(File.read!(file), "image: flame-demo:dev", "image: #{ref}")
      )
    end

    # On an IPv6 node the parent's distribution runs over IPv6, as the guide says to set it;
    # runners inherit the flag with the parent's env.
    if ipv6?() do
      path = Path.join(dir, "deployment.yaml")
      flags = ~s(value: "-kernel inet_dist_listen_min)
      yaml = File.read!(path)
      true = yaml =~ flags

      File.write!(
        path,
        String.replace(
          yaml,
          flags,
          ~s(value: "-proto_dist inet6_tcp -kernel inet_dist_listen_min)
        )
      )
    end

    [_, cookie] =
      Regex.run(~r/RELEASE_COOKIE: "([^"]+)"/, File.read!(Path.join(dir, "cookie-secret.yaml")))

    %{files: files, cookie: cookie}
  end

  @doc """
  Creates every object of the YAML `files` in `namespace` as `kubectl create -n` would
  (`localkube create`, with the API server's strict validation); returns its `ok Kind/name`
  lines.
  """
  def create_manifests!(files, namespace) do
    localkube =
      case System.cmd(Path.join(@root, "tools/localkube/build.sh"), []) do
        {out, 0} -> out |> String.split("\n", trim: true) |> List.last()
        {out, status} -> raise "tools/localkube/build.sh failed (exit #{status}): #{out}"
      end

    args = ["create", "--kubeconfig", info().kubeconfig, "--namespace", namespace | files]

    case System.cmd(localkube, args, stderr_to_stdout: true) do
      {out, 0} -> String.split(out, "\n", trim: true)
      {out, status} -> raise "localkube create exited with #{status}:\n#{out}"
    end
  end

  @doc """
  The containerd ID of a pod's container (`status.containerStatuses[].containerID` without
  `containerd://`), for `ctr/1`.
  """
  def container_id(pod, container_name) do
    pod["status"]["containerStatuses"]
    |> Enum.find(&(&1["name"] == container_name))
    |> Map.fetch!("containerID")
    |> String.replace_prefix("containerd://", "")
  end

  @doc "The log lines of a pod's container, from the kubelet's pod log files on this host."
  def pod_log(pod, container_name) do
    %{"namespace" => ns, "name" => name, "uid" => uid} = pod["metadata"]

    Path.join([info().state_dir, "pod-logs", "#{ns}_#{name}_#{uid}", container_name, "*.log"])
    |> Path.wildcard()
    |> Enum.sort()
    |> Enum.flat_map(&String.split(File.read!(&1), "\n", trim: true))
  end

  # --- scripts

  defp default_state_dir do
    System.get_env("FLAME_K8S_REALNODE_DIR", "/var/lib/flame_k8s_backend/realnode")
  end

  defp script(name), do: Path.join([@root, "tools", "realnode", name])

  defp run_build! do
    case System.cmd(script("build.sh"), []) do
      {out, 0} ->
        out
        |> String.split("\n", trim: true)
        |> Enum.flat_map(fn line ->
          case String.split(line, "=", parts: 2) do
            [key, value] -> [{key, value}]
            _ -> []
          end
        end)
        |> Map.new()

      {out, status} ->
        raise "tools/realnode/build.sh failed (exit #{status}): #{out}"
    end
  end

  defp app_image!(:auto) do
    if File.exists?(script("image.sh")), do: app_image!(:build), else: nil
  end

  defp app_image!(:build) do
    case System.cmd(script("image.sh"), []) do
      {out, 0} ->
        [ref, archive] = out |> String.split("\n", trim: true) |> List.last() |> String.split(" ")
        {ref, archive}

      {out, status} ->
        raise "tools/realnode/image.sh failed (exit #{status}): #{out}"
    end
  end

  defp app_image!(nil), do: nil
  defp app_image!({ref, archive}) when is_binary(ref) and is_binary(archive), do: {ref, archive}

  defp run_up!(args) do
    {out, status} = System.cmd(script("up"), args)
    last = out |> String.split("\n", trim: true) |> List.last() || ""

    case {status, last} do
      {0, "REALNODE READY " <> rest} ->
        rest
        |> String.split(" ", trim: true)
        |> Map.new(fn pair ->
          [key, value] = String.split(pair, "=", parts: 2)
          {String.to_atom(key), value}
        end)

      {_, "REALNODE FAILED " <> reason} ->
        raise "real node failed to start: #{reason}"

      _ ->
        raise "tools/realnode/up exited with #{status}: #{out}"
    end
  end

  defp put_present(map, _key, nil), do: map
  defp put_present(map, key, value), do: Map.put(map, key, value)
end
