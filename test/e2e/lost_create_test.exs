defmodule FLAMEK8sBackend.LostCreateE2ETest do
  # The lost-create race on a real API server: a mutating webhook that never answers
  # (failurePolicy: Ignore, timeoutSeconds: 10), as a slow webhook of a production cluster,
  # holds the runner pod's create for 10 s. The FLAME Runner that sent it is killed meanwhile,
  # its request dropped with it; the reaper's DELETE finds nothing, and the API server commits
  # the pod afterwards. The parent must delete it all the same, once the API server's deadline
  # for that create (`:api_server_request_timeout`) has passed.
  #
  # The client reaches the API server over a network that loses a client's disconnect (the
  # link partitions as the client gives up: its TLS close_notify and FIN never arrive, so the
  # API server's connection stays open): a disconnect that reached the API server would cancel
  # the request, webhook call and all. (A create that merely times out is cut by the API server
  # itself at the same deadline: every create carries `timeout=` its request timeout.)
  use FLAMEK8sBackend.Test.ClusterCase, async: true

  @moduletag :e2e
  @moduletag timeout: 120_000

  @webhook_timeout_s 10

  # A webhook endpoint that accepts connections and never says a word: every call to it ends
  # by its timeout. Tells the test of each call (the API server is admitting a create).
  defp black_hole! do
    {:ok, listen} = :gen_tcp.listen(0, [:binary, active: false, ip: {127, 0, 0, 1}])
    {:ok, port} = :inet.port(listen)
    test = self()
    holder = spawn_link(fn -> hold(listen, test, []) end)
    :ok = :gen_tcp.controlling_process(listen, holder)
    port
  end

  defp hold(listen, test, held) do
    case :gen_tcp.accept(listen) do
      {:ok, socket} ->
        send(test, :webhook_called)
        hold(listen, test, [socket | held])

      {:error, _} ->
        :ok
    end
  end

  # A TCP proxy to the API server whose client-to-server direction has some latency, and which
  # drops what is still in flight when its client closes, then keeps the upstream connection
  # open: the API server never learns that the client gave up. Returns its URL.
  @latency_ms 300

  defp forgetful_proxy! do
    %URI{port: upstream} = URI.parse(LocalCluster.info().server)
    {:ok, listen} = :gen_tcp.listen(0, [:binary, active: false, ip: {127, 0, 0, 1}])
    {:ok, port} = :inet.port(listen)
    acceptor = spawn_link(fn -> accept(listen, upstream) end)
    :ok = :gen_tcp.controlling_process(listen, acceptor)
    "https://127.0.0.1:#{port}"
  end

  defp accept(listen, upstream) do
    with {:ok, client} <- :gen_tcp.accept(listen) do
      {:ok, server} = :gen_tcp.connect({127, 0, 0, 1}, upstream, [:binary, active: true])
      pipe = spawn_link(fn -> pipe(client, server, true) end)
      :ok = :gen_tcp.controlling_process(client, pipe)
      :ok = :gen_tcp.controlling_process(server, pipe)
      send(pipe, :go)
      accept(listen, upstream)
    end
  end

  defp pipe(client, server, client_open?) do
    receive do
      :go ->
        :ok = :inet.setopts(client, active: true)
        pipe(client, server, client_open?)

      {:tcp, ^client, data} ->
        Process.send_after(self(), {:forward, data}, @latency_ms)
        pipe(client, server, client_open?)

      {:forward, data} ->
        if client_open?, do: :gen_tcp.send(server, data)
        pipe(client, server, client_open?)

      {:tcp, ^server, data} ->
        if client_open?, do: :gen_tcp.send(client, data)
        pipe(client, server, client_open?)

      {:tcp_closed, ^client} ->
        pipe(client, server, false)

      {:tcp_closed, ^server} ->
        :gen_tcp.close(client)
    end
  end

  setup %{kube: kube, namespace: ns} do
    port = black_hole!()
    name = "flame-test-slow-#{ns}"
    path = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"

    {:ok, _} =
      Kube.request(kube, "POST", path,
        body: %{
          "metadata" => %{"name" => name},
          "webhooks" => [
            %{
              "name" => "slow.flame-test.example",
              "clientConfig" => %{"url" => "https://127.0.0.1:#{port}/mutate"},
              "rules" => [
                %{
                  "operations" => ["CREATE"],
                  "apiGroups" => [""],
                  "apiVersions" => ["v1"],
                  "resources" => ["pods"]
                }
              ],
              "namespaceSelector" => %{
                "matchLabels" => %{"kubernetes.io/metadata.name" => ns}
              },
              "objectSelector" => %{"matchLabels" => %{"flame-test/slow-admission" => "true"}},
              "failurePolicy" => "Ignore",
              "timeoutSeconds" => @webhook_timeout_s,
              "sideEffects" => "None",
              "admissionReviewVersions" => ["v1"]
            }
          ]
        }
      )

    on_exit(fn -> Kube.request(LocalCluster.kube!(), "DELETE", "#{path}/#{name}") end)
    parent_setup(%{kube: kube, namespace: ns})
  end

  defp exists?(result), do: match?({:ok, _}, result)

  test "a pod committed after its Runner was killed mid-create is deleted all the same",
       %{kube: kube, namespace: ns, opts: opts} do
    opts =
      Keyword.merge(opts,
        kubeconfig: LocalCluster.kubeconfig_via!(forgetful_proxy!()),
        # Longer than the webhook holds the create: the API server's own deadline for it.
        request_timeout: (@webhook_timeout_s + 5) * 1_000,
        api_server_request_timeout: (@webhook_timeout_s + 5) * 1_000,
        manifest: %{"metadata" => %{"labels" => %{"flame-test/slow-admission" => "true"}}}
      )

    {:ok, state} = FLAMEK8sBackend.init(opts)
    {booter, monitor} = spawn_monitor(fn -> FLAMEK8sBackend.remote_boot(state) end)

    # The pod's create is being admitted: the Runner goes, and its request with it.
    assert_receive :webhook_called, 10_000
    Process.exit(booter, :kill)
    assert_receive {:DOWN, ^monitor, :process, ^booter, :killed}

    # The reaper's first DELETE found nothing; the API server commits the pod afterwards.
    eventually(fn -> exists?(Kube.get_pod(kube, ns, state.runner_name)) end, 15_000)

    # Once the API server's deadline for that create has passed, the parent deletes it.
    eventually(fn -> not exists?(Kube.get_pod(kube, ns, state.runner_name)) end, 30_000)
    assert runner_pods(kube, ns) == []

    assert {:ok, %{"items" => []}} =
             Kube.request(kube, "GET", "/api/v1/namespaces/#{ns}/secrets")
  end
end
