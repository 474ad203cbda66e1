defmodule FLAMEK8sBackend.RunnerPod.Manifest do
  @moduledoc false
  # The runner pod before the backend's own settings go on top (see FLAMEK8sBackend.RunnerPod,
  # steps before 2): what it takes from the parent, without the parent's service-account token
  # volumes, and the user's :manifest merged over it or, for a function, returned by it.

  alias FLAMEK8sBackend.RunnerPod.Env

  # Where the ServiceAccount admission plugin mounts a pod's token.
  @service_account_path "/var/run/secrets/kubernetes.io/serviceaccount"

  @container_keys ~w(name image imagePullPolicy command args env envFrom resources volumeMounts workingDir securityContext)
  @pod_spec_keys ~w(serviceAccountName automountServiceAccountToken imagePullSecrets volumes nodeSelector tolerations securityContext)

  @doc """
  The pod the runner is made from: `parent_pod`'s `app` container (and the pod settings it
  takes from the parent) with the map `manifest` merged over it, or what a `manifest`
  function returns. Also returns the index of the app container, which now has a name and an
  image (`app_container_name`, `nil` for `app`'s).

  `placement` maps pod spec keys (and `"resources"`, the app container's) to what replaces
  the parent's value before the manifest goes on top: `:inherit` keeps it, `nil` removes it. A
  `manifest` function receives the parent pod and app container with them applied.

      iex> parent = %{"metadata" => %{"namespace" => "prod"},
      ...>   "spec" => %{"containers" => [%{"name" => "app", "image" => "web:42"}]}}
      iex> app = hd(parent["spec"]["containers"])
      iex> {:ok, pod, 0} = FLAMEK8sBackend.RunnerPod.Manifest.pod(parent, app, nil,
      ...>   %{spec: %{containers: [%{args: ["start"]}]}})
      iex> pod["spec"]["containers"]
      [%{"name" => "app", "image" => "web:42", "args" => ["start"], "env" => []}]
  """
  @spec pod(map(), map(), String.t() | nil, map() | (map(), map() -> term()) | nil, map()) ::
          {:ok, map(), non_neg_integer()} | {:error, {:invalid_manifest, String.t()}}
  def pod(parent_pod, app, app_container_name, manifest, placement \\ %{}) do
    {placed_parent, app} = place(parent_pod, app, placement)
    # Settings the runner does not take from the parent unless an option gives them.
    given = for {key, value} <- placement, value not in [nil, :inherit], do: key

    with {:ok, pod} <- base_pod(placed_parent, app, manifest, given),
         :ok <- validate_namespace(pod, parent_pod) do
      ensure_app_container(pod, app, app_container_name)
    end
  end

  @doc """
  `term` with atom keys made strings, at every depth, so that users may write manifests
  either way; structs are left as they are.

      iex> FLAMEK8sBackend.RunnerPod.Manifest.stringify(%{spec: [%{name: "app"}]})
      %{"spec" => [%{"name" => "app"}]}
  """
  @spec stringify(term()) :: term()
  def stringify(%{} = map) when not is_struct(map) do
    Map.new(map, fn {k, v} -> {key(k), stringify(v)} end)
  end

  def stringify(list) when is_list(list), do: Enum.map(list, &stringify/1)
  def stringify(other), do: other

  defp key(k) when is_atom(k), do: Atom.to_string(k)
  defp key(k), do: k

  # The parent as the runner sees it: each placement setting replaces the parent's.
  defp place(parent_pod, app, placement) do
    {resources, pod_settings} = Map.pop(placement, "resources", :inherit)
    placed_app = put_setting(app, "resources", resources)

    spec =
      pod_settings
      |> Enum.reduce(parent_pod["spec"] || %{}, fn {key, value}, spec ->
        put_setting(spec, key, value)
      end)
      |> update_list("containers", fn containers ->
        Enum.map(containers, &if(&1 == app, do: placed_app, else: &1))
      end)

    {Map.put(parent_pod, "spec", spec), placed_app}
  end

  defp put_setting(map, _key, :inherit), do: map
  defp put_setting(map, key, nil), do: Map.delete(map, key)
  defp put_setting(map, key, value), do: Map.put(map, key, value)

  defp base_pod(parent_pod, app, fun, _given) when is_function(fun, 2) do
    case fun.(parent_pod, app) do
      %{} = pod ->
        pod =
          pod
          |> stringify()
          |> without_parent_identity(parent_pod)
          |> without_volumes(token_volumes(parent_pod))

        {:ok, pod}

      other ->
        {:error,
         {:invalid_manifest, "the :manifest function returned #{inspect(other)}, expected a map"}}
    end
  end

  defp base_pod(parent_pod, app, manifest, given) do
    container =
      app
      |> Map.take(@container_keys)
      |> Map.update("env", [], &Env.drop_parent/1)

    pod =
      without_volumes(
        %{
          "apiVersion" => "v1",
          "kind" => "Pod",
          "metadata" => %{},
          "spec" =>
            parent_pod
            |> Map.get("spec", %{})
            |> Map.take(@pod_spec_keys ++ given)
            |> Map.put("containers", [container])
        },
        token_volumes(parent_pod)
      )

    manifest = stringify(manifest || %{})

    with :ok <- validate_manifest_containers(manifest, container["name"]) do
      {:ok, merge_manifest(pod, manifest, container["name"])}
    end
  end

  # The names of the parent's volumes that carry a service-account token: a projected volume
  # with a serviceAccountToken source, a legacy token Secret of its account, anything mounted
  # where the admission plugin mounts the token.
  defp token_volumes(parent_pod) do
    spec = parent_pod["spec"] || %{}
    account = spec["serviceAccountName"] || spec["serviceAccount"] || "default"
    legacy = ~r/\A#{Regex.escape(account)}-token-[a-z0-9]{5}\z/

    at_token_path =
      for container <- List.wrap(spec["containers"]) ++ List.wrap(spec["initContainers"]),
          is_map(container),
          mount <- List.wrap(container["volumeMounts"]),
          is_map(mount) and is_binary(mount["mountPath"]),
          String.trim_trailing(mount["mountPath"], "/") == @service_account_path,
          do: mount["name"]

    for %{"name" => name} = volume <- List.wrap(spec["volumes"]),
        projected_token?(volume) or name in at_token_path or legacy_token?(volume, legacy),
        into: MapSet.new(),
        do: name
  end

  defp projected_token?(%{"projected" => %{"sources" => sources}}) when is_list(sources),
    do: Enum.any?(sources, &(is_map(&1) and Map.has_key?(&1, "serviceAccountToken")))

  defp projected_token?(_volume), do: false

  defp legacy_token?(%{"name" => name, "secret" => %{"secretName" => name}}, legacy)
       when is_binary(name),
       do: name =~ legacy

  defp legacy_token?(_volume, _legacy), do: false

  # `pod` without the volumes named in `names`, and without their mounts in any container.
  defp without_volumes(pod, names) do
    if Enum.empty?(names) or not is_map(pod["spec"]) do
      pod
    else
      keep? = &(not (is_map(&1) and MapSet.member?(names, &1["name"])))

      spec =
        pod["spec"]
        |> update_list("volumes", &Enum.filter(&1, keep?))
        |> update_list("containers", &Enum.map(&1, fn c -> without_mounts(c, keep?) end))
        |> update_list("initContainers", &Enum.map(&1, fn c -> without_mounts(c, keep?) end))

      Map.put(pod, "spec", spec)
    end
  end

  defp without_mounts(%{"volumeMounts" => mounts} = container, keep?) when is_list(mounts),
    do: Map.put(container, "volumeMounts", Enum.filter(mounts, keep?))

  defp without_mounts(container, _keep?), do: container

  defp update_list(map, key, fun) do
    case map do
      %{^key => list} when is_list(list) -> Map.put(map, key, fun.(list))
      _ -> map
    end
  end

  # A container of a map manifest merges with the pod's container of the same name; the pod
  # has only the app container yet. One that names another container and gives no image can
  # be neither a new container (it has nothing to run) nor the app container: most likely
  # the pure-Elixir backend's style, where the first container was the app container
  # whatever its name.
  defp validate_manifest_containers(%{"spec" => %{"containers" => containers}}, app_name)
       when is_list(containers) do
    containers
    |> Enum.with_index()
    |> Enum.find_value(:ok, fn
      {%{"name" => name} = container, i} when is_binary(name) and name != app_name ->
        unless Map.has_key?(container, "image") do
          {:error,
           {:invalid_manifest,
            "spec.containers[#{i}] is named #{inspect(name)}, which is not the app container " <>
              "(#{inspect(app_name)}), and has no image: leave the name out (or write " <>
              "#{inspect(app_name)}) to configure the app container, or give an image to add " <>
              "a container"}}
        end

      _ ->
        nil
    end)
  end

  defp validate_manifest_containers(_manifest, _app_name), do: :ok

  # Runner pods are created, watched and deleted in the parent's namespace, and owned by it.
  defp validate_namespace(pod, parent_pod) do
    wanted = get_in(parent_pod, ["metadata", "namespace"])

    case pod["metadata"] do
      %{"namespace" => namespace} when is_binary(wanted) and namespace not in [nil, wanted] ->
        {:error,
         {:invalid_manifest,
          "metadata.namespace is #{inspect(namespace)}, but runner pods run in the parent " <>
            "pod's namespace (#{inspect(wanted)}): leave it out"}}

      _ ->
        :ok
    end
  end

  # A function may hand back (a copy of) the parent pod: what makes it the parent's must go,
  # above all its ReplicaSet's controller reference and the labels its selector matches.
  defp without_parent_identity(pod, parent_pod) do
    parent_labels = get_in(parent_pod, ["metadata", "labels"]) || %{}

    metadata =
      (pod["metadata"] || %{})
      |> Map.drop(~w(managedFields generation deletionTimestamp deletionGracePeriodSeconds))
      |> Map.update("ownerReferences", [], fn refs ->
        Enum.reject(List.wrap(refs), &(is_map(&1) and &1["controller"] == true))
      end)
      |> Map.update("labels", %{}, fn labels ->
        labels
        |> Enum.reject(fn {k, v} -> k == "pod-template-hash" or parent_labels[k] == v end)
        |> Map.new()
      end)

    pod |> Map.delete("status") |> Map.put("metadata", metadata)
  end

  defp ensure_app_container(pod, app, app_container_name) do
    containers = get_in(pod, ["spec", "containers"])

    cond do
      not is_list(containers) or containers == [] ->
        {:error, {:invalid_manifest, "the runner pod has no spec.containers"}}

      not Enum.all?(containers, &is_map/1) ->
        {:error, {:invalid_manifest, "spec.containers must be a list of maps"}}

      true ->
        name = app_container_name || app["name"]
        index = Enum.find_index(containers, &(&1["name"] == name)) || 0

        containers =
          List.update_at(containers, index, fn container ->
            container
            |> Map.put_new("name", name)
            |> Map.put_new("image", app["image"])
          end)

        {:ok, put_in(pod, ["spec", "containers"], containers), index}
    end
  end

  # Deep merge where lists replace lists, except spec.containers, merged by container name.
  defp merge_manifest(base, overlay, app_name) do
    Map.merge(base, overlay, fn
      "spec", %{} = b, %{} = o -> merge_spec(b, o, app_name)
      _key, %{} = b, %{} = o -> deep_merge(b, o)
      _key, _b, o -> o
    end)
  end

  defp merge_spec(base, overlay, app_name) do
    Map.merge(base, overlay, fn
      "containers", b, o when is_list(b) and is_list(o) -> merge_containers(b, o, app_name)
      _key, %{} = b, %{} = o -> deep_merge(b, o)
      _key, _b, o -> o
    end)
  end

  defp merge_containers(base, overlay, app_name) do
    Enum.reduce(overlay, base, fn container, acc ->
      name = if is_map(container), do: container["name"] || app_name, else: nil

      case is_map(container) && Enum.find_index(acc, &(&1["name"] == name)) do
        index when is_integer(index) ->
          List.update_at(acc, index, &merge_container(&1, container))

        _ ->
          acc ++ [container]
      end
    end)
  end

  defp merge_container(base, overlay) do
    Map.merge(base, overlay, fn
      "env", b, o when is_list(b) and is_list(o) ->
        names = MapSet.new(o, & &1["name"])
        Enum.reject(b, &MapSet.member?(names, &1["name"])) ++ o

      _key, %{} = b, %{} = o ->
        deep_merge(b, o)

      _key, _b, o ->
        o
    end)
  end

  defp deep_merge(base, overlay) do
    Map.merge(base, overlay, fn
      _key, %{} = b, %{} = o -> deep_merge(b, o)
      _key, _b, o -> o
    end)
  end
end
