defmodule FLAMEK8sBackend.KubeClusterTest do
  # Every operation of the bridge against the real kube-apiserver, with pods run by the
  # simulated kubelet.
  use FLAMEK8sBackend.Test.ClusterCase, async: true

  @moduletag :integration

  alias FLAMEK8sBackend.Test.{HalfOpenProxy, TcpProxy}

  # The final result of an await; with report_ready: false the interim {:running, pod} that
  # may precede it is skipped.
  defp await!(kube, namespace, name, opts \\ []) do
    {:ok, await} = Kube.await_pod(kube, namespace, name, Keyword.put_new(opts, :timeout, 30_000))
    ref = await.ref
    result = final_result(ref, Keyword.get(opts, :report_ready, true))
    refute_received {:flame_k8s, ^ref, _}
    result
  end

  defp final_result(ref, report_ready) do
    assert_receive {:flame_k8s, ^ref, result}, 60_000

    case result do
      {:running, _pod} when not report_ready -> final_result(ref, report_ready)
      result -> result
    end
  end

  describe "pods" do
    test "create, get, list by label, delete; deleting twice is fine", %{
      kube: kube,
      namespace: ns
    } do
      manifest =
        LocalCluster.pod_manifest("web", "sleeper:test", args: ["300"], labels: %{"role" => "a"})

      assert {:ok, %{"metadata" => %{"name" => "web", "uid" => uid}}} =
               Kube.create_pod(kube, ns, manifest)

      {:ok, _} =
        Kube.create_pod(
          kube,
          ns,
          LocalCluster.pod_manifest("other", "sleeper:test", args: ["300"])
        )

      assert {:ok, %{"metadata" => %{"uid" => ^uid, "namespace" => ^ns}}} =
               Kube.get_pod(kube, ns, "web")

      assert {:ok, [%{"metadata" => %{"name" => "web"}}]} =
               Kube.list_pods(kube, ns, label_selector: "role=a")

      assert {:ok, pods} = Kube.list_pods(kube, ns)
      assert pods |> Enum.map(& &1["metadata"]["name"]) |> Enum.sort() == ["other", "web"]

      assert :ok = Kube.delete_pod(kube, ns, "web", grace_period: 0)
      assert :ok = Kube.delete_pod(kube, ns, "web")
      assert :ok = Kube.delete_pod(kube, ns, "never-existed")
    end

    # The real server's 409 for a name taken is what an idempotent create reads as "created";
    # and it accepts the create's server-side timeout (timeout=<ms>ms, a Go duration).
    test "an idempotent create of a name that exists counts as created", %{
      kube: kube,
      namespace: ns
    } do
      manifest = LocalCluster.pod_manifest("twice", "sleeper:test", args: ["300"])

      assert {:ok, %{"metadata" => %{"name" => "twice", "uid" => uid}}} =
               Kube.create_pod(kube, ns, manifest, idempotent: true)

      assert {:ok, :already_exists} = Kube.create_pod(kube, ns, manifest, idempotent: true)
      assert {:error, {:api, 409, "AlreadyExists", message}} = Kube.create_pod(kube, ns, manifest)
      assert message =~ ~s(pods "twice" already exists)
      assert {:ok, %{"metadata" => %{"uid" => ^uid}}} = Kube.get_pod(kube, ns, "twice")

      secret = %{"metadata" => %{"name" => "twice"}, "stringData" => %{"K" => "v"}}
      assert {:ok, %{"name" => "twice"}} = Kube.create_secret(kube, ns, secret, idempotent: true)
      assert {:ok, :already_exists} = Kube.create_secret(kube, ns, secret, idempotent: true)
    end

    test "a missing pod is a 404 with the server's message", %{kube: kube, namespace: ns} do
      assert {:error, {:api, 404, "NotFound", message}} = Kube.get_pod(kube, ns, "nope")
      assert message =~ ~s(pods "nope" not found)
    end

    test "a manifest the server rejects surfaces the field message (422)", %{
      kube: kube,
      namespace: ns
    } do
      manifest = LocalCluster.pod_manifest("Bad_Name", "sleeper:test")
      assert {:error, {:api, 422, "Invalid", message}} = Kube.create_pod(kube, ns, manifest)
      assert message =~ "metadata.name"

      manifest =
        put_in(LocalCluster.pod_manifest("ok", "sleeper:test"), ["spec", "containers"], [])

      assert {:error, {:api, 422, "Invalid", message}} = Kube.create_pod(kube, ns, manifest)
      assert message =~ "spec.containers"
    end

    # Each request is a task on the NIF's runtime, not a dirty scheduler held for the round
    # trip: 50 creates from 50 processes are in flight together and each gets its own reply.
    test "50 simultaneous creates each get their own answer", %{kube: kube, namespace: ns} do
      names = for i <- 1..50, do: "burst-#{i}"
      # Never scheduled: the simulated kubelet runs nothing for this test.
      labels = %{"sim-kubelet/fail" => "unschedulable"}

      results =
        names
        |> Task.async_stream(
          &Kube.create_pod(
            kube,
            ns,
            LocalCluster.pod_manifest(&1, "sleeper:test", labels: labels)
          ),
          max_concurrency: 50,
          timeout: 30_000
        )
        |> Enum.map(fn {:ok, result} -> result end)

      for {name, result} <- Enum.zip(names, results) do
        assert {:ok, %{"metadata" => %{"name" => ^name}}} = result
      end

      assert {:ok, pods} = Kube.list_pods(kube, ns)
      assert length(pods) == 50
    end

    test "a duplicate name is a 409", %{kube: kube, namespace: ns} do
      manifest = LocalCluster.pod_manifest("dup", "sleeper:test", args: ["300"])
      {:ok, _} = Kube.create_pod(kube, ns, manifest)
      assert {:error, {:api, 409, "AlreadyExists", _}} = Kube.create_pod(kube, ns, manifest)
    end
  end

  describe "secrets" do
    test "create returns metadata only; delete is idempotent", %{kube: kube, namespace: ns} do
      secret = %{
        "metadata" => %{"name" => "s1"},
        "stringData" => %{"RELEASE_COOKIE" => "very-secret"}
      }

      assert {:ok, %{"name" => "s1"} = meta} = Kube.create_secret(kube, ns, secret)
      refute inspect(meta) =~ "very-secret"
      refute inspect(meta) =~ Base.encode64("very-secret")

      assert {:ok, %{"data" => %{"RELEASE_COOKIE" => encoded}}} =
               Kube.request(kube, "GET", "/api/v1/namespaces/#{ns}/secrets/s1")

      assert Base.decode64!(encoded) == "very-secret"
      assert :ok = Kube.delete_secret(kube, ns, "s1")
      assert :ok = Kube.delete_secret(kube, ns, "s1")

      assert {:error, {:api, 404, _, _}} =
               Kube.request(kube, "GET", "/api/v1/namespaces/#{ns}/secrets/s1")
    end
  end

  describe "await_pod" do
    test "ready: Running with the pod IP the kubelet assigned", %{kube: kube, namespace: ns} do
      {:ok, _} =
        Kube.create_pod(kube, ns, LocalCluster.pod_manifest("p", "sleeper:test", args: ["300"]))

      assert {:ready, pod} = await!(kube, ns, "p")
      assert pod["status"]["phase"] == "Running"
      assert "127.0." <> _ = pod["status"]["podIP"]
      assert {:ok, %{"status" => %{"podIP" => ip}}} = Kube.get_pod(kube, ns, "p")
      assert ip == pod["status"]["podIP"]
    end

    test "a pod that is already ready is reported at once", %{kube: kube, namespace: ns} do
      {:ok, _} =
        Kube.create_pod(kube, ns, LocalCluster.pod_manifest("p", "sleeper:test", args: ["300"]))

      assert {:ready, _} = await!(kube, ns, "p")
      assert {:ready, _} = await!(kube, ns, "p")
    end

    test "image pull failure names the image", %{kube: kube, namespace: ns} do
      {:ok, _} = Kube.create_pod(kube, ns, LocalCluster.pod_manifest("p", "no-such-image:1"))

      assert {:failed,
              {:image_pull, %{reason: reason, image: "no-such-image:1", message: message}}} =
               await!(kube, ns, "p")

      assert reason in ["ErrImagePull", "ImagePullBackOff"]
      assert message =~ "no-such-image"
    end

    test "unschedulable fails with the scheduler's message, or waits when asked", %{
      kube: kube,
      namespace: ns
    } do
      labels = %{"sim-kubelet/fail" => "unschedulable"}

      {:ok, _} =
        Kube.create_pod(kube, ns, LocalCluster.pod_manifest("p", "sleeper:test", labels: labels))

      assert {:failed, {:unschedulable, message}} = await!(kube, ns, "p", unschedulable: :fail)
      assert message =~ "0/1 nodes are available"

      assert {:timeout, %{phase: :scheduling, detail: detail, waited_ms: waited}} =
               await!(kube, ns, "p", unschedulable: :wait, timeout: 1_000)

      assert detail =~ "0/1 nodes are available"
      assert waited >= 1_000
    end

    test "a missing secret is a container config error", %{kube: kube, namespace: ns} do
      manifest =
        LocalCluster.pod_manifest("p", "sleeper:test",
          args: ["300"],
          container: %{"envFrom" => [%{"secretRef" => %{"name" => "missing"}}]}
        )

      {:ok, _} = Kube.create_pod(kube, ns, manifest)

      assert {:failed,
              {:container_config, %{reason: "CreateContainerConfigError", message: message}}} =
               await!(kube, ns, "p")

      assert message =~ "missing"
    end

    # The simulated kubelet shows such a container running briefly before it dies, as a real
    # one may: with report_ready: false the watch goes on past "running" and sees the exit.
    test "a crash after start reports the exit code", %{kube: kube, namespace: ns} do
      labels = %{"sim-kubelet/fail" => "crash", "sim-kubelet/exit-code" => "42"}

      {:ok, _} =
        Kube.create_pod(kube, ns, LocalCluster.pod_manifest("p", "sleeper:test", labels: labels))

      assert {:failed, {:container_exited, %{container: "main", exit_code: 42, reason: "Error"}}} =
               await!(kube, ns, "p", report_ready: false)
    end

    test "OOMKilled", %{kube: kube, namespace: ns} do
      labels = %{"sim-kubelet/fail" => "oom"}

      {:ok, _} =
        Kube.create_pod(kube, ns, LocalCluster.pod_manifest("p", "sleeper:test", labels: labels))

      assert {:failed, {:container_exited, %{exit_code: 137, reason: "OOMKilled"}}} =
               await!(kube, ns, "p", report_ready: false)
    end

    test "report_ready: false times out in the running phase for a healthy pod", %{
      kube: kube,
      namespace: ns
    } do
      manifest = LocalCluster.pod_manifest("p", "sleeper:test", args: ["300"])
      {:ok, _} = Kube.create_pod(kube, ns, manifest)

      assert {:timeout, %{phase: :running}} =
               await!(kube, ns, "p", report_ready: false, timeout: 1_000)
    end

    test "a pod that completes before anyone looks is a terminal phase", %{
      kube: kube,
      namespace: ns
    } do
      {:ok, _} =
        Kube.create_pod(
          kube,
          ns,
          LocalCluster.pod_manifest("p", "shell:test", args: ["-c", "exit 0"])
        )

      eventually(fn ->
        match?({:ok, %{"status" => %{"phase" => "Succeeded"}}}, Kube.get_pod(kube, ns, "p"))
      end)

      assert {:failed, reason} = await!(kube, ns, "p")

      assert match?({:container_exited, %{exit_code: 0}}, reason) or
               match?({:pod_phase, "Succeeded", _}, reason)
    end

    test "a slow start times out in the container_start phase", %{kube: kube, namespace: ns} do
      labels = %{"sim-kubelet/start-delay-ms" => "60000"}

      {:ok, _} =
        Kube.create_pod(
          kube,
          ns,
          LocalCluster.pod_manifest("p", "sleeper:test", args: ["300"], labels: labels)
        )

      assert {:timeout, %{phase: :container_start, detail: detail}} =
               await!(kube, ns, "p", timeout: 1_500)

      assert detail =~ "ContainerCreating"
    end

    test "deletion during the wait is reported", %{kube: kube, namespace: ns} do
      labels = %{"sim-kubelet/fail" => "unschedulable"}

      {:ok, _} =
        Kube.create_pod(kube, ns, LocalCluster.pod_manifest("p", "sleeper:test", labels: labels))

      {:ok, await} = Kube.await_pod(kube, ns, "p", timeout: 30_000, unschedulable: :wait)
      :ok = Kube.delete_pod(kube, ns, "p", grace_period: 0)
      ref = await.ref
      assert_receive {:flame_k8s, ^ref, {:deleted, "p"}}, 10_000
    end

    test "a pod that does not exist is reported deleted", %{kube: kube, namespace: ns} do
      assert {:deleted, "ghost"} = await!(kube, ns, "ghost")
    end

    # Both shapes: a watch per await, and the awaits sharing one (the cancelled await leaves
    # the watch to the other).
    for {shape, opts} <- [{"", []}, {", shared watch", [label_selector: "flame-test/role=r"]}] do
      @shape_opts opts
      test "cancel: no message, and the task is gone#{shape}", %{kube: kube, namespace: ns} do
        labels = %{"sim-kubelet/fail" => "unschedulable", "flame-test/role" => "r"}
        manifest = LocalCluster.pod_manifest("p", "sleeper:test", labels: labels)
        {:ok, _} = Kube.create_pod(kube, ns, manifest)
        opts = [timeout: 60_000, unschedulable: :wait] ++ @shape_opts

        {:ok, await} = Kube.await_pod(kube, ns, "p", opts)
        # A second await on the same pod that is not cancelled: the deletion below reaches it,
        # so it proves the cancelled one would have had something to report.
        {:ok, witness} = Kube.await_pod(kube, ns, "p", opts)
        assert :ok = Kube.cancel_await(await)
        assert :ok = Kube.cancel_await(await)
        :ok = Kube.delete_pod(kube, ns, "p", grace_period: 0)

        witness_ref = witness.ref
        assert_receive {:flame_k8s, ^witness_ref, {:deleted, "p"}}, 10_000
        ref = await.ref
        refute_received {:flame_k8s, ^ref, _}
      end
    end

    test "the task ends when the caller dies", %{kube: kube, namespace: ns} do
      labels = %{"sim-kubelet/fail" => "unschedulable"}

      {:ok, _} =
        Kube.create_pod(kube, ns, LocalCluster.pod_manifest("p", "sleeper:test", labels: labels))

      test = self()

      {pid, monitor} =
        spawn_monitor(fn ->
          {:ok, _await} = Kube.await_pod(kube, ns, "p", timeout: 600_000, unschedulable: :wait)
          send(test, {:started, Kube.live_tasks()})
          receive do: (:never -> :ok)
        end)

      assert_receive {:started, live}, 5_000
      assert live >= 1
      Process.exit(pid, :kill)
      assert_receive {:DOWN, ^monitor, :process, ^pid, :killed}
      # Other async tests may run awaits too: count only ours by watching the total drop
      # below what it was while ours ran.
      eventually(fn -> Kube.live_tasks() < live end)
    end
  end

  # Awaits with a label selector share one watch of the namespace's pods that match it (one
  # per connection, namespace and selector); each still gets its own pod's results.
  describe "await_pod with a label selector" do
    @selector "flame-test/role=runner"
    @runner %{"flame-test/role" => "runner"}

    defp runner(name, image, opts \\ []) do
      LocalCluster.pod_manifest(
        name,
        image,
        Keyword.update(opts, :labels, @runner, &Map.merge(&1, @runner))
      )
    end

    defp shared_await(kube, ns, name, opts \\ []) do
      {:ok, await} =
        Kube.await_pod(
          kube,
          ns,
          name,
          Keyword.merge([timeout: 30_000, label_selector: @selector], opts)
        )

      await
    end

    test "one watch, each await its own result", %{kube: kube, namespace: ns} do
      {:ok, _} = Kube.create_pod(kube, ns, runner("ok", "sleeper:test", args: ["300"]))
      {:ok, _} = Kube.create_pod(kube, ns, runner("bad", "no-such-image:1"))

      crash = %{"sim-kubelet/fail" => "crash", "sim-kubelet/exit-code" => "42"}
      {:ok, _} = Kube.create_pod(kube, ns, runner("crash", "sleeper:test", labels: crash))

      ok = shared_await(kube, ns, "ok", report_ready: false, timeout: 5_000)
      bad = shared_await(kube, ns, "bad")
      crashed = shared_await(kube, ns, "crash", report_ready: false)

      assert_receive {:flame_k8s, ref, {:running, %{"metadata" => %{"name" => "ok"}}}}
                     when ref == ok.ref,
                     30_000

      # That await is subscribed (it has just heard from its watch): one watch for all three.
      assert Kube.open_watches(kube) == 1

      assert {:failed, {:image_pull, %{image: "no-such-image:1"}}} = final_result(bad.ref, true)

      assert {:failed, {:container_exited, %{exit_code: 42}}} = final_result(crashed.ref, false)

      assert {:timeout, %{phase: :running}} = final_result(ok.ref, false)
      eventually(fn -> Kube.open_watches(kube) == 0 end)
    end

    test "a pod created while the watch runs is seen; its deletion is reported", %{
      kube: kube,
      namespace: ns
    } do
      unschedulable = %{"sim-kubelet/fail" => "unschedulable"}

      {:ok, _} =
        Kube.create_pod(kube, ns, runner("keeper", "sleeper:test", labels: unschedulable))

      keeper = shared_await(kube, ns, "keeper", unschedulable: :wait, timeout: 60_000)

      {:ok, _} = Kube.create_pod(kube, ns, runner("late", "sleeper:test", args: ["300"]))
      late = shared_await(kube, ns, "late", report_ready: false, timeout: 60_000)

      assert_receive {:flame_k8s, ref, {:running, %{"metadata" => %{"name" => "late"}}}}
                     when ref == late.ref,
                     30_000

      :ok = Kube.delete_pod(kube, ns, "late", grace_period: 0)
      assert {:deleted, "late"} = final_result(late.ref, false)
      assert Kube.open_watches(kube) == 1
      Kube.cancel_await(keeper)
      eventually(fn -> Kube.open_watches(kube) == 0 end)
    end

    test "a pod that does not exist is gone: from the watch's list, or by one read", %{
      kube: kube,
      namespace: ns
    } do
      # The first await starts the watch: its list settles it.
      ghost = shared_await(kube, ns, "ghost")
      assert {:deleted, "ghost"} = final_result(ghost.ref, true)

      {:ok, _} = Kube.create_pod(kube, ns, runner("keeper", "sleeper:test", args: ["300"]))
      keeper = shared_await(kube, ns, "keeper", report_ready: false, timeout: 60_000)
      # The watch has listed (and runs on) once it has shown the keeper running.
      assert_receive {:flame_k8s, ref, {:running, _}} when ref == keeper.ref, 30_000

      # A later await of a pod the watch never shows: no list to settle it, one read does.
      started = System.monotonic_time(:millisecond)
      ghost = shared_await(kube, ns, "ghost2")
      assert {:deleted, "ghost2"} = final_result(ghost.ref, true)
      assert (System.monotonic_time(:millisecond) - started) in 5_000..10_000

      {:ok, _} = Kube.create_pod(kube, ns, LocalCluster.pod_manifest("stray", "sleeper:test"))
      stray = shared_await(kube, ns, "stray")
      assert {:error, {:config, message}} = final_result(stray.ref, true)
      assert message =~ "#{ns}/stray"
      assert message =~ @selector
      Kube.cancel_await(keeper)
    end

    test "without watch rights: the 403 for every await, and the next one tries again", %{
      kube: kube,
      namespace: ns
    } do
      rules = [%{"apiGroups" => [""], "resources" => ["pods"], "verbs" => ["get"]}]
      limited = LocalCluster.service_account_kube!(kube, ns, "nowatch", rules)
      a = shared_await(limited, ns, "a")
      b = shared_await(limited, ns, "b")

      for await <- [a, b] do
        assert {:error, {:api, 403, "Forbidden", message}} = final_result(await.ref, true)
        assert message =~ ~s(cannot list resource "pods")
      end

      assert Kube.open_watches(limited) == 0
      c = shared_await(limited, ns, "c")
      assert {:error, {:api, 403, "Forbidden", _}} = final_result(c.ref, true)
    end
  end

  describe "RBAC" do
    test "a token without pods/create gets a 403 naming verb and resource", %{
      kube: kube,
      namespace: ns
    } do
      rules = [
        %{"apiGroups" => [""], "resources" => ["pods"], "verbs" => ["get", "list", "watch"]}
      ]

      limited = LocalCluster.service_account_kube!(kube, ns, "limited", rules)

      assert {:ok, []} = Kube.list_pods(limited, ns)

      assert {:error, {:api, 403, "Forbidden", message}} =
               Kube.create_pod(limited, ns, LocalCluster.pod_manifest("p", "sleeper:test"))

      assert message =~ ~s(cannot create resource "pods")
      assert message =~ "system:serviceaccount:#{ns}:limited"

      assert {:error, {:api, 403, "Forbidden", message}} =
               Kube.create_secret(limited, ns, %{"metadata" => %{"name" => "s"}})

      assert message =~ ~s(cannot create resource "secrets")
    end

    test "an await without watch rights fails fast with the 403", %{kube: kube, namespace: ns} do
      rules = [%{"apiGroups" => [""], "resources" => ["pods"], "verbs" => ["get"]}]
      limited = LocalCluster.service_account_kube!(kube, ns, "nowatch", rules)
      assert {:error, {:api, 403, "Forbidden", message}} = await!(limited, ns, "p")
      assert message =~ ~s(cannot list resource "pods")
    end
  end

  # The API server "goes away" behind a TCP proxy that resets every connection and refuses new
  # ones, which is what a client sees of a stopped server, without stopping the one server the
  # whole suite shares.
  describe "API server lost mid-watch" do
    for {shape, opts} <- [{"", []}, {", shared watch", [label_selector: "flame-test/role=r"]}] do
      @shape_opts opts
      test "the await resumes when the server comes back#{shape}", %{kube: kube, namespace: ns} do
        rules = [
          %{"apiGroups" => [""], "resources" => ["pods"], "verbs" => ["get", "list", "watch"]}
        ]

        proxy = TcpProxy.start!(URI.parse(LocalCluster.info().server).port)
        via_proxy = LocalCluster.service_account_kube!(kube, ns, "watcher", rules, proxy.url)

        {:ok, _} =
          Kube.create_pod(
            kube,
            ns,
            LocalCluster.pod_manifest("p", "sleeper:test",
              args: ["300"],
              labels: %{"sim-kubelet/start-delay-ms" => "2000", "flame-test/role" => "r"}
            )
          )

        {:ok, await} = Kube.await_pod(via_proxy, ns, "p", [timeout: 30_000] ++ @shape_opts)
        TcpProxy.await_connections(proxy, 1)
        TcpProxy.cut(proxy)
        TcpProxy.restore(proxy)

        ref = await.ref
        assert_receive {:flame_k8s, ^ref, {:ready, _pod}}, 30_000
      end
    end

    # A connection that took the watch's LIST and will never answer (half-open once its TLS
    # handshake is done): the LIST gives up after the request timeout, the watcher lists
    # again on a new connection, and the await gets its pod. Without a client-side bound on
    # the LIST, it waits forever and every await on the watch times out.
    test "a half-open connection that took the watch's list does not hang the watch", %{
      kube: kube,
      namespace: ns
    } do
      rules = [
        %{"apiGroups" => [""], "resources" => ["pods"], "verbs" => ["get", "list", "watch"]}
      ]

      token = LocalCluster.service_account_token!(kube, ns, "watcher", rules)
      proxy = HalfOpenProxy.start!(URI.parse(LocalCluster.info().server).port)

      {:ok, via_proxy} =
        Kube.connect(
          url: proxy.url,
          ca_cert_pem: LocalCluster.info().ca_pem,
          token: token,
          request_timeout: 2_000
        )

      labels = %{"flame-test/role" => "half-open"}

      {:ok, _} =
        Kube.create_pod(
          kube,
          ns,
          LocalCluster.pod_manifest("p", "sleeper:test", args: ["300"], labels: labels)
        )

      assert {:ready, %{"metadata" => %{"name" => "p"}}} =
               await!(via_proxy, ns, "p",
                 timeout: 20_000,
                 label_selector: "flame-test/role=half-open"
               )

      assert HalfOpenProxy.connections(proxy) >= 2
    end

    # Every connection goes half-open: the await's timeout says why, not just where.
    test "a watch that is never answered names the trouble when its await times out", %{
      kube: kube,
      namespace: ns
    } do
      rules = [
        %{"apiGroups" => [""], "resources" => ["pods"], "verbs" => ["get", "list", "watch"]}
      ]

      token = LocalCluster.service_account_token!(kube, ns, "watcher", rules)
      proxy = HalfOpenProxy.start!(URI.parse(LocalCluster.info().server).port, 1_000)

      {:ok, via_proxy} =
        Kube.connect(
          url: proxy.url,
          ca_cert_pem: LocalCluster.info().ca_pem,
          token: token,
          request_timeout: 1_000
        )

      assert {:timeout, %{phase: :scheduling, detail: detail}} =
               await!(via_proxy, ns, "p", timeout: 4_000, label_selector: "flame-test/role=x")

      assert detail =~ "no answer from the API server within 1000 ms (the request timeout)"
    end

    test "the await reports the lost connection and never hangs past its timeout", %{
      kube: kube,
      namespace: ns
    } do
      rules = [
        %{"apiGroups" => [""], "resources" => ["pods"], "verbs" => ["get", "list", "watch"]}
      ]

      proxy = TcpProxy.start!(URI.parse(LocalCluster.info().server).port)
      via_proxy = LocalCluster.service_account_kube!(kube, ns, "watcher", rules, proxy.url)

      labels = %{"sim-kubelet/fail" => "unschedulable"}

      {:ok, _} =
        Kube.create_pod(kube, ns, LocalCluster.pod_manifest("p", "sleeper:test", labels: labels))

      {:ok, await} = Kube.await_pod(via_proxy, ns, "p", timeout: 3_000, unschedulable: :wait)
      TcpProxy.await_connections(proxy, 1)
      TcpProxy.cut(proxy)

      ref = await.ref
      assert_receive {:flame_k8s, ^ref, {:timeout, %{phase: :scheduling, detail: detail}}}, 10_000
      assert is_binary(detail)
    end
  end
