defmodule FLAMEK8sBackend.KubeTest do
  # Tests of the bridge that need no API server.
  use ExUnit.Case, async: true

  @moduletag :unit

  alias FLAMEK8sBackend.{Kube, Native}

  @token "s3cr3t-token-value"

  # Nothing listens on port 1 of loopback: connections are refused at once.
  defp refused_kube(opts \\ []) do
    {:ok, kube} =
      Kube.connect([url: "https://127.0.0.1:1", token: @token, request_timeout: 2_000] ++ opts)

    kube
  end

  @pod %{
    "metadata" => %{"name" => "p"},
    "spec" => %{"containers" => [%{"name" => "c", "image" => "i"}]}
  }

  test "the NIF is loaded and answers" do
    assert Native.noop() == :ok
    assert is_integer(Kube.live_tasks())
  end

  describe "connect/1" do
    test "explicit: nothing is sent until the first request" do
      kube = refused_kube()
      assert kube.server =~ "127.0.0.1:1"
      assert kube.request_timeout == 2_000
    end

    test "inspect never shows the token" do
      kube = refused_kube()
      refute inspect(kube) =~ @token
      refute inspect(kube, structs: false) =~ @token
      assert inspect(kube) =~ "#FLAMEK8sBackend.Kube<https://127.0.0.1:1"
    end

    test "a missing kubeconfig is a config error naming the file" do
      assert {:error, {:config, message}} = Kube.connect(kubeconfig: "/nonexistent/kubeconfig")
      assert message =~ "/nonexistent/kubeconfig"
    end

    test "in-cluster outside a cluster is a config error" do
      assert {:error, {:config, message}} = Kube.connect(mode: :in_cluster)
      assert is_binary(message)
    end

    test "an unknown context is a config error naming it" do
      path = Path.join(System.tmp_dir!(), "kubeconfig-#{System.unique_integer([:positive])}")

      File.write!(path, """
      apiVersion: v1
      kind: Config
      clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
      users: [{name: u, user: {token: #{@token}}}]
      contexts: [{name: ctx, context: {cluster: c, user: u}}]
      current-context: ctx
      """)

      assert {:error, {:config, message}} = Kube.connect(kubeconfig: path, context: "nope")
      assert message =~ "nope"
      refute message =~ @token
      assert {:ok, kube} = Kube.connect(kubeconfig: path)
      refute inspect(kube) =~ @token
    end

    # A bearer token never travels in cleartext over a network: refused, naming the URL (and
    # never the token), whether the URL and token are given or come from a kubeconfig.
    test "credentials are never sent over plain http://, except to a loopback address" do
      for url <- ["http://10.0.0.1:8080", "http://kube.example.com"] do
        assert {:error, {:config, message}} = Kube.connect(url: url, token: @token)
        assert message =~ ~s("#{url}" is plain http)
        assert message =~ "https://"
        refute message =~ @token
      end

      path = Path.join(System.tmp_dir!(), "kubeconfig-#{System.unique_integer([:positive])}")

      File.write!(path, """
      apiVersion: v1
      kind: Config
      clusters: [{name: c, cluster: {server: "http://10.0.0.1:8080"}}]
      users: [{name: u, user: {token: #{@token}}}]
      contexts: [{name: ctx, context: {cluster: c, user: u}}]
      current-context: ctx
      """)

      assert {:error, {:config, message}} = Kube.connect(kubeconfig: path)
      assert message =~ ~s("http://10.0.0.1:8080")
      refute message =~ @token

      # Nothing secret to send (a kubectl proxy), or a connection that never leaves the host.
      assert {:ok, _} = Kube.connect(url: "http://10.0.0.1:8080")
      assert {:ok, _} = Kube.connect(url: "http://127.0.0.1:8001", token: @token)
      assert {:ok, _} = Kube.connect(url: "http://[::1]:8001", token: @token)
    end
  end

  describe "requests to an unreachable server" do
    test "give a connect error" do
      kube = refused_kube()
      assert {:error, {:connect, message}} = Kube.get_pod(kube, "default", "p")
      assert is_binary(message)
      refute message =~ @token
      assert {:error, {:connect, _}} = Kube.list_pods(kube, "default")
      assert {:error, {:connect, _}} = Kube.delete_pod(kube, "default", "p")
      assert {:error, {:connect, _}} = Kube.delete_secret(kube, "default", "s")
      assert {:error, {:connect, _}} = Kube.request(kube, "GET", "/version")
    end

    test "a server that accepts but never answers gives a timeout naming the limit" do
      {:ok, listen} = :gen_tcp.listen(0, [:binary, active: false, ip: {127, 0, 0, 1}])
      {:ok, port} = :inet.port(listen)

      {:ok, kube} =
        Kube.connect(url: "https://127.0.0.1:#{port}", token: @token, request_timeout: 300)

      assert {:error, reason} = Kube.get_pod(kube, "default", "p")
      assert reason in [{:timeout, 300}] or match?({:connect, _}, reason)
      :gen_tcp.close(listen)
    end

    test "an await reports the transport trouble when its timeout elapses" do
      kube = refused_kube()

      for opts <- [[], [label_selector: "app=runner"]] do
        assert {:ok, await} = Kube.await_pod(kube, "default", "p", [timeout: 300] ++ opts)
        ref = await.ref

        assert_receive {:flame_k8s, ^ref,
                        {:timeout, %{phase: :scheduling, waited_ms: waited, detail: detail}}},
                       5_000

        assert waited >= 300
        assert detail =~ "Connection refused"
        refute detail =~ @token
      end
    end
  end

  describe "manifests" do
    test "invalid manifests are rejected before anything is sent, naming the path" do
      kube = refused_kube()

      assert {:error, {:invalid_manifest, message}} =
               Kube.create_pod(
                 kube,
                 "default",
                 put_in(@pod, ["metadata", "labels"], %{"a" => {:tuple}})
               )

      assert message =~ "metadata.labels.a"

      assert {:error, {:invalid_manifest, message}} =
               Kube.create_pod(kube, "default", put_in(@pod, ["spec", "containers"], "nope"))

      assert message =~ "spec.containers"

      assert {:error, {:invalid_manifest, message}} =
               Kube.create_pod(kube, "default", %{"a" => self()})

      assert message =~ "a"

      assert {:error, {:invalid_manifest, message}} =
               Kube.create_pod(kube, "default", %{"a" => <<255, 0>>})

      assert message =~ "a"

      assert {:error, {:invalid_manifest, message}} =
               Kube.create_pod(kube, "default", %{{:k} => 1})

      assert is_binary(message)

      assert {:error, {:invalid_manifest, message}} =
               Kube.create_pod(kube, "default", put_in(@pod, ["metadata", "namespace"], "other"))

      assert message =~ "other"
    end

    test "unknown fields are refused, never dropped" do
      kube = refused_kube()
      manifest = put_in(@pod, ["spec", "node_selector"], %{"pool" => "flame"})

      assert {:error, {:invalid_manifest, "spec.node_selector: unknown field"}} =
               Kube.create_pod(kube, "default", manifest)

      env = [%{"name" => "A", "value_from" => %{"fieldRef" => %{"fieldPath" => "status.podIP"}}}]

      manifest =
        put_in(@pod, ["spec", "containers"], [%{"name" => "c", "image" => "i", "env" => env}])

      assert {:error, {:invalid_manifest, message}} = Kube.create_pod(kube, "default", manifest)
      assert message =~ "spec.containers[0].env[0].value_from: unknown field"
    end

    test "atom keys are accepted (and reach the network step)" do
      kube = refused_kube()
      manifest = %{metadata: %{name: "p"}, spec: %{containers: [%{name: "c", image: "i"}]}}
      assert {:error, {:connect, _}} = Kube.create_pod(kube, "default", manifest)
    end

    test "deeply nested terms are rejected, not overflowed" do
      kube = refused_kube()
      deep = Enum.reduce(1..10_000, "leaf", fn _, acc -> %{"x" => acc} end)

      assert {:error, {:invalid_manifest, _}} =
               Kube.create_pod(kube, "default", %{"metadata" => deep})
    end
  end

  describe "idempotent creates" do
    test "need a metadata.name of their own, not generateName" do
      kube = refused_kube()
      generated = put_in(@pod, ["metadata"], %{"generateName" => "p-"})

      assert {:error, {:invalid_manifest, "metadata.name: " <> _}} =
               Kube.create_pod(kube, "d", generated, idempotent: true)

      # Without it, generateName is fine (and reaches the network step).
      assert {:error, {:connect, _}} = Kube.create_pod(kube, "d", generated)
    end

    test "a create refused before it went out is a plain error: nothing to follow up" do
      kube = refused_kube()

      for idempotent <- [false, true] do
        assert {:error, {:connect, _}} = Kube.create_pod(kube, "d", @pod, idempotent: idempotent)
      end
    end
  end

  # Kube trusts its callers (their input went through FLAMEK8sBackend.Options): the NIF keeps
  # what protects the VM and the request URL, and names the argument it refuses.
  describe "the NIF's arguments" do
    # A path goes into the request as it is: whatever it holds, the request goes to the
    # connection's own server (refused here) or is refused before it exists.
    test "a path no request can hold is refused, and never names another server" do
      kube = refused_kube()

      for bad <- ["//evil.example/x", "/a b", "/a#frag", "/a\nb", "/<x>", "", "api"] do
        case Kube.request(kube, "GET", bad) do
          {:error, {:connect, message}} -> refute message =~ "evil"
          {:error, {:invalid_manifest, "request: " <> _}} -> :ok
        end
      end

      assert_raise ArgumentError, ~r/^path: expected a UTF-8 binary/, fn ->
        Native.request(kube.resource, :get, <<?/, 255>>, nil, nil, make_ref())
      end

      assert {:error, {:connect, _}} = Kube.get_pod(kube, "kube-system", "a.b_c:d-1")

      assert {:error, {:connect, _}} =
               Kube.request(kube, "GET", "/api/v1/pods?limit=1&labelSelector=a%3Db,c&x={y}|^")
    end

    # The NIF, called directly, refuses what could not make a request URL (a name of 64 KB
    # made an {:internal, "building request: ..."} error): an ArgumentError naming it.
    test "the NIF refuses names and selectors no URL can hold, naming them" do
      c = refused_kube().resource
      ref = make_ref()
      long = String.duplicate("a", 70_000)

      for bad <- [long, String.duplicate("a", 254), "a/b", "a?b", "..", "", "a\0b"] do
        assert_raise ArgumentError, ~r/^name: expected a Kubernetes name/, fn ->
          Native.get_pod(c, "d", bad, ref)
        end

        assert_raise ArgumentError, ~r/^namespace: expected a Kubernetes name/, fn ->
          Native.delete(c, :pod, bad, "p", nil, ref)
        end
      end

      assert_raise ArgumentError,
                   ~r/^label_selector: expected a UTF-8 binary of at most 16384/,
                   fn ->
                     Native.list_pods(c, "d", long, ref)
                   end

      await = %{timeout_ms: 100, unschedulable: :fail, report_ready: true, label_selector: long}

      assert_raise ArgumentError, ~r/^opts: expected/, fn ->
        Native.await_pod(c, "d", "p", await, ref)
      end

      {:ok, _} = Native.list_pods(c, "d", String.duplicate("a", 16_384), ref)
      assert_receive {:flame_k8s, ^ref, {:error, {:connect, _}}}, 5_000
    end

    test ":max_concurrent_creates reaches the client (default 32)" do
      assert %{max_concurrent_creates: 32} = Native.client_info(refused_kube().resource)
      kube = refused_kube(max_concurrent_creates: 7)
      assert %{max_concurrent_creates: 7} = Native.client_info(kube.resource)
    end

    # Options maps gained keys (:max_concurrent_creates, :label_selector): a map without them
    # still decodes, with their defaults.
    test "the NIFs take options maps without their newer keys" do
      ref = make_ref()

      opts = %{
        mode: :explicit,
        kubeconfig: nil,
        context: nil,
        url: "https://127.0.0.1:1",
        ca_cert_pem: nil,
        token: nil,
        insecure_skip_tls_verify: false,
        request_timeout_ms: 1_000
      }

      {:ok, _} = Native.connect(opts, ref)
      assert_receive {:flame_k8s, ^ref, {:ok, client}}, 5_000
      assert %{max_concurrent_creates: 32} = Native.client_info(client)

      opts = %{timeout_ms: 100, unschedulable: :fail, report_ready: true}
      {:ok, _} = Native.await_pod(client, "d", "p", opts, ref)
      assert_receive {:flame_k8s, ^ref, {:timeout, %{phase: :scheduling}}}, 5_000
    end

    test "garbage into every NIF raises or returns an error, and the VM lives on" do
      kube = refused_kube()

      garbage = [
        nil,
        1,
        -1,
        1.5,
        "x",
        :atom,
        [],
        [1 | 2],
        {},
        {1, 2},
        %{},
        self(),
        make_ref(),
        fn -> 1 end,
        <<255>>,
        kube.resource
      ]

      ref = make_ref()

      calls = [
        fn g -> Native.connect(g, ref) end,
        fn g -> Native.client_info(g) end,
        fn g -> Native.get_pod(g, g, g, g) end,
        fn g -> Native.get_pod(kube.resource, g, "p", ref) end,
        fn g -> Native.get_pod(kube.resource, "d", "p", g) end,
        fn g -> Native.create(kube.resource, :pod, "d", g, 0, false, ref) end,
        fn g -> Native.create(kube.resource, g, "d", %{}, 0, false, ref) end,
        fn g -> Native.create(kube.resource, :pod, "d", %{}, g, false, ref) end,
        fn g -> Native.create(kube.resource, :pod, "d", %{}, 0, g, ref) end,
        fn g -> Native.create(g, g, g, g, g, g, g) end,
        fn g -> Native.delete(kube.resource, :pod, "d", "p", g, ref) end,
        fn g -> Native.delete(g, :secret, "d", "s", nil, ref) end,
        fn g -> Native.list_pods(kube.resource, "d", g, ref) end,
        fn g -> Native.request(kube.resource, g, "/", nil, nil, ref) end,
        fn g -> Native.request(kube.resource, :get, g, nil, nil, ref) end,
        fn g -> Native.request(kube.resource, :get, "/", g, g, ref) end,
        fn g -> Native.await_pod(kube.resource, "d", "p", g, g) end,
        fn g -> Native.await_pod(g, g, g, g, g) end,
        fn g ->
          Native.await_pod(
            kube.resource,
            "d",
            "p",
            %{timeout_ms: 1, unschedulable: :fail, report_ready: true, label_selector: g},
            ref
          )
        end,
        fn g -> if is_integer(Native.open_watches(g)), do: :ok end,
        fn g -> Native.cancel(g) end
      ]

      for call <- calls, g <- garbage do
        try do
          case call.(g) do
            {:error, _} -> :ok
            {:ok, _} -> :ok
            :ok -> :ok
            %{} -> :ok
            other -> flunk("unexpected #{inspect(other)} for #{inspect(g)}")
          end
        rescue
          ArgumentError -> :ok
          ErlangError -> :ok
        end
      end

      assert Native.noop() == :ok
    end
  end
