defmodule FLAMEK8sBackend.ParentPod do
  @moduledoc false
  # The pod this VM runs in, which the runners are built from and owned by: named by the
  # :parent_pod option, else by POD_NAMESPACE and POD_NAME (from the downward API).

  alias FLAMEK8sBackend.{BootError, Kube}

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