end

defmodule FLAMEK8sBackend.KubeClusterWatchCountTest do
  # What the API server itself counts: its watches of pods open while 50 awaits run, with a
  # watch per await (no selector: how every await worked before) and with one shared watch.
  # Not async: ExUnit runs it after the async modules, so no other test opens watches meanwhile.
  use FLAMEK8sBackend.Test.ClusterCase, async: false

  @moduletag :integration
  @moduletag timeout: 180_000

  @awaits 50
  @selector "flame-test/role=runner"

  # Pod watches open on the API server, from its /metrics (every scope: the simulated kubelet
  # has one of its own).
  defp server_pod_watches(kube) do
    {:ok, text} = Kube.request(kube, "GET", "/metrics")

    for line <- String.split(text, "\n"),
        String.starts_with?(line, "apiserver_longrunning_requests{"),
        line =~ ~s(resource="pods"),
        line =~ ~s(verb="WATCH"),
        reduce: 0 do
      sum -> sum + (line |> String.split(" ") |> List.last() |> String.to_integer())
    end
  end

  # Starts the awaits; returns them once every one has reported its pod running (so each has
  # subscribed and its watch has listed), then how many watches the server counts.
  defp run_awaits(kube, ns, opts) do
    awaits =
      for i <- 1..@awaits do
        {:ok, await} =
          Kube.await_pod(kube, ns, "p#{i}", [timeout: 120_000, report_ready: false] ++ opts)

        await
      end

    for await <- awaits do
      ref = await.ref
      assert_receive {:flame_k8s, ^ref, {:running, _}}, 60_000
    end

    awaits
  end

  # The pod watches the API server has open while the awaits of `opts` run, beyond those it
  # had before them, and the watches the client counts. A watch of another test's runner
  # (followed until the runner goes, which may be after the async tests) can open or close
  # meanwhile: a measurement whose before and after differ is taken again.
  defp watches_during(admin, kube, ns, opts, expected) do
    Enum.reduce_while(1..5, nil, fn _, _ ->
      before = server_pod_watches(admin)
      awaits = run_awaits(kube, ns, opts)
      # Each await's watch starts after its list: wait for the last ones to open.
      during = settle(fn -> server_pod_watches(admin) end, &(&1 - before == expected))
      measured = {during - before, Kube.open_watches(kube)}
      Enum.each(awaits, &Kube.cancel_await/1)
      eventually(fn -> Kube.open_watches(kube) == 0 end)

      if settle(fn -> server_pod_watches(admin) end, &(&1 == before)) == before,
        do: {:halt, measured},
        else: {:cont, measured}
    end)
  end

  # `read.()` once `done?` holds for it, or its last value after 10 s.
  defp settle(read, done?, deadline \\ System.monotonic_time(:millisecond) + 10_000) do
    value = read.()

    if done?.(value) or System.monotonic_time(:millisecond) > deadline do
      value
    else
      Process.sleep(20)
      settle(read, done?, deadline)
    end
  end

  test "50 awaits: 50 watches on the API server one per pod, 1 with a label selector", %{
    kube: admin,
    namespace: ns
  } do
    for i <- 1..@awaits do
      manifest =
        LocalCluster.pod_manifest("p#{i}", "sleeper:test",
          args: ["300"],
          labels: %{"flame-test/role" => "runner"}
        )

      {:ok, _} = Kube.create_pod(admin, ns, manifest)
    end

    kube = LocalCluster.kube!()
    assert watches_during(admin, kube, ns, [], @awaits) == {@awaits, @awaits}
    assert watches_during(admin, kube, ns, [label_selector: @selector], 1) == {1, 1}

    IO.puts(
      "\npod watches open on the API server during #{@awaits} concurrent awaits: " <>
        "one per await #{@awaits}, with a label selector 1"
    )
  end
