defmodule FLAMEK8sBackend.ParentPodTest do
  use ExUnit.Case, async: true

  @moduletag :unit
  @moduletag :tmp_dir
  doctest FLAMEK8sBackend.ParentPod

  Code.require_file("support/fake_api_server.exs", __DIR__)

  alias FLAMEK8sBackend.{BootError, Kube, ParentPod}
  alias FLAMEK8sBackend.Test.FakeApiServer

  @pod_list ~s({"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[]})

  defp parent_json(ns, name) do
    ~s({"kind":"Pod","apiVersion":"v1","metadata":{"name":"#{name}","namespace":"#{ns}",) <>
      ~s("uid":"uid-#{name}"},"spec":{"containers":[{"name":"app","image":"app:1"}]}})
  end

  # An API server that has the parent pod `ns/name` (and no runner pods), else answers 404.
  defp api_server!(ns, name) do
    FakeApiServer.start!(self(), fn
      "GET", "/api/v1/namespaces/" <> rest ->
        cond do
          rest == "#{ns}/pods/#{name}" -> {200, parent_json(ns, name)}
          rest == "#{ns}/pods" -> {200, @pod_list}
          true -> {404, ~s({"kind":"Status","apiVersion":"v1","status":"Failure","code":404})}
        end

      _method, _path ->
        {404, ~s({"kind":"Status","apiVersion":"v1","status":"Failure","code":404})}
    end)
  end

  # The requests the fake server has reported so far, as {method, path}.
  defp requests do
    receive do
      {:api_request, method, path, _body} -> [{method, path} | requests()]
    after
      0 -> []
    end
  end

  defp parent_reads(path), do: Enum.count(requests(), &(&1 == {"GET", path}))

  describe "id/2" do
    test "the :parent_pod option wins over the downward API's variables" do
      env = %{"POD_NAMESPACE" => "prod", "POD_NAME" => "web-1"}
      assert ParentPod.id({"dev", "web-2"}, env) == {:ok, {"dev", "web-2"}}
    end

    test "without either, the error says which variables to set" do
      for env <- [%{}, %{"POD_NAMESPACE" => "prod"}, %{"POD_NAMESPACE" => "", "POD_NAME" => "x"}] do
        assert {:error, %BootError{phase: :parent_pod, reason: {:config, message}} = error} =
                 ParentPod.id(nil, env)

        assert message =~ "POD_NAMESPACE and POD_NAME"
        assert Exception.message(error) =~ "reading the parent pod"
      end
    end
  end

  test "fetch/2: an unreachable API server is an error of the :parent_pod phase" do
    {:ok, kube} = Kube.connect(url: "https://127.0.0.1:1", token: "t0k3n", request_timeout: 2_000)

    assert {:error, %BootError{phase: :parent_pod, reason: {:connect, _}} = error} =
             ParentPod.fetch(kube, {"prod", "web-1"})

    refute Exception.message(error) =~ "t0k3n"
  end

  describe "fetch_once/3" do
    test "reads the parent pod once; later calls and other processes get it from memory" do
      url = api_server!("prod", "web-1")
      {:ok, kube} = Kube.connect(url: url, token: "t0k3n", request_timeout: 5_000)
      key = {:test, System.unique_integer()}

      assert {:ok, %{"metadata" => %{"uid" => "uid-web-1"}} = pod} =
               ParentPod.fetch_once(kube, {"prod", "web-1"}, key)

      assert Task.await(Task.async(fn -> ParentPod.fetch_once(kube, {"prod", "web-1"}, key) end)) ==
               {:ok, pod}

      assert parent_reads("/api/v1/namespaces/prod/pods/web-1") == 1
    end

    test "concurrent first calls read once" do
      url = api_server!("prod", "web-2")
      {:ok, kube} = Kube.connect(url: url, token: "t0k3n", request_timeout: 5_000)
      key = {:test, System.unique_integer()}
      test = self()

      tasks =
        for _ <- 1..8 do
          Task.async(fn ->
            send(test, {:ready, self()})

            receive do
              :go -> ParentPod.fetch_once(kube, {"prod", "web-2"}, key)
            end
          end)
        end

      pids = for _ <- tasks, do: assert_receive({:ready, pid}) && pid
      Enum.each(pids, &send(&1, :go))
      results = Enum.map(tasks, &Task.await/1)

      assert [{:ok, %{"metadata" => %{"name" => "web-2"}}}] = Enum.uniq(results)
      assert parent_reads("/api/v1/namespaces/prod/pods/web-2") == 1
    end

    test "an error is not kept: the next call reads again" do
      url = api_server!("prod", "web-3")
      {:ok, kube} = Kube.connect(url: url, token: "t0k3n", request_timeout: 5_000)
      key = {:test, System.unique_integer()}

      for _ <- 1..2 do
        assert {:error, %BootError{reason: {:parent_pod_not_found, "prod/missing"}}} =
                 ParentPod.fetch_once(kube, {"prod", "missing"}, key)
      end

      assert parent_reads("/api/v1/namespaces/prod/pods/missing") == 2
    end
  end

  test "init/1 reads the parent pod on its first call only", %{tmp_dir: dir} do
    name = "web-#{System.unique_integer([:positive])}"
    url = api_server!("prod", name)
    opts = [parent_pod: {"prod", name}, kubeconfig: FakeApiServer.kubeconfig!(dir, url)]

    assert {:ok, first} = FLAMEK8sBackend.init(opts)
    # The parent pod, then the sweep's lists of this parent's runner pods and secrets.
    assert requests() == [
             {"GET", "/api/v1/namespaces/prod/pods/#{name}"},
             {"GET", "/api/v1/namespaces/prod/pods"},
             {"GET", "/api/v1/namespaces/prod/secrets"}
           ]

    # The fake server reports each request before it answers, and init/1 returns only after
    # its answers: whatever the second init sent is in the mailbox by now.
    assert {:ok, second} = FLAMEK8sBackend.init(opts)
    refute_received {:api_request, _method, _path, _body}
    assert second.runner_name != first.runner_name
  end

  test "concurrent first inits against an API server that never answers share one read and its failure",
       %{tmp_dir: dir} do
    test = self()

    # Accepts every request and never answers (until the test is over).
    url =
      FakeApiServer.start!(test, fn _method, _path ->
        monitor = Process.monitor(test)

        receive do
          {:DOWN, ^monitor, :process, _, _} -> exit(:normal)
        end
      end)

    name = "web-#{System.unique_integer([:positive])}"

    opts = [
      parent_pod: {"prod", name},
      kubeconfig: FakeApiServer.kubeconfig!(dir, url),
      request_timeout: 1_000
    ]

    tasks =
      for _ <- 1..4 do
        Task.async(fn ->
          send(test, {:ready, self()})

          receive do
            :go -> FLAMEK8sBackend.init(opts)
          end
        end)
      end

    pids = for _ <- tasks, do: assert_receive({:ready, pid}) && pid
    Enum.each(pids, &send(&1, :go))
    results = Enum.map(tasks, &Task.await(&1, 60_000))

    assert [{:error, %BootError{phase: :parent_pod, reason: {:timeout, _}}}] =
             Enum.uniq(results)

    assert parent_reads("/api/v1/namespaces/prod/pods/#{name}") == 1
  end

  describe "ip_family/2: runners are named <pod>@<status.podIP>, reached over the parent's distribution" do
    defp pod(ips),
      do: %{"status" => %{"podIP" => hd(ips), "podIPs" => Enum.map(ips, &%{"ip" => &1})}}

    test "the pod IP's family is the distribution's: :ok" do
      assert :ok = ParentPod.ip_family(pod(["10.0.3.7"]), :inet)
      assert :ok = ParentPod.ip_family(pod(["fd00::7"]), :inet6)
      # Dual stack: status.podIP is the cluster's first family, runners' as the parent's.
      assert :ok = ParentPod.ip_family(pod(["fd00::7", "10.0.3.7"]), :inet6)
      # No pod IP (a parent VM outside the cluster names a pod of its own): nothing to check.
      assert :ok = ParentPod.ip_family(%{"status" => %{}}, :inet6)
    end

    test "another family: an error at init naming both and what to set" do
      assert {:error, %BootError{phase: :connect, reason: {:ip_family, message}} = error} =
               ParentPod.ip_family(pod(["10.0.3.7", "fd00::7"]), :inet6)

      assert message =~ "IPv6"
      assert message =~ "10.0.3.7"
      assert message =~ "inet6_tcp"
      assert Exception.message(error) =~ message

      assert {:error, %BootError{reason: {:ip_family, message}}} =
               ParentPod.ip_family(pod(["fd00::7", "10.0.3.7"]), :inet)

      assert message =~ "-proto_dist inet6_tcp"
    end
  end
end
