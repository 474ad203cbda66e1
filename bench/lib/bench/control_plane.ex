defmodule Bench.ControlPlane do
  @moduledoc """
  The control-plane driver: starts the local control plane (real kube-apiserver + etcd and the
  simulated kubelet `localkube`, through the test harness `LocalCluster`), gives the bench a
  namespace with a parent pod object in it, cleans the namespace at the end and stops it all.
  The parent is the README's documented setup: its `RELEASE_COOKIE` comes from a Secret
  (`secretKeyRef`), and this VM runs with that cookie, so runners reference the same Secret and
  get none of their own.
  The control plane also stops when this VM exits (localkube watches its stdin).

  `start_real!/0` does the same on the real node (`tools/realnode`): runners are real pods of
  the app image, the parent pod runs the pause image (a parent pod bound to no node would be
  removed by the pod garbage collector, and its runners with it), and the backend connects as
  the documented ServiceAccount, so that the API server's audit log tells its requests from
  the node's.
  """

  alias Bench.{Incidents, KubeletLog}
  alias FLAMEK8sBackend.Kube
  alias FLAMEK8sBackend.Test.{LocalCluster, RealNode}

  @enforce_keys [:kube, :namespace, :kubeconfig, :version, :ready_ms]
  defstruct @enforce_keys ++
              [
                node: :local,
                cluster: LocalCluster,
                backend_kubeconfig: nil,
                backend_kube: nil,
                runner_image: nil
              ]

  @type t :: %__MODULE__{
          kube: Kube.t(),
          namespace: String.t(),
          kubeconfig: String.t(),
          version: String.t(),
          ready_ms: non_neg_integer(),
          node: :local | :real,
          cluster: LocalCluster | RealNode,
          backend_kubeconfig: String.t() | nil,
          backend_kube: Kube.t() | nil,
          runner_image: String.t() | nil
        }

  @parent "parent"
  # The parent's Role as examples/kubernetes/rbac.yaml documents it.
  @parent_rules [
    %{"apiGroups" => [""], "resources" => ["pods"], "verbs" => ~w(get list watch create delete)},
    %{"apiGroups" => [""], "resources" => ["secrets"], "verbs" => ~w(create delete)},
    %{"apiGroups" => [""], "resources" => ["serviceaccounts/token"], "verbs" => ~w(create)}
  ]
  @parent_account "flame-parent"

  @spec start!() :: t()
  def start! do
    # LocalCluster names its state dir after System.unique_integer/1, which starts at the same
    # small numbers in every VM, and localkube wipes a state dir it is given: move the counter on
    # by a random amount so that a test run started at the same time gets another one.
    for _ <- 1..:rand.uniform(1_000_000), do: System.unique_integer([:positive])
    info = LocalCluster.start!()
    kube = LocalCluster.kube!()
    KubeletLog.init(info.kubelet_log)
    namespace = "bench-#{System.unique_integer([:positive])}"
    LocalCluster.create_namespace!(kube, namespace)
    create_documented_parent!(kube, namespace)
    new(kube, namespace, info, [])
  end

  @doc """
  The real node (built and started by `RealNode.start!/0`, with the app image) with a namespace,
  the documented parent pod and its ServiceAccount. This VM must already be a distributed node
  on the bridge address with the cookie the parent's Secret will hold.
  """
  @spec start_real!() :: t()
  def start_real! do
    info = RealNode.start!()
    {image, _archive} = info.app_image || raise "no app image (tools/realnode/image.sh)"
    kube = RealNode.kube!()
    namespace = "bench-#{System.unique_integer([:positive])}"
    RealNode.create_namespace!(kube, namespace)
    {cookie, env} = LocalCluster.create_cookie_secret!(kube, namespace, @parent)
    System.put_env("RELEASE_COOKIE", cookie)
    RealNode.create_parent_pod!(kube, namespace, name: @parent, env: [env])

    backend_kubeconfig =
      RealNode.service_account_kubeconfig!(kube, namespace, @parent_account, @parent_rules,
        expiration_seconds: 7200
      )

    {:ok, backend_kube} = Kube.connect(kubeconfig: backend_kubeconfig)

    new(kube, namespace, info,
      node: :real,
      cluster: RealNode,
      backend_kubeconfig: backend_kubeconfig,
      backend_kube: backend_kube,
      runner_image: image
    )
  end

  defp new(kube, namespace, info, fields) do
    {:ok, version} = Kube.request(kube, "GET", "/version")

    struct!(
      %__MODULE__{
        kube: kube,
        namespace: namespace,
        kubeconfig: info.kubeconfig,
        version: version["gitVersion"],
        ready_ms: info.ready_ms
      },
      fields
    )
  end

  @doc """
  The client the bench sends a runner's requests with where it acts for the backend (the
  polling variant's creates, polls and deletes): on the real node the parent's ServiceAccount,
  whose requests the audit log counts; else the bench's own.
  """
  def client(%__MODULE__{backend_kube: nil, kube: kube}), do: kube
  def client(%__MODULE__{backend_kube: kube}), do: kube

  @doc "The user the backend's requests come from on the real node (the audit log's username)."
  def backend_user(%__MODULE__{node: :real, namespace: ns}),
    do: "system:serviceaccount:#{ns}:#{@parent_account}"

  defp create_documented_parent!(kube, namespace) do
    cookie = LocalCluster.create_documented_parent!(kube, namespace, name: @parent)
    # As a release started with that Secret in its env would have it.
    System.put_env("RELEASE_COOKIE", cookie)
  end

  @doc "Options for `FLAMEK8sBackend.init/1` as this VM's backend would have them in the namespace."
  def backend_opts(%__MODULE__{node: :local} = cp) do
    [parent_pod: {cp.namespace, @parent}, kubeconfig: cp.kubeconfig, boot_timeout: 60_000]
  end

  # The parent pod runs the pause image: its runners get the app image through :manifest.
  def backend_opts(%__MODULE__{node: :real} = cp) do
    [
      parent_pod: {cp.namespace, @parent},
      kubeconfig: cp.backend_kubeconfig,
      boot_timeout: 60_000,
      manifest: %{"spec" => %{"containers" => [%{"image" => cp.runner_image}]}}
    ]
  end

  @doc "A pod manifest for the simulated kubelet (images: see `LocalCluster`)."
  defdelegate pod_manifest(name, image, opts), to: LocalCluster

  @doc "Deletes whatever pods and runner secrets are left in the namespace, as incidents."
  def clean(%__MODULE__{kube: kube, namespace: ns}) do
    pods =
      case Kube.list_pods(kube, ns) do
        {:ok, pods} ->
          names = for pod <- pods, name = pod["metadata"]["name"], name != @parent, do: name
          Enum.each(names, &Kube.delete_pod(kube, ns, &1, grace_period: 0))
          _ = Kube.delete_pod(kube, ns, @parent, grace_period: 0)
          names

        _ ->
          []
      end

    # Kube has no list_secrets: the bench reads the list with a plain request.
    secrets_path = "/api/v1/namespaces/#{ns}/secrets?labelSelector=#{runners()}"

    secrets =
      case Kube.request(kube, "GET", secrets_path) do
        {:ok, %{"items" => items}} ->
          names = for item <- items, do: item["metadata"]["name"]
          Enum.each(names, &Kube.delete_secret(kube, ns, &1))
          names

        _ ->
          []
      end

    report_cleaned("pod(s)", pods)
    report_cleaned("runner secret(s)", secrets)
  end

  @doc """
  Stops the control plane and waits until every process localkube started is gone; on the real
  node, stops it and checks that the machine is as before.
  """
  def stop(%__MODULE__{cluster: cluster}), do: cluster.stop()

  @doc "Stops whichever was started (the time cap may come before `start!/0` returns)."
  def stop_any, do: Enum.each([RealNode, LocalCluster], & &1.stop())

  # The label the backend puts on everything it creates (see the README).
  defp runners, do: URI.encode_www_form("app.kubernetes.io/managed-by=flame_k8s_backend")

  defp report_cleaned(_what, []), do: :ok

  defp report_cleaned(what, names) do
    Incidents.record("final cleanup deleted #{length(names)} #{what}: #{Enum.join(names, ", ")}")
  end
end