end

defmodule FLAMEK8sBackend.KubeClusterWatchStartTest do
  # What one start of a shared watch costs the API server, as boots one after another start
  # it: each boot's await is then the watch's only one, so each starts it (list, then watch
  # from the list's resourceVersion) and its end stops it. Counted where it lands, in the API
  # server's /metrics: the LISTs, the consistent reads among them (a list without a
  # resourceVersion: the API server first reads etcd's current revision, a quorum read, then
  # waits for its watch cache to reach it), and the API server's reads of etcd for pods (that
  # revision read is an etcd "get"). Not async: the counters are the whole server's.
  use FLAMEK8sBackend.Test.ClusterCase, async: false

  @moduletag :integration

  @starts 5
  @selector "flame-test/role=one-after-another"

  # Sum of the samples of `metric` whose labels include every pair of `labels`.
  defp sum(text, metric, labels) do
    for line <- String.split(text, "\n"),
        String.starts_with?(line, metric <> "{"),
        Enum.all?(labels, fn {k, v} -> line =~ ~s(#{k}="#{v}") end),
        reduce: 0 do
      acc ->
        {value, _} = line |> String.split(" ") |> List.last() |> Float.parse()
        acc + round(value)
    end
  end

  defp counters(kube) do
    {:ok, text} = Kube.request(kube, "GET", "/metrics")

    %{
      lists: sum(text, "apiserver_request_total", verb: "LIST", resource: "pods"),
      consistent_reads:
        sum(text, "apiserver_watch_cache_consistent_read_total", resource: "pods"),
      etcd_reads:
        Enum.sum(
          for op <- ["get", "list", "listWithCount"],
              do: sum(text, "etcd_requests_total", operation: op, resource: "pods")
        )
    }
  end

  test "boots one after another: each watch start lists from the API server's cache, without a quorum read",
       %{kube: admin, namespace: ns} do
    for i <- 1..@starts do
      manifest =
        LocalCluster.pod_manifest("s#{i}", "sleeper:test",
          args: ["300"],
          labels: %{"flame-test/role" => "one-after-another"}
        )

      {:ok, _} = Kube.create_pod(admin, ns, manifest)
    end

    # The simulated kubelet's status updates are done before counting starts.
    eventually(
      fn ->
        {:ok, pods} = Kube.list_pods(admin, ns)
        Enum.all?(pods, &(&1["status"]["phase"] == "Running"))
      end,
      30_000
    )

    kube = LocalCluster.kube!()
    before = counters(admin)

    for i <- 1..@starts do
      {:ok, %{ref: ref}} =
        Kube.await_pod(kube, ns, "s#{i}", timeout: 30_000, label_selector: @selector)

      assert_receive {:flame_k8s, ^ref, {:ready, _pod}}, 30_000
      # The watch ended with its only await: the next await starts a new one.
      eventually(fn -> Kube.open_watches(kube) == 0 end)
    end

    after_starts = counters(admin)
    delta = Map.new(after_starts, fn {k, v} -> {k, v - before[k]} end)

    IO.puts(
      "\n#{@starts} watch starts one after another: LIST pods #{delta.lists}, consistent " <>
        "reads of pods #{delta.consistent_reads}, etcd reads for pods #{delta.etcd_reads}"
    )

    assert delta.lists == @starts
    assert delta.consistent_reads == 0
    assert delta.etcd_reads == 0
  end
end
