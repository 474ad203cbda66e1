defmodule FLAMEK8sBackend.Test.ClusterCase do
  @moduledoc """
  Tests against the local control plane: each test gets an admin connection (`kube`) and a
  fresh namespace (`namespace`) with a `default` ServiceAccount.
  """
  use ExUnit.CaseTemplate

  import ExUnit.Assertions

  alias FLAMEK8sBackend.Test.{LocalCluster, RemoteFuns}

  using do
    quote do
      import FLAMEK8sBackend.Test.ClusterCase
      alias FLAMEK8sBackend.Kube
      alias FLAMEK8sBackend.Test.LocalCluster
      @moduletag :cluster
    end
  end

  setup context do
    kube = LocalCluster.kube!()

    namespace =
      LocalCluster.create_namespace!(
        kube,
        LocalCluster.namespace_name(context.module, context.test)
      )

    %{kube: kube, namespace: namespace}
  end

  @doc """
  A parent pod named `parent` in `namespace` and the backend options that boot runners from it
  through the local control plane's kubeconfig.
  """
  def parent_setup(%{kube: kube, namespace: ns}) do
    LocalCluster.create_parent_pod!(kube, ns)

    opts = [
      parent_pod: {ns, "parent"},
      kubeconfig: LocalCluster.info().kubeconfig,
      boot_timeout: 30_000
    ]

    %{opts: opts}
  end

  @doc """
  Sends the calling test `{:event, event, measurements, metadata}` for each of the telemetry
  `events` whose metadata names `namespace` (other tests' runners emit them too), until the
  test exits; returns `:ok`.
  """
  def forward_events!(events, namespace) do
    id = {__MODULE__, make_ref()}
    test = self()

    :ok =
      :telemetry.attach_many(
        id,
        events,
        fn event, measurements, metadata, _ ->
          if metadata.namespace == namespace,
            do: send(test, {:event, event, measurements, metadata})
        end,
        nil
      )

    ExUnit.Callbacks.on_exit(fn -> :telemetry.detach(id) end)
  end

  @doc """
  Evicts pod `name` through the API server's Eviction API, as a node drain does: the API server
  sets its `DisruptionTarget` condition, then deletes it. Returns `:ok`.
  """
  def evict_pod!(kube, ns, name) do
    result =
      FLAMEK8sBackend.Kube.request(kube, "POST", "/api/v1/namespaces/#{ns}/pods/#{name}/eviction",
        body: %{
          "apiVersion" => "policy/v1",
          "kind" => "Eviction",
          "metadata" => %{"name" => name, "namespace" => ns}
        }
      )

    # The client sends a POST again after a 429. An eviction answered 429 while the pod's
    # status changed under it may have evicted the pod all the same; the second finds it gone.
    case result do
      {:ok, _} -> :ok
      {:error, {:api, 404, "NotFound", _}} -> :ok
    end
  end

  @doc "Starts a supervised FLAME pool on `FLAMEK8sBackend` with `opts`; returns its name."
  def start_pool!(opts, pool_opts \\ []) do
    name = :"pool_#{System.unique_integer([:positive])}"
    ExUnit.Callbacks.start_supervised!(pool_spec(name, opts, pool_opts), id: name)

    name
  end

  @doc """
  The child spec of a FLAME pool `name` on `FLAMEK8sBackend` with `opts` (which hold
  `:boot_timeout`): at most one runner, idle for a minute before it goes; `pool_opts` override.
  """
  def pool_spec(name, opts, pool_opts \\ []) do
    {FLAME.Pool,
     [
       name: name,
       backend: {FLAMEK8sBackend, opts},
       min: 0,
       max: 1,
       max_concurrency: 10,
       boot_timeout: Keyword.fetch!(opts, :boot_timeout),
       idle_shutdown_after: 60_000
     ]
     |> Keyword.merge(pool_opts)}
  end

  @doc """
  The shortest `:idle_shutdown_after` a test's pool may use (ms). FLAME starts a runner's idle
  timer when it boots, and a call that reaches the runner after the timer fired finds it
  stopping: FLAME then kills the caller (the pool kills the callers of a runner that went
  down). On a loaded 2-core machine a first call can take some hundred ms to get there.
  """
  def short_idle_ms, do: 1_000

  @doc """
  One boot through `pool` (in `namespace` of the local control plane) that runs
  `RemoteFuns.whereami/0` and ends by the runner's idle shutdown, its pod removed from the API;
  returns what `whereami/0` said. Waiting on the kubelet's log sends no request.
  """
  def boot_until_idle_gone!(pool, namespace) do
    info = FLAME.call(pool, &RemoteFuns.whereami/0)
    Node.monitor(info.node, true)
    assert_receive {:nodedown, _}, 30_000

    eventually(
      fn ->
        Enum.any?(
          LocalCluster.kubelet_log(namespace),
          &(&1 =~ "#{info.pod_name}: removed from the API")
        )
      end,
      30_000
    )

    info
  end

  @doc "The runner pods in `namespace`."
  def runner_pods(kube, ns) do
    {:ok, pods} =
      FLAMEK8sBackend.Kube.list_pods(kube, ns,
        label_selector: "app.kubernetes.io/managed-by=flame_k8s_backend"
      )

    pods
  end

  @doc """
  Waits for a condition that no event announces (e.g. a Tokio task finishing after its
  cancellation). Checks every 20 ms, gives up after `timeout` ms.
  """
  def eventually(fun, timeout \\ 5_000) do
    deadline = System.monotonic_time(:millisecond) + timeout
    do_eventually(fun, deadline)
  end

  defp do_eventually(fun, deadline) do
    cond do
      fun.() ->
        true

      System.monotonic_time(:millisecond) > deadline ->
        ExUnit.Assertions.flunk("condition not met in time")

      true ->
        Process.sleep(20)
        do_eventually(fun, deadline)
    end
  end
end
