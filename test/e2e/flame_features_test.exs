defmodule FLAMEK8sBackend.FlameFeaturesE2ETest do
  # FLAME's pool features with this backend, end to end against the local control plane:
  # code_sync on a runner whose root filesystem is read-only, single_use, min pools,
  # FLAME.place_child/3, a sidecar next to the runner, a fixed distribution port, and the
  # pure-Elixir backend's :app_container_name + :secret_env combination. Runner pods are BEAM
  # nodes started by the simulated kubelet from the runner manifest as built.
  use FLAMEK8sBackend.Test.ClusterCase, async: true

  @moduletag :e2e
  @moduletag timeout: 120_000

  alias FLAMEK8sBackend.Test.RemoteFuns

  @nobody 65_534

  setup :parent_setup

  defp gone?(kube, ns, name) do
    match?({:error, {:api, 404, _, _}}, Kube.get_pod(kube, ns, name)) and
      match?(
        {:error, {:api, 404, _, _}},
        Kube.request(kube, "GET", "/api/v1/namespaces/#{ns}/secrets/#{name}")
      )
  end

  defp app_container(pod), do: hd(pod["spec"]["containers"])

  defp env_value(container, name),
    do: Enum.find_value(container["env"], &(&1["name"] == name && &1["value"]))

  # The runner's command with a read-only root filesystem, as `readOnlyRootFilesystem: true`
  # gives it, and one writable directory, as an emptyDir mounted there would be: in a mount
  # namespace of its own, every mount is made read-only but `writable`. (The simulated
  # kubelet mounts no volumes and sets no user; the VM runs as this test's user, root, which
  # reads the Elixir it runs and this clone's build wherever they are.)
  defp read_only_root(writable) do
    script = """
    mount --bind "$1" "$1" || exit 1
    findmnt -rn -o TARGET | while read -r mount; do
      [ "$mount" = "$1" ] || mount -o remount,bind,ro "$mount" 2>/dev/null || true
    done
    exec "$2"
    """

    ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script] ++
      ["sh", writable, LocalCluster.info().runner_entrypoint]
  end

  # A directory as an emptyDir is: writable by any user. (The simulated kubelet mounts no
  # volumes: the runner process sees the host's directory at the mount path.)
  defp empty_dir!(name) do
    dir = Path.join(System.tmp_dir!(), "#{name}-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    File.chmod!(dir, 0o777)
    on_exit(fn -> File.rm_rf!(dir) end)
    dir
  end

  # A module that exists only on the parent, in a beam file of its own: the runner can only
  # run it if code sync brought it there.
  defp probe_module!(ebin) do
    module =
      Module.concat(FLAMEK8sBackend.Test, "CodeSyncProbe#{System.unique_integer([:positive])}")

    source = """
    defmodule #{inspect(module)} do
      def run do
        %{
          node: node(),
          loaded_from: List.to_string(:code.which(__MODULE__)),
          tmp_dir: System.tmp_dir(),
          write_to_root: File.write("/flame-k8s-code-sync-probe", "")
        }
      end
    end
    """

    [{^module, beam}] = Code.compile_string(source)
    File.mkdir_p!(ebin)
    File.write!(Path.join(ebin, "#{module}.beam"), beam)
    module
  end

  # FLAME 0.5.3's pool packages what :copy_apps and :copy_paths select when it starts, and its
  # start raises when that is nothing (KeyError, key :path not found in: nil): :sync_beams
  # alone is not enough. So the probe's ebin is copied at boot (:copy_paths) and synced
  # (:sync_beams), as Livebook's start_apps: true + sync_beams does with the whole app.
  defp code_sync(probe_ebin, extra \\ []) do
    [start_apps: false, copy_apps: false, copy_paths: [probe_ebin], sync_beams: [probe_ebin]] ++
      extra
  end

  describe "code_sync" do
    test "a runner with a read-only root writes and loads synced code in :tmp_dir",
         %{kube: kube, namespace: ns, opts: opts} do
      tmp_dir = empty_dir!("flame-tmp")
      probe_ebin = Path.join(empty_dir!("probe"), "ebin")
      probe = probe_module!(probe_ebin)

      # A parent with a read-only root, run as a non-root user: the runner copies that.
      {:ok, _} =
        Kube.create_pod(kube, ns, %{
          "metadata" => %{"name" => "ro-parent", "labels" => %{"app" => "parent"}},
          "spec" => %{
            "nodeName" => "elsewhere",
            "securityContext" => %{"runAsNonRoot" => true, "runAsUser" => @nobody},
            "containers" => [
              %{
                "name" => "app",
                "image" => "flame-runner:test",
                "securityContext" => %{"readOnlyRootFilesystem" => true}
              }
            ]
          }
        })

      # What the simulated kubelet cannot do, the command does.
      backend_opts =
        Keyword.merge(opts,
          parent_pod: {ns, "ro-parent"},
          tmp_dir: tmp_dir,
          manifest: %{"spec" => %{"containers" => [%{"command" => read_only_root(tmp_dir)}]}}
        )

      pool =
        start_pool!(backend_opts,
          code_sync: code_sync(probe_ebin, extract_dir: {System, :tmp_dir!, []})
        )

      result = FLAME.call(pool, Function.capture(probe, :run, 0))

      assert result.node != node()
      assert result.write_to_root == {:error, :erofs}
      assert result.tmp_dir == tmp_dir
      assert String.starts_with?(result.loaded_from, tmp_dir <> "/")

      [pod] = runner_pods(kube, ns)
      container = app_container(pod)
      assert %{"name" => "flame-tmp", "emptyDir" => %{}} in pod["spec"]["volumes"]
      assert %{"name" => "flame-tmp", "mountPath" => tmp_dir} in container["volumeMounts"]
      assert env_value(container, "TMPDIR") == tmp_dir
      assert container["securityContext"] == %{"readOnlyRootFilesystem" => true}
      assert pod["spec"]["securityContext"]["runAsUser"] == @nobody
    end

    test "the same runner with FLAME's default extract_dir (/) cannot boot: :tmp_dir is needed",
         %{kube: kube, namespace: ns, opts: opts} do
      probe_ebin = Path.join(empty_dir!("probe"), "ebin")
      probe = probe_module!(probe_ebin)
      tmp_dir = empty_dir!("flame-tmp")

      backend_opts =
        Keyword.merge(opts,
          tmp_dir: tmp_dir,
          manifest: %{"spec" => %{"containers" => [%{"command" => read_only_root(tmp_dir)}]}}
        )

      # FLAME tells only on_grow_end why a boot failed (its callers just wait, then time out).
      test = self()

      pool =
        start_pool!(backend_opts,
          code_sync: code_sync(probe_ebin),
          on_grow_end: fn result, _meta -> send(test, {:grow_end, result}) end
        )

      {caller, monitor} =
        spawn_monitor(fn ->
          FLAME.call(pool, Function.capture(probe, :run, 0), timeout: 60_000)
        end)

      # The runner could not extract the archive under "/".
      assert_receive {:grow_end, {:exit, reason}}, 60_000
      assert inspect(reason) =~ ":erofs"

      # Nobody waits any more: FLAME's pool stops booting again, and no runner pod is left.
      Process.exit(caller, :kill)
      assert_receive {:DOWN, ^monitor, :process, ^caller, :killed}
      eventually(fn -> runner_pods(kube, ns) == [] end, 20_000)
    end
  end

  # FLAME 0.5.3 checks a runner in with a GenServer call once the function has returned, and a
  # single-use runner stops itself as soon as the function's process ends: the check-in may
  # find the FLAME Runner gone, and the call exits (noproc) although the function ran. So the
  # function's result comes back as a message, and the call's own outcome does not count.
  defp single_use_call(pool) do
    test = self()
    {caller, monitor} = spawn_monitor(fn -> FLAME.call(pool, RemoteFuns.rendezvous(test)) end)
    assert_receive {:arrived, runner, remote}, 30_000
    info = :erpc.call(runner, RemoteFuns, :whereami, [])
    send(remote, :go)
    assert_receive {:DOWN, ^monitor, :process, ^caller, reason}, 30_000

    assert reason == :normal or
             match?({:noproc, {GenServer, :call, [_, {:checkin, _, _}, _]}}, reason),
           inspect(reason)

    info
  end

  test "single_use: the runner stops after its call and its pod goes; the next call boots anew",
       %{kube: kube, namespace: ns, opts: opts} do
    pool = start_pool!(opts, single_use: true)

    first = single_use_call(pool)
    runner = first.node
    Node.monitor(runner, true)
    assert_receive {:nodedown, ^runner}, 30_000
    eventually(fn -> gone?(kube, ns, first.pod_name) end, 20_000)

    second = single_use_call(pool)
    assert second.node != runner
    assert second.pod_name != first.pod_name
    eventually(fn -> gone?(kube, ns, second.pod_name) end, 20_000)
  end

  test "min: 1: the runner pod is up before the first call, serves it, and goes with the pool",
       %{kube: kube, namespace: ns, opts: opts} do
    pool = start_pool!(opts, min: 1, idle_shutdown_after: 100)

    # FLAME boots the min runners before the pool has started.
    assert [pod] = runner_pods(kube, ns)
    assert %{"phase" => "Running"} = pod["status"]

    info = FLAME.call(pool, &RemoteFuns.whereami/0)
    assert info.pod_name == pod["metadata"]["name"]

    # idle_shutdown_after does not apply to min runners (min_idle_shutdown_after: :infinity).
    Node.monitor(info.node, true)
    refute_receive {:nodedown, _}, 1_000

    :ok = stop_supervised(pool)
    eventually(fn -> gone?(kube, ns, info.pod_name) end, 20_000)
  end

  test "FLAME.place_child/3: the child runs on the runner, which stays while it lives", %{
    kube: kube,
    namespace: ns,
    opts: opts
  } do
    pool = start_pool!(opts, idle_shutdown_after: 300)

    {:ok, agent} =
      FLAME.place_child(pool, %{id: :counter, start: {Agent, :start_link, [Map, :new, []]}})

    runner = node(agent)
    assert runner != node()
    # MFAs: a closure of this test module would not exist on the runner.
    :ok = Agent.update(agent, Map, :put, [:calls, 1])
    assert Agent.get(agent, Map, :fetch!, [:calls]) == 1
    [pod] = runner_pods(kube, ns)
    assert Atom.to_string(runner) =~ pod["metadata"]["name"]

    # Longer than idle_shutdown_after: the placed child keeps the runner busy.
    Node.monitor(runner, true)
    refute_receive {:nodedown, ^runner}, 1_500

    :ok = Agent.stop(agent)
    assert_receive {:nodedown, ^runner}, 30_000
    eventually(fn -> gone?(kube, ns, pod["metadata"]["name"]) end, 20_000)
  end

  test "a sidecar keeps the pod running after the runner VM is gone; the parent deletes it", %{
    kube: kube,
    namespace: ns,
    opts: opts
  } do
    sidecar = %{"name" => "mesh-proxy", "image" => "sleeper:test", "args" => ["300"]}

    pool =
      start_pool!(
        Keyword.merge(opts,
          manifest: %{"spec" => %{"containers" => [sidecar]}},
          active_deadline_seconds: 3_600
        )
      )

    info = FLAME.call(pool, &RemoteFuns.whereami/0)
    {:ok, pod} = Kube.get_pod(kube, ns, info.pod_name)
    assert Enum.map(pod["spec"]["containers"], & &1["name"]) == ["app", "mesh-proxy"]
    assert pod["spec"]["activeDeadlineSeconds"] == 3_600

    {caller, monitor} = spawn_monitor(fn -> FLAME.call(pool, RemoteFuns.halt_vm()) end)
    assert_receive {:DOWN, ^monitor, :process, ^caller, reason} when reason != :normal, 30_000
    eventually(fn -> gone?(kube, ns, info.pod_name) end, 20_000)
  end

  test "dist_port: the runner's Erlang distribution listens on that port", %{opts: opts} do
    {:ok, socket} = :gen_tcp.listen(0, [])
    {:ok, port} = :inet.port(socket)
    :ok = :gen_tcp.close(socket)

    pool = start_pool!(Keyword.put(opts, :dist_port, port))
    info = FLAME.call(pool, &RemoteFuns.whereami/0)

    [name, host] = info.node |> Atom.to_string() |> String.split("@")
    {:ok, ip} = :inet.parse_address(String.to_charlist(host))
    assert {:port, ^port, _version} = :erl_epmd.port_please(String.to_charlist(name), ip)
  end

  test "a parent container other than the first, with :secret_env: the runner gets the secret",
       %{kube: kube, namespace: ns, opts: opts} do
    {:ok, _} =
      Kube.create_pod(kube, ns, %{
        "metadata" => %{"name" => "two-containers"},
        "spec" => %{
          "nodeName" => "elsewhere",
          "containers" => [
            %{"name" => "sidecar", "image" => "sleeper:test"},
            %{"name" => "app", "image" => "flame-runner:test"}
          ]
        }
      })

    opts =
      Keyword.merge(opts,
        parent_pod: {ns, "two-containers"},
        app_container_name: "app",
        secret_env: %{"SECRET_SETTING" => "s3cr3t"}
      )

    info = FLAME.call(start_pool!(opts), &RemoteFuns.whereami/0)
    assert info.secret == "s3cr3t"
    assert info.cookie_set?

    {:ok, pod} = Kube.get_pod(kube, ns, info.pod_name)
    assert [%{"name" => "app"}] = pod["spec"]["containers"]
  end
end
