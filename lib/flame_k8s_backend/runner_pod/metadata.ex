defmodule FLAMEK8sBackend.RunnerPod.Metadata do
  @moduledoc false
  # The metadata of the runner pod and its secret: the name, the labels and annotations that
  # tie a runner to its parent (what the sweep and the shared watch select on), and the owner
  # reference that lets Kubernetes' garbage collector delete runners with their parent.

  alias FLAMEK8sBackend.Options
  alias FLAMEK8sBackend.RunnerPod.Runtime

  @managed_by_label "app.kubernetes.io/managed-by"
  @managed_by "flame_k8s_backend"
  @parent_uid_label "flame-k8s-backend.io/parent-uid"
  @parent_annotation "flame-k8s-backend.io/parent-pod"
  @app_container_annotation "flame-k8s-backend.io/app-container"
  @boot_timeout_annotation "flame-k8s-backend.io/boot-timeout-ms"

  @doc "See `FLAMEK8sBackend.RunnerPod.selector/1`."
  @spec selector(map()) :: String.t()
  def selector(parent_pod),
    do: "#{@managed_by_label}=#{@managed_by},#{@parent_uid_label}=#{uid(parent_pod)}"

  @doc "See `FLAMEK8sBackend.RunnerPod.app_container_name/1`."
  @spec app_container_name(map()) :: String.t() | nil
  def app_container_name(pod),
    do: get_in(pod, ["metadata", "annotations", @app_container_annotation])

  @doc "See `FLAMEK8sBackend.RunnerPod.boot_timeout/1`."
  @spec boot_timeout(map()) :: pos_integer() | nil
  def boot_timeout(object) do
    with value when is_binary(value) <-
           get_in(object, ["metadata", "annotations", @boot_timeout_annotation]),
         {ms, ""} when ms > 0 <- Integer.parse(value) do
      ms
    else
      _ -> nil
    end
  end

  @doc """
  The runner pod's metadata, from the `metadata` of the pod built so far: the runner's name in
  the parent's namespace, `:labels` and the identifying labels and annotations over the
  manifest's, and the owner reference (unless `:omit_owner_reference`).

      iex> parent = %{"metadata" => %{"name" => "web-1", "namespace" => "prod", "uid" => "u1"}}
      iex> opts = FLAMEK8sBackend.Options.validate!(omit_owner_reference: true)
      iex> runtime = %FLAMEK8sBackend.RunnerPod.Runtime{runner_name: "web-1-flame-x7k2p",
      ...>   node_basename: "web", flame_parent: "g2gD..."}
      iex> FLAMEK8sBackend.RunnerPod.Metadata.pod(%{"uid" => "old"}, parent, "app", opts, runtime)
      %{"name" => "web-1-flame-x7k2p", "namespace" => "prod",
        "labels" => %{"app.kubernetes.io/managed-by" => "flame_k8s_backend",
          "flame-k8s-backend.io/parent-uid" => "u1"},
        "annotations" => %{"flame-k8s-backend.io/app-container" => "app",
          "flame-k8s-backend.io/boot-timeout-ms" => "30000",
          "flame-k8s-backend.io/parent-pod" => "web-1"}}
  """
  @spec pod(map() | nil, map(), String.t(), Options.t(), Runtime.t()) :: map()
  def pod(metadata, parent_pod, app_name, %Options{} = opts, %Runtime{} = runtime) do
    namespace = get_in(parent_pod, ["metadata", "namespace"])
    labels = Map.merge(opts.labels, identifying_labels(parent_pod))

    annotations =
      Map.merge(
        %{@parent_annotation => name(parent_pod), @app_container_annotation => app_name},
        boot_timeout_annotation(opts)
      )

    metadata = Map.drop(metadata || %{}, ~w(generateName resourceVersion uid creationTimestamp))
    metadata = Map.put(metadata, "name", runtime.runner_name)
    metadata = if namespace, do: Map.put(metadata, "namespace", namespace), else: metadata

    metadata
    |> Map.update("labels", labels, &Map.merge(&1, labels))
    |> Map.update("annotations", annotations, &Map.merge(&1, annotations))
    |> owner_references(parent_pod, opts)
  end

  @doc """
  The runner secret's metadata: named like the runner pod, labelled and owned like it.

      iex> parent = %{"metadata" => %{"name" => "web-1", "uid" => "u1"}}
      iex> runtime = %FLAMEK8sBackend.RunnerPod.Runtime{runner_name: "web-1-flame-x7k2p",
      ...>   node_basename: "web", flame_parent: "g2gD..."}
      iex> metadata = FLAMEK8sBackend.RunnerPod.Metadata.secret(parent,
      ...>   FLAMEK8sBackend.Options.validate!([]), runtime)
      iex> hd(metadata["ownerReferences"])["uid"]
      "u1"
  """
  @spec secret(map(), Options.t(), Runtime.t()) :: map()
  def secret(parent_pod, %Options{} = opts, %Runtime{} = runtime) do
    %{
      "name" => runtime.runner_name,
      "labels" => identifying_labels(parent_pod),
      "annotations" => boot_timeout_annotation(opts)
    }
    |> owner_references(parent_pod, opts)
  end

  defp identifying_labels(parent_pod),
    do: %{@managed_by_label => @managed_by, @parent_uid_label => uid(parent_pod)}

  # The sweep at init/1 reads it to tell an old runner from one still booting.
  defp boot_timeout_annotation(%Options{boot_timeout: ms}),
    do: %{@boot_timeout_annotation => Integer.to_string(ms)}

  defp owner_references(metadata, _parent_pod, %Options{omit_owner_reference: true}),
    do: metadata

  defp owner_references(metadata, parent_pod, _opts) do
    # controller: true also keeps any ReplicaSet from adopting the runner, whatever its labels.
    owner = %{
      "apiVersion" => "v1",
      "kind" => "Pod",
      "name" => name(parent_pod),
      "uid" => uid(parent_pod),
      "controller" => true
    }

    Map.update(metadata, "ownerReferences", [owner], &(List.wrap(&1) ++ [owner]))
  end

  defp name(pod), do: get_in(pod, ["metadata", "name"]) || "flame-runner"
  defp uid(pod), do: get_in(pod, ["metadata", "uid"]) || ""
end
