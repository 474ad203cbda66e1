defmodule FLAMEK8sBackend.ParentPod do
  @moduledoc false
  # The pod this VM runs in, which the runners are built from and owned by: named by the
  # :parent_pod option, else by POD_NAMESPACE and POD_NAME (from the downward API).
  # Read once per VM (per pod and client settings) and kept in :persistent_term: what the
  # runners take from it (image, env, volumes, service account, uid) cannot change while this
  # VM runs in it, and a GET per init/1 was one API request per boot.

  alias FLAMEK8sBackend.{BootError, Kube, SingleFlight}

  @type id :: {namespace :: String.t(), name :: String.t()}

  @doc """
  The parent pod's `{namespace, name}`: `configured` (the `:parent_pod` option) when given,
  else from `POD_NAMESPACE` and `POD_NAME` in `env` (a map like `System.get_env/0`'s).

      iex> FLAMEK8sBackend.ParentPod.id(nil, %{"POD_NAMESPACE" => "prod", "POD_NAME" => "web-1"})
      {:ok, {"prod", "web-1"}}
      iex> FLAMEK8sBackend.ParentPod.id({"dev", "web-2"}, %{})
      {:ok, {"dev", "web-2"}}
  """
  @spec id(id() | nil, %{optional(String.t()) => String.t()}) ::
          {:ok, id()} | {:error, BootError.t()}
  def id({_namespace, _name} = configured, _env), do: {:ok, configured}

  def id(nil, env) do
    case {env["POD_NAMESPACE"], env["POD_NAME"]} do
      {namespace, name} when namespace not in [nil, ""] and name not in [nil, ""] ->
        {:ok, {namespace, name}}

      _ ->
        {:error,
         %BootError{
           phase: :parent_pod,
           reason:
             {:config,
              "POD_NAMESPACE and POD_NAME are not set: give the parent pod these env vars from the downward API (fieldRef metadata.namespace and metadata.name), or pass :parent_pod"}
         }}
    end
  end

  @doc """
  The parent pod as first read by this VM through a client with `client_key` (its connection
  settings): read with `fetch/2` on the first call, from memory on later ones. Errors are not
  kept, so the next call reads again. Concurrent first calls share one read and its result,
  an error too: against an API server that does not answer, they all return after one
  request timeout, not one after the other.
  """
  @spec fetch_once(Kube.t(), id(), term()) :: {:ok, Kube.pod()} | {:error, BootError.t()}
  def fetch_once(kube, id, client_key) do
    key = {__MODULE__, id, client_key}

    case :persistent_term.get(key, nil) do
      %{} = pod -> {:ok, pod}
      nil -> SingleFlight.run(key, fn -> read_and_keep(kube, id, key) end)
    end
  end

  defp read_and_keep(kube, id, key) do
    case :persistent_term.get(key, nil) do
      %{} = pod ->
        {:ok, pod}

      nil ->
        with {:ok, pod} <- fetch(kube, id) do
          :persistent_term.put(key, pod)
          {:ok, pod}
        end
    end
  end

  @doc "Reads the parent pod; errors are `BootError`s of the `:parent_pod` phase."
  @spec fetch(Kube.t(), id()) :: {:ok, Kube.pod()} | {:error, BootError.t()}
  def fetch(kube, {namespace, name}) do
    case Kube.get_pod(kube, namespace, name) do
      {:ok, pod} ->
        {:ok, pod}

      {:error, {:api, 404, _, _}} ->
        {:error,
         %BootError{phase: :parent_pod, reason: {:parent_pod_not_found, "#{namespace}/#{name}"}}}

      {:error, reason} ->
        {:error, %BootError{phase: :parent_pod, reason: reason}}
    end
  end

  @doc """
  Whether runners can be reached over this VM's distribution of family `dist_family` (`:inet`,
  or `:inet6` for `-proto_dist inet6_tcp`): a runner is named `<pod name>@<status.podIP>`, and
  its `status.podIP` has the family of the parent pod's (the cluster's first, in a dual-stack
  cluster). A parent pod without an IP (a VM outside the cluster) is not checked.

      iex> FLAMEK8sBackend.ParentPod.ip_family(%{"status" => %{"podIP" => "fd00::7"}}, :inet6)
      :ok
  """
  @spec ip_family(Kube.pod(), :inet | :inet6) :: :ok | {:error, BootError.t()}
  def ip_family(parent_pod, dist_family) do
    with ip when is_binary(ip) <- get_in(parent_pod, ["status", "podIP"]),
         {:ok, address} <- :inet.parse_strict_address(String.to_charlist(ip)),
         family when family != dist_family <-
           if(tuple_size(address) == 8, do: :inet6, else: :inet) do
      {:error, %BootError{phase: :connect, reason: {:ip_family, family_mismatch(ip, family)}}}
    else
      _ -> :ok
    end
  end

  defp family_mismatch(ip, :inet),
    do:
      "Erlang distribution runs over IPv6 (-proto_dist inet6_tcp), but pod IPs (status.podIP, " <>
        "#{ip}) are IPv4, so runners named <pod>@<pod IP> could not be reached: use " <>
        "distribution over IPv4 (leave out -proto_dist inet6_tcp), or IPv6 as the cluster's " <>
        "first family"

  defp family_mismatch(ip, :inet6),
    do:
      "pod IPs (status.podIP, #{ip}) are IPv6, but Erlang distribution runs over IPv4: add " <>
        "-proto_dist inet6_tcp to the VM's flags (ERL_AFLAGS, which runners inherit), as the " <>
        "Kubernetes setup guide says"
end
