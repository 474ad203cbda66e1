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
end