end

defmodule FLAMEK8sBackend.KubeTaskTest do
  # How requests run: as tasks on the NIF's runtime, answered by message, cancelled when the
  # caller stops waiting. Not async: these tests count the NIF's live tasks, which are global.
  use ExUnit.Case, async: false

  @moduletag :unit

  Code.require_file("support/fake_api_server.exs", __DIR__)

  import FLAMEK8sBackend.Test.ClusterCase, only: [eventually: 2]

  alias FLAMEK8sBackend.{Kube, Native}
  alias FLAMEK8sBackend.Test.FakeApiServer

  # A server that accepts connections (the kernel does, from the backlog) and never answers:
  # every request to it stays in flight until its timeout.
  defp silent_kube(request_timeout) do
    {:ok, listen} = :gen_tcp.listen(0, [:binary, active: false, ip: {127, 0, 0, 1}, backlog: 256])

    {:ok, port} = :inet.port(listen)
    on_exit(fn -> :gen_tcp.close(listen) end)

    {:ok, kube} =
      Kube.connect(url: "https://127.0.0.1:#{port}", token: "t", request_timeout: request_timeout)

    kube
  end

  # The live-task count once it has stopped changing: tasks of tests that ran before (their
  # callers gone) may still be ending, and would make a count taken now drift.
  defp settled_live_tasks(last \\ nil, same \\ 0) do
    case Kube.live_tasks() do
      ^last when same >= 5 -> last
      ^last -> Process.sleep(20) && settled_live_tasks(last, same + 1)
      other -> Process.sleep(20) && settled_live_tasks(other, 0)
    end
  end

  test "the NIF returns at once; the reply comes as a message tagged with the caller's ref" do
    kube = silent_kube(60_000)
    ref = make_ref()
    {micros, {:ok, handle}} = :timer.tc(fn -> Native.get_pod(kube.resource, "d", "p", ref) end)
    assert micros < 50_000
    assert :ok = Native.cancel(handle)
    assert :ok = Native.cancel(handle)
    refute_receive {:flame_k8s, ^ref, _}, 200
  end

  # What Kube relies on when it stops waiting: the cancel says whether a reply is on its way.
  test "a cancel after the reply says it was sent" do
    {:ok, kube} = Kube.connect(url: "https://127.0.0.1:1", token: "t")
    ref = make_ref()
    {:ok, handle} = Native.get_pod(kube.resource, "d", "p", ref)
    assert_receive {:flame_k8s, ^ref, {:error, {:connect, _}}}, 5_000
    assert :sent = Native.cancel(handle)
    assert :sent = Native.cancel(handle)
  end

  # With the requests on dirty IO schedulers (10 of them by default), 50 requests that each
  # wait a second took 5 seconds; as tasks, they all wait at the same time.
  test "50 simultaneous requests are all in flight at once, holding no scheduler" do
    kube = silent_kube(1_000)
    base = settled_live_tasks()
    test = self()

    started = System.monotonic_time(:millisecond)

    for i <- 1..50 do
      spawn_link(fn -> send(test, {:done, i, Kube.get_pod(kube, "d", "p#{i}")}) end)
    end

    eventually(fn -> Kube.live_tasks() >= base + 50 end, 2_000)

    for i <- 1..50 do
      assert_receive {:done, ^i, {:error, reason}}, 5_000
      assert reason == {:timeout, 1_000} or match?({:connect, _}, reason)
    end

    assert System.monotonic_time(:millisecond) - started < 3_000
    eventually(fn -> Kube.live_tasks() <= base end, 2_000)
  end

  test "a caller that exits mid-request cancels its task" do
    kube = silent_kube(60_000)
    base = settled_live_tasks()
    test = self()

    {pid, monitor} =
      spawn_monitor(fn ->
        send(test, :calling)
        Kube.create_pod(kube, "d", %{"metadata" => %{"name" => "p"}})
      end)

    assert_receive :calling
    eventually(fn -> Kube.live_tasks() == base + 1 end, 2_000)
    Process.exit(pid, :kill)
    assert_receive {:DOWN, ^monitor, :process, ^pid, :killed}
    eventually(fn -> Kube.live_tasks() <= base end, 2_000)
  end

  test "finished requests and awaits leave no task behind" do
    {:ok, kube} = Kube.connect(url: "https://127.0.0.1:1", token: "t", request_timeout: 2_000)

    base = settled_live_tasks()
    assert {:error, {:connect, _}} = Kube.get_pod(kube, "d", "p")
    assert {:error, {:connect, _}} = Kube.delete_pod(kube, "d", "p")
    assert {:error, {:invalid_manifest, _}} = Kube.create_secret(kube, "d", %{"a" => self()})
    {:ok, await} = Kube.await_pod(kube, "d", "p", timeout: 200)
    ref = await.ref
    assert_receive {:flame_k8s, ^ref, {:timeout, _}}, 5_000
    eventually(fn -> Kube.live_tasks() <= base end, 2_000)
  end

  describe "deep JSON from the server" do
    # serde_json parses a response with its default recursion limit (128 levels of arrays and
    # objects), and the NIF turns what it parsed into terms without recursion: an answer
    # nested deeper than that limit is a decode error, never a stack overflow.
    defp nested(depth, leaf) do
      {open, close} = if rem(depth, 2) == 0, do: {~s({"a":), "}"}, else: {"[", "]"}
      if depth == 0, do: leaf, else: [open, nested(depth - 1, leaf), close]
    end

    defp deep_pod(depth),
      do:
        IO.iodata_to_binary([
          ~s({"kind":"Pod","metadata":{"name":"p"},"x":),
          nested(depth, "1"),
          "}"
        ])

    defp depth_of(%{"a" => inner}), do: 1 + depth_of(inner)
    defp depth_of([inner]), do: 1 + depth_of(inner)
    defp depth_of(1), do: 0

    test "a 100-level answer decodes whole; a 100,000-level one is a decode error" do
      url =
        FakeApiServer.start!(self(), fn "GET", "/api/v1/namespaces/d/pods/" <> depth ->
          {200, deep_pod(String.to_integer(depth))}
        end)

      {:ok, kube} = Kube.connect(url: url, token: "t")

      # 100 levels under the pod object: 101 in all.
      assert {:ok, %{"kind" => "Pod", "x" => x}} = Kube.get_pod(kube, "d", "100")
      assert depth_of(x) == 100
      assert {:ok, %{"x" => x}} = Kube.request(kube, "GET", "/api/v1/namespaces/d/pods/100")
      assert depth_of(x) == 100

      for get <- [
            fn -> Kube.get_pod(kube, "d", "100000") end,
            fn -> Kube.request(kube, "GET", "/api/v1/namespaces/d/pods/100000") end
          ] do
        assert {:error, {:decode, message}} = get.()
        assert message =~ "response is not JSON (recursion limit exceeded"
      end

      # The limit is serde_json's: 127 levels in all parse, 128 do not.
      assert {:ok, %{"x" => x}} = Kube.get_pod(kube, "d", "126")
      assert depth_of(x) == 126

      assert {:error, {:decode, "response is not JSON (recursion limit exceeded" <> _}} =
               Kube.get_pod(kube, "d", "127")

      # The NIF and its runtime are fine afterwards.
      assert {:ok, %{"kind" => "Pod"}} = Kube.get_pod(kube, "d", "1")
    end
  end

  describe "shared watches" do
    # Nothing listens on port 1: each watch keeps failing and retrying (with backoff) for as
    # long as an await needs it.
    test "one watch per namespace and selector; each stops with its last await" do
      {:ok, kube} = Kube.connect(url: "https://127.0.0.1:1", token: "t")
      base = settled_live_tasks()
      await = &Kube.await_pod(kube, &1, &2, [timeout: 60_000] ++ &3)
      shared = for i <- 1..5, do: elem(await.("d", "p#{i}", label_selector: "app=runner"), 1)
      {:ok, other_ns} = await.("e", "p1", label_selector: "app=runner")
      {:ok, other_selector} = await.("d", "q", label_selector: "app=other")
      {:ok, alone} = await.("d", "r", [])

      eventually(fn -> Kube.open_watches(kube) == 4 end, 2_000)
      # Not a passing moment: a request later (the awaits' tasks have long run), still 4.
      assert {:error, {:connect, _}} = Kube.get_pod(kube, "d", "x")
      assert Kube.open_watches(kube) == 4
      # 8 awaits, 4 watches (the get_pod's task may outlive its reply by a moment).
      eventually(fn -> Kube.live_tasks() == base + 8 + 4 end, 2_000)

      Enum.each(Enum.drop(shared, 1), &Kube.cancel_await/1)
      assert {:error, {:connect, _}} = Kube.get_pod(kube, "d", "x")
      assert Kube.open_watches(kube) == 4
      Kube.cancel_await(hd(shared))
      eventually(fn -> Kube.open_watches(kube) == 3 end, 2_000)

      Enum.each([other_ns, other_selector, alone], &Kube.cancel_await/1)
      eventually(fn -> Kube.open_watches(kube) == 0 end, 2_000)
      eventually(fn -> Kube.live_tasks() <= base end, 2_000)

      # Lazily started again by the next await.
      {:ok, again} = await.("d", "p1", label_selector: "app=runner")
      eventually(fn -> Kube.open_watches(kube) == 1 end, 2_000)
      Kube.cancel_await(again)
      eventually(fn -> Kube.open_watches(kube) == 0 end, 2_000)
    end
  end

  describe "creates whose answer leaves the outcome open" do
    @exists ~s({"kind":"Status","status":"Failure","reason":"AlreadyExists","code":409,"message":"pods \\"p\\" already exists"})
    @gateway_timeout ~s({"kind":"Status","status":"Failure","reason":"Timeout","code":504,"message":"request did not complete"})
    @pod %{
      "metadata" => %{"name" => "p"},
      "spec" => %{"containers" => [%{"name" => "c", "image" => "i"}]}
    }

    # Answers in order, the last one for every request after.
    defp scripted(answers) do
      agent = start_supervised!({Agent, fn -> answers end})

      fn _method, _path ->
        Agent.get_and_update(agent, fn
          [last] -> {last, [last]}
          [next | rest] -> {next, rest}
        end)
      end
    end

    defp posts_received do
      receive do
        {:api_request, "POST", _, _} -> 1 + posts_received()
      after
        0 -> 0
      end
    end

    test "a POST answered 504 is not sent again: the create is an outcome unknown, settled a request timeout and a margin later" do
      url = FakeApiServer.start!(self(), scripted([{504, @gateway_timeout}]))
      {:ok, kube} = Kube.connect(url: url, token: "t", request_timeout: 5_000)
      before = System.monotonic_time(:millisecond)

      assert {:error,
              {:outcome_unknown,
               %{reason: {:api, 504, "Timeout", "request did not complete"}, settled_at: at}}} =
               Kube.create_pod(kube, "d", @pod)

      assert (at - before) in 19_000..20_500
      assert posts_received() == 1

      # The generic request: the server's answer, sent once.
      for method <- ["POST", "PATCH"] do
        assert {:error, {:api, 504, "Timeout", _}} =
                 Kube.request(kube, method, "/api/v1/namespaces/d/pods", body: %{})
      end

      assert posts_received() == 1
    end

    test "an idempotent create is sent again after a 504, and the 409 then means it was created" do
      url = FakeApiServer.start!(self(), scripted([{504, @gateway_timeout}, {409, @exists}]))
      {:ok, kube} = Kube.connect(url: url, token: "t", request_timeout: 5_000)
      assert {:ok, :already_exists} = Kube.create_pod(kube, "d", @pod, idempotent: true)
      assert posts_received() == 2

      assert {:ok, :already_exists} =
               Kube.create_secret(kube, "d", %{"metadata" => %{"name" => "s"}}, idempotent: true)

      # Without :idempotent the name may be anybody's: the 409 is the answer.
      assert {:error, {:api, 409, "AlreadyExists", _}} = Kube.create_pod(kube, "d", @pod)
    end

    test "creates tell the server their timeout" do
      test = self()

      answer = fn "POST", _path, query ->
        send(test, {:query, query})
        {201, ~s({"kind":"Pod","metadata":{"name":"p"}})}
      end

      url = FakeApiServer.start!(self(), answer)
      {:ok, kube} = Kube.connect(url: url, token: "t", request_timeout: 4_500)
      assert {:ok, %{"kind" => "Pod"}} = Kube.create_pod(kube, "d", @pod, idempotent: true)
      assert_received {:query, %{"timeout" => "4500ms", "fieldValidation" => "Strict"}}
    end

    test "a create whose answer never comes is an outcome unknown" do
      kube = silent_kube(500)
      before = System.monotonic_time(:millisecond)

      assert {:error, {:outcome_unknown, %{reason: {:timeout, 500}, settled_at: at}}} =
               Kube.create_pod(kube, "d", @pod, idempotent: true)

      assert (at - before) in 15_400..16_500

      assert (Kube.create_settled_at(kube) - System.monotonic_time(:millisecond)) in 15_400..15_500
    end
  end

  describe "bursts" do
    @created ~s({"kind":"Pod","metadata":{"name":"p"}})

    defp pod(i),
      do: %{
        "metadata" => %{"name" => "p#{i}"},
        "spec" => %{"containers" => [%{"name" => "c", "image" => "i"}]}
      }

    # The fake server holds each create until the test releases it: what reaches the server at
    # once is what the client lets through.
    test "creates beyond :max_concurrent_creates wait for a slot" do
      test = self()

      answer = fn "POST", _path ->
        send(test, {:held, self()})

        receive do
          :release -> {201, @created}
        end
      end

      url = FakeApiServer.start!(test, answer)
      {:ok, kube} = Kube.connect(url: url, token: "t", max_concurrent_creates: 2)
      creates = for i <- 1..5, do: Task.async(fn -> Kube.create_pod(kube, "d", pod(i)) end)

      held = for _ <- 1..2, do: assert_receive({:held, pid}, 5_000) && pid
      refute_receive {:held, _}, 300

      # Each release lets exactly one more through.
      Enum.reduce(1..3, held, fn _, [first | rest] ->
        send(first, :release)
        assert_receive {:held, next}, 5_000
        refute_receive {:held, _}, 100
        rest ++ [next]
      end)
      |> Enum.each(&send(&1, :release))

      for create <- creates, do: assert({:ok, %{"kind" => "Pod"}} = Task.await(create))
    end

    test "a create the server pushes back (429) is retried within its request timeout" do
      answers = :counters.new(1, [])

      answer = fn "POST", _path ->
        :counters.add(answers, 1, 1)

        case :counters.get(answers, 1) do
          n when n <= 2 ->
            {429,
             ~s({"kind":"Status","message":"slow down","reason":"TooManyRequests","code":429})}

          _ ->
            {201, @created}
        end
      end

      url = FakeApiServer.start!(self(), answer)
      {:ok, kube} = Kube.connect(url: url, token: "tok-429")
      assert {:ok, %{"kind" => "Pod"}} = Kube.create_pod(kube, "d", pod(1))

      for _ <- 1..3, do: assert_received({:api_request, "POST", "/api/v1/namespaces/d/pods", _})

      # Pushed back for longer than the request timeout: the server's answer, not a timeout.
      always = fn "POST", _path ->
        {429, ~s({"kind":"Status","message":"slow down","reason":"TooManyRequests","code":429})}
      end

      url = FakeApiServer.start!(self(), always)
      {:ok, kube} = Kube.connect(url: url, token: "tok-429", request_timeout: 1_000)

      assert {:error, {:api, 429, "TooManyRequests", "slow down"}} =
               Kube.create_pod(kube, "d", pod(1))
    end
  end
end
