defmodule FLAMEK8sBackend.Test.ControlPlane do
  @moduledoc """
  The face both test control planes show, `FLAMEK8sBackend.Test.LocalCluster` (a real
  kube-apiserver and etcd with a simulated kubelet) and `FLAMEK8sBackend.Test.RealNode` (a
  real single-node Kubernetes): start, stop, info, an admin connection, per-test namespaces and
  the API server's audit log. Tests, the soak and the bench take either through it.

  `use FLAMEK8sBackend.Test.ControlPlane, namespace_prefix: "t-"` declares the behaviour and
  defines what both do alike; a control plane then implements `start!/1`, `stop/0` and
  `create_namespace!/2`, and keeps its info with `put_info/1` (`erase_info/0` when stopped).
  """

  alias FLAMEK8sBackend.Kube

  @typedoc """
  What a started control plane holds: at least `:kubeconfig` (admin), `:server` (the API
  server's URL), `:ca_pem`, `:state_dir` and `:audit_log`.
  """
  @type info :: %{
          required(:kubeconfig) => Path.t(),
          required(:audit_log) => Path.t(),
          optional(atom()) => term()
        }

  @doc "Starts it once per VM (builds what it needs first); returns its info."
  @callback start!(opts :: keyword()) :: info()
  @doc "Stops it and everything it started; `:ok` when it was not running."
  @callback stop() :: :ok | {:error, String.t()}
  @doc "Creates namespace `name` ready for pods (its `default` ServiceAccount exists)."
  @callback create_namespace!(Kube.t(), name :: String.t()) :: String.t()

  defmacro __using__(namespace_prefix: prefix) do
    quote do
      @behaviour FLAMEK8sBackend.Test.ControlPlane
      @info_key {__MODULE__, :info}

      @doc "The running control plane's info (see `start!/1`)."
      @spec info() :: FLAMEK8sBackend.Test.ControlPlane.info()
      def info, do: :persistent_term.get(@info_key)

      @doc "Whether it was started in this VM and not stopped since."
      @spec running?() :: boolean()
      def running?, do: :persistent_term.get(@info_key, nil) != nil

      @doc "An admin connection (`opts` go to `FLAMEK8sBackend.Kube.connect/1`)."
      def kube!(opts \\ []) do
        {:ok, kube} = FLAMEK8sBackend.Kube.connect([kubeconfig: info().kubeconfig] ++ opts)
        kube
      end

      @doc "A namespace name for one test: the prefix and a hash of module and test."
      @spec namespace_name(module(), atom()) :: String.t()
      def namespace_name(module, test) do
        hash =
          :erlang.phash2({module, test}, 4_294_967_296)
          |> Integer.to_string(36)
          |> String.downcase()

        unquote(prefix) <> hash
      end

      @doc """
      The API server's audit events matching `filter` (see
      `FLAMEK8sBackend.Test.AuditLog.events/2`).
      """
      def audit_events(filter \\ %{}),
        do: FLAMEK8sBackend.Test.AuditLog.events(info().audit_log, filter)

      @doc """
      A ServiceAccount `name` in `namespace` bound to a Role with `rules`, and a TokenRequest
      token for it (valid for `:expiration_seconds`, default 600).
      """
      def service_account_token!(kube, namespace, name, rules, opts \\ []),
        do:
          FLAMEK8sBackend.Test.ControlPlane.service_account_token!(
            kube,
            namespace,
            name,
            rules,
            opts
          )

      @doc """
      Writes a kubeconfig (mode 0600, in the state dir) for the API server with `user`
      (`%{"token" => token}` or `%{"tokenFile" => path}`); `:namespace` sets its context's
      namespace. Returns its path.
      """
      def write_kubeconfig!(user, opts \\ []),
        do: FLAMEK8sBackend.Test.ControlPlane.write_kubeconfig!(info(), user, opts)

      @doc "Writes a kubeconfig that authenticates with `token` (see `write_kubeconfig!/2`)."
      def write_token_kubeconfig!(token, opts \\ []),
        do: write_kubeconfig!(%{"token" => token}, opts)

      defp put_info(info), do: :persistent_term.put(@info_key, info)
      defp erase_info, do: :persistent_term.erase(@info_key)
      defp info_or_nil, do: :persistent_term.get(@info_key, nil)
    end
  end

  @doc false
  def service_account_token!(kube, namespace, name, rules, opts) do
    rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/#{namespace}"
    metadata = %{"name" => name}

    {:ok, _} =
      Kube.request(kube, "POST", "/api/v1/namespaces/#{namespace}/serviceaccounts",
        body: %{"metadata" => metadata}
      )

    {:ok, _} =
      Kube.request(kube, "POST", rbac <> "/roles",
        body: %{"metadata" => metadata, "rules" => rules}
      )

    {:ok, _} =
      Kube.request(kube, "POST", rbac <> "/rolebindings",
        body: %{
          "metadata" => metadata,
          "roleRef" => %{
            "apiGroup" => "rbac.authorization.k8s.io",
            "kind" => "Role",
            "name" => name
          },
          "subjects" => [%{"kind" => "ServiceAccount", "name" => name, "namespace" => namespace}]
        }
      )

    expiration = Keyword.get(opts, :expiration_seconds, 600)

    {:ok, %{"status" => %{"token" => token}}} =
      Kube.request(kube, "POST", "/api/v1/namespaces/#{namespace}/serviceaccounts/#{name}/token",
        body: %{"spec" => %{"expirationSeconds" => expiration}}
      )

    token
  end

  @doc false
  def write_kubeconfig!(info, user, opts) do
    path = Path.join(info.state_dir, "kubeconfig-#{System.unique_integer([:positive])}")
    [{key, value}] = Map.to_list(user)
    namespace = if ns = opts[:namespace], do: ", namespace: #{ns}", else: ""

    File.write!(path, """
    apiVersion: v1
    kind: Config
    clusters:
    - name: test
      cluster:
        server: #{info.server}
        certificate-authority-data: #{Base.encode64(info.ca_pem)}
    users:
    - name: test
      user:
        #{key}: #{value}
    contexts:
    - name: test
      context: {cluster: test, user: test#{namespace}}
    current-context: test
    """)

    File.chmod!(path, 0o600)
    path
  end
end
