defmodule FLAMEK8sBackend.FlameFeaturesE2ETest do
  # FLAME's pool features with this backend, end to end against the local control plane:
  # code_sync on a runner that may not write to its root, single_use, min pools,
  # FLAME.place_child/3, a sidecar next to the runner, a fixed distribution port, and the
  # pure-Elixir backend's :app_container_name + :secret_env combination. Runner pods are BEAM
  # nodes started by the simulated kubelet from the runner manifest as built.
  use FLAMEK8sBackend.Test.ClusterCase, async: true

  @moduletag :e2e
  @moduletag timeout: 120_000

  alias FLAMEK8sBackend.BootError
  alias FLAMEK8sBackend.Test.RemoteFuns

  # The user nobody: the runner runs as a non-root user, to whom the root directory is not
  # writable, as a read-only root filesystem would be to anyone.
  @nobody 65_534

  setup :parent_setup

  defp gone?(kube, ns, name) do
    match?({:error, {:api, 404, _, _}}, Kube.get_pod(kube, ns, name)) and
      match?(
        {:error, {:api, 404, _, _}},
        Kube.request(kube, "GET", "/api/v1/namespaces/#{ns}/secrets/#{name}")
      )
  end

  # Stops the pool and waits until its runners' pods and secrets are gone: FLAME boots again
  # while callers wait, so a boot may still be under way, and this test's cleanup must be over
  # before the next tests (requests_per_boot counts the whole API server's requests).
  defp stop_pool_and_await_cleanup!(pool, kube, ns) do
    :ok = stop_supervised(pool)

    eventually(
      fn ->
        {:ok, %{"items" => secrets}} =
          Kube.request(kube, "GET", "/api/v1/namespaces/#{ns}/secrets")

        runner_pods(kube, ns) == [] and secrets == []
      end,
      20_000
    )
  end

  defp app_container(pod), do: hd(pod["spec"]["containers"])

  defp env_value(container, name),
    do: Enum.find_value(container["env"], &(&1["name"] == name && &1["value"]))

  # What the simulated kubelet cannot do, the command does: the runner VM as nobody, to whom
  # the root directory is not writable, as a read-only root filesystem would be to anyone.
  defp as_nobody do
    [
      "setpriv",
      "--reuid=#{@nobody}",
      "--regid=#{@nobody}",
      "--clear-groups",
      LocalCluster.info().runner_entrypoint
    ]
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
        {uid, 0} = System.cmd("id", ["-u"])

        %{
          node: node(),
          uid: String.to_integer(String.trim(uid)),
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
    test "a non-root runner that may not write to / writes and loads synced code in :tmp_dir",
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

      backend_opts =
        Keyword.merge(opts,
          parent_pod: {ns, "ro-parent"},
          tmp_dir: tmp_dir,
          manifest: %{"spec" => %{"containers" => [%{"command" => as_nobody()}]}}
        )

      pool =
        start_pool!(backend_opts,
          code_sync: code_sync(probe_ebin, extract_dir: {System, :tmp_dir!, []})
        )

      result = FLAME.call(pool, Function.capture(probe, :run, 0))

      assert result.node != node()
      assert result.uid == @nobody
      assert result.write_to_root == {:error, :eacces}
      assert result.tmp_dir == tmp_dir
      assert String.starts_with?(result.loaded_from, tmp_dir <> "/")

      [pod] = runner_pods(kube, ns)
      container = app_container(pod)
      assert %{"name" => "flame-tmp", "emptyDir" => %{}} in pod["spec"]["volumes"]
      assert %{"name" => "flame-tmp", "mountPath" => tmp_dir} in container["volumeMounts"]
      assert env_value(container, "TMPDIR") == tmp_dir
      assert container["securityContext"] == %{"readOnlyRootFilesystem" => true}
      assert pod["spec"]["securityContext"]["runAsUser"] == @nobody
      stop_pool_and_await_cleanup!(pool, kube, ns)
    end

    test "the same runner with FLAME's default extract_dir (/) cannot boot: :tmp_dir is needed",
         %{kube: kube, namespace: ns, opts: opts} do
      probe_ebin = Path.join(empty_dir!("probe"), "ebin")
      probe = probe_module!(probe_ebin)

      backend_opts =
        Keyword.merge(opts,
          tmp_dir: empty_dir!("flame-tmp"),
          manifest: %{"spec" => %{"containers" => [%{"command" => as_nobody()}]}}
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

      # The runner, as nobody, could not extract the archive under "/".
      assert_receive {:grow_end, {:exit, reason}}, 60_000
      assert inspect(reason) =~ ":eacces"

      Process.exit(caller, :kill)
      assert_receive {:DOWN, ^monitor, :process, ^caller, :killed}
      stop_pool_and_await_cleanup!(pool, kube, ns)
    end
  end

  # What the README and FLAMEK8sBackend's moduledoc tell users about failed boots under FLAME
  # 0.5.3: the caller only times out; on_grow_end, the :exception event and the :warning log
  # carry the BootError.
  describe "a failed boot reaches" do
    setup %{namespace: ns} do
      test = self()
      id = {__MODULE__, make_ref()}

      :ok =
        :telemetry.attach(
          id,
          [:flame_k8s_backend, :boot, :exception],
          fn _event, _measurements, meta, _config ->
            if meta.namespace == ns, do: send(test, {:boot_exception, meta})
          end,
          nil
        )

      on_exit(fn -> :telemetry.detach(id) end)
      %{on_grow_end: fn result, meta -> send(test, {:grow_end, result, meta}) end}
    end

    test "on_grow_end, telemetry and the log (remote_boot/1); the caller only times out", %{
      kube: kube,
      namespace: ns,
      opts: opts,
      on_grow_end: on_grow_end
    } do
      image = "flame-k8s.invalid/no-such-image:1"

      backend_opts =
        Keyword.put(opts, :manifest, %{"spec" => %{"containers" => [%{"image" => image}]}})

      log =
        ExUnit.CaptureLog.capture_log(fn ->
          pool = start_pool!(backend_opts, on_grow_end: on_grow_end, log: :info)

          {caller, monitor} =
            spawn_monitor(fn -> FLAME.call(pool, fn -> :ok end, timeout: 5_000) end)

          assert_receive {:grow_end, {:exit, reason}, %{name: ^pool}}, 30_000

          assert {{:shutdown, %BootError{phase: :container_start} = error}, {GenServer, :call, _}} =
                   reason

          assert {:image_pull, %{image: ^image}} = error.reason
          assert_receive {:boot_exception, %{error: %BootError{phase: :container_start}}}

          assert_receive {:DOWN, ^monitor, :process, ^caller,
                          {:timeout, {FLAME.Pool, :call, [^pool, _, _]}}},
                         30_000

          stop_pool_and_await_cleanup!(pool, kube, ns)
        end)

      assert log =~ "[warning]"
      assert log =~ ~s(cannot pull image "#{image}")
    end

    test "on_grow_end (init/1): a MatchError on the BootError; no telemetry", %{
      opts: opts,
      namespace: ns,
      on_grow_end: on_grow_end
    } do
      backend_opts = Keyword.put(opts, :parent_pod, {ns, "no-such-parent"})

      ExUnit.CaptureLog.capture_log(fn ->
        pool = start_pool!(backend_opts, on_grow_end: on_grow_end)

        {caller, monitor} =
          spawn_monitor(fn -> FLAME.call(pool, fn -> :ok end, timeout: 5_000) end)

        assert_receive {:grow_end, {:exit, reason}, %{name: ^pool}}, 30_000

        assert {{:badmatch, {:error, %BootError{phase: :parent_pod} = error}}, _stacktrace} =
                 reason

        assert error.reason == {:parent_pod_not_found, "#{ns}/no-such-parent"}
        Process.exit(caller, :kill)
        assert_receive {:DOWN, ^monitor, :process, ^caller, :killed}
        :ok = stop_supervised(pool)
      end)

      refute_received {:boot_exception, _}
    end
  end

  # FLAME's pool puts its own :log over the backend's options: the documented way to turn on
  # the backend's logs is the pool's :log (or the config, see the options tests).
  test ":log: the pool's reaches the backend, one in {FLAMEK8sBackend, opts} does not", %{
    kube: kube,
    namespace: ns,
    opts: opts
  } do
    quiet =
      ExUnit.CaptureLog.capture_log(fn ->
        pool = start_pool!(Keyword.put(opts, :log, :info))
        info = FLAME.call(pool, &RemoteFuns.whereami/0)
        stop_pool_and_await_cleanup!(pool, kube, ns)
        send(self(), {:node, info.node})
      end)

    assert_received {:node, quiet_node}
    refute quiet =~ "runner #{quiet_node} up in"

    logged =
      ExUnit.CaptureLog.capture_log(fn ->
        pool = start_pool!(opts, log: :info)
        info = FLAME.call(pool, &RemoteFuns.whereami/0)
        stop_pool_and_await_cleanup!(pool, kube, ns)
        send(self(), {:node, info.node})
      end)

    assert_received {:node, logged_node}
    assert logged =~ "runner #{logged_node} up in"
  end

  # FLAME 0.5.3 checks a runner in with a GenServer call once the function has returned, and a
  # single-use runner stops itself as soon as the function's process ends: the check-in may
  # find the FLAME Runner gone (noproc) or stopping (normal), and the call exits although the
  # function ran; or the pool, seeing that Runner go first, kills the callers it still counts
  # as holding it (killed). So the function's result comes back as a message, and the call's
  # own outcome does not count.
  defp single_use_call(pool) do
    test = self()
    {caller, monitor} = spawn_monitor(fn -> FLAME.call(pool, RemoteFuns.rendezvous(test)) end)
    assert_receive {:arrived, runner, remote}, 30_000
    info = :erpc.call(runner, RemoteFuns, :whereami, [])
    send(remote, :go)
    assert_receive {:DOWN, ^monitor, :process, ^caller, reason}, 30_000

    assert reason in [:normal, :killed] or
             match?(
               {why, {GenServer, :call, [_, {:checkin, _, _}, _]}} when why in [:noproc, :normal],
               reason
             ),
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
    pool = start_pool!(opts, idle_shutdown_after: short_idle_ms())

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
    refute_receive {:nodedown, ^runner}, 2 * short_idle_ms()

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

  test "dist_port: the runner's Erlang distribution listens on that port", %{
    kube: kube,
    namespace: ns,
    opts: opts
  } do
    {:ok, socket} = :gen_tcp.listen(0, [])
    {:ok, port} = :inet.port(socket)
    :ok = :gen_tcp.close(socket)

    pool = start_pool!(Keyword.put(opts, :dist_port, port))
    info = FLAME.call(pool, &RemoteFuns.whereami/0)

    [name, host] = info.node |> Atom.to_string() |> String.split("@")
    {:ok, ip} = :inet.parse_address(String.to_charlist(host))
    assert {:port, ^port, _version} = :erl_epmd.port_please(String.to_charlist(name), ip)
    stop_pool_and_await_cleanup!(pool, kube, ns)
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

    pool = start_pool!(opts)
    info = FLAME.call(pool, &RemoteFuns.whereami/0)
    assert info.secret == "s3cr3t"
    assert info.cookie_set?

    {:ok, pod} = Kube.get_pod(kube, ns, info.pod_name)
    assert [%{"name" => "app"}] = pod["spec"]["containers"]
    stop_pool_and_await_cleanup!(pool, kube, ns)
  end
end
