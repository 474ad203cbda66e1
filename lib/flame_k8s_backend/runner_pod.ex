defmodule FLAMEK8sBackend.RunnerPod do
  @moduledoc """
  Builds the runner pod and its secret from the parent pod. Pure: no I/O, no process state.

  ## The runner pod

  The app container is the parent's container named `:app_container_name` (default: the
  first one). From the parent the runner takes that container's image, command, args, env,
  envFrom, resources, volume mounts and working dir, and the pod's service account, image pull
  secrets, volumes, node selector, tolerations and security context. It never takes the
  parent's labels (a Deployment's selector would adopt the runner and its ReplicaSet would
  delete it), probes, ports or node name, nor a service-account token volume of the parent
  (below).

  **Service-account tokens.** The parent's volumes that carry a service-account token, and
  their mounts, are never copied: a projected volume with a `serviceAccountToken` source
  (what the ServiceAccount admission plugin injects as `kube-api-access-*`, or one of the
  parent's own), and a legacy token Secret (`<account>-token-xxxxx`, or whatever is mounted
  at `/var/run/secrets/kubernetes.io/serviceaccount`). Copied, it would give the runner a
  token even under `automountServiceAccountToken: false`. The API server injects the runner's
  own token (of `:service_account_name`, else the parent's account), or none. A runner that
  needs such a volume gets it from `:manifest`.

  Then, in order:

    1. a map `:manifest` is deep-merged over that pod (containers merge by name; a container
       without a name is the app container); a `:manifest` function receives the parent pod
       and its app container and returns the whole pod instead (what would make it the
       parent's — `status`, controller owner references, the parent's own labels — is dropped,
       and env entries copied unchanged from the parent rank as parent env);
    2. `metadata`: the runner's name (the parent's name, `-flame-` and a random suffix,
       chosen by the backend), the namespace, labels (manifest
       labels, then `:labels`, then the identifying labels below), and a controller owner
       reference to the parent pod unless `:omit_owner_reference` (Kubernetes' garbage
       collector deletes runners with their parent, and no ReplicaSet ever adopts one);
    3. `restartPolicy: Never`, `activeDeadlineSeconds` when `:active_deadline_seconds` is set
       and `serviceAccountName` when `:service_account_name` is (both win over the
       manifest's);
    4. the app container's environment, by precedence (later wins):
       `TMPDIR` (the `:tmp_dir`) < parent container env < defaults (`PHX_SERVER=false`,
       `RELEASE_DISTRIBUTION=name`, `RELEASE_NODE=<basename>@$(POD_IP)`, and
       `ERL_AFLAGS`/`ERL_ZFLAGS` of the parent VM) < `:manifest` env < `:env` < fixed
       (`POD_NAME`, `POD_NAMESPACE`, `POD_IP` from the downward API, `FLAME_PARENT`).
       `RELEASE_COOKIE` and the `:secret_env` names are never plain env vars: they are removed
       from the env list (a plain var would win over the secret) and come from the runner
       secret (named like the pod, same owner reference) through `envFrom`, and
       `FLAME_K8S_RUNNER_SECRET` names that secret (for the runner's own cleanup). When the
       parent's `RELEASE_COOKIE` comes from a Secret (`valueFrom.secretKeyRef`, given as
       `:cookie_secret_ref`) and there is no `:secret_env`, the runner references that same
       key instead and gets no secret of its own. At boot, `FLAMEK8sBackend` adds
       `FLAME_K8S_REAPER` (the parent's reaper for this runner, see
       `FLAMEK8sBackend.SelfDelete`) with `put_env/4`.
       A `-setcookie` in `ERL_AFLAGS`, `ERL_FLAGS` or `ERL_ZFLAGS` (whoever set them: a
       release's `env.sh` puts it in the parent VM's flags, which are forwarded) is left out
       with its values (`strip_cookie_flags/1`): the runner gets the cookie from its secret,
       as `RELEASE_COOKIE`, never as plain pod env;
    5. with `:dist_port`, `-kernel inet_dist_listen_min P inet_dist_listen_max P` in front of
       the final `ERL_AFLAGS` (the first setting of a kernel parameter wins, so neither the
       parent's forwarded flags nor the release's `vm.args` can move the port);
    6. with `:tmp_dir`, an `emptyDir` volume `flame-tmp` (unless the pod already has a volume
       of that name) mounted at that path in the app container (unless something is already
       mounted there). An `emptyDir` is writable by any user, also under a read-only root
       filesystem.

  A `:manifest` map cannot move the runner to another namespace, and a container in it that
  names no container of the pod and has no image is an error (the pure-Elixir backend took the
  first container as the app container whatever its name; here a container without a name is).

  Identifying labels: `app.kubernetes.io/managed-by=flame_k8s_backend` and
  `flame-k8s-backend.io/parent-uid=<parent pod uid>`; the annotations
  `flame-k8s-backend.io/parent-pod` (the parent's name),
  `flame-k8s-backend.io/app-container` (the app container's name) and, on the pod and its
  secret, `flame-k8s-backend.io/boot-timeout-ms` (the `:boot_timeout` it was created with,
  which the sweep at `FLAMEK8sBackend.init/1` reads).
  """

  alias FLAMEK8sBackend.RunnerPod.Spec

  @managed_by_label "app.kubernetes.io/managed-by"
  @managed_by "flame_k8s_backend"
  @parent_uid_label "flame-k8s-backend.io/parent-uid"
  @parent_annotation "flame-k8s-backend.io/parent-pod"
  @app_container_annotation "flame-k8s-backend.io/app-container"
  @boot_timeout_annotation "flame-k8s-backend.io/boot-timeout-ms"
  @tmp_volume "flame-tmp"
  # Where the ServiceAccount admission plugin mounts a pod's token.
  @service_account_path "/var/run/secrets/kubernetes.io/serviceaccount"
  # Every variable the emulator reads flags from.
  @flag_vars ~w(ERL_AFLAGS ERL_FLAGS ERL_ZFLAGS)

  @fixed_first ~w(POD_NAME POD_NAMESPACE POD_IP)
  @secret_only ~w(RELEASE_COOKIE)

  @doc """
  The label selector matching every runner pod of `parent_pod`.

      iex> FLAMEK8sBackend.RunnerPod.selector(%{"metadata" => %{"uid" => "u1"}})
      "app.kubernetes.io/managed-by=flame_k8s_backend,flame-k8s-backend.io/parent-uid=u1"
  """
  @spec selector(map()) :: String.t()
  def selector(parent_pod) do
    "#{@managed_by_label}=#{@managed_by},#{@parent_uid_label}=#{uid(parent_pod)}"
  end

  @doc """
  The name of a runner pod's app container, as its annotation records it (`nil` for a pod
  without it).

      iex> FLAMEK8sBackend.RunnerPod.app_container_name(%{"metadata" =>
      ...>   %{"annotations" => %{"flame-k8s-backend.io/app-container" => "web"}}})
      "web"
  """
  @spec app_container_name(map()) :: String.t() | nil
  def app_container_name(pod),
    do: get_in(pod, ["metadata", "annotations", @app_container_annotation])

  @doc """
  The `:boot_timeout` (ms) a runner pod or secret was created with, as its annotation records
  it (`nil` for one without it, or with a value that is not a positive integer).

      iex> FLAMEK8sBackend.RunnerPod.boot_timeout(%{"metadata" =>
      ...>   %{"annotations" => %{"flame-k8s-backend.io/boot-timeout-ms" => "45000"}}})
      45000
  """
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
  The runner secret, named like the runner pod: the cookie plus `:secret_env`, labelled like
  the runner pods and owned by the parent pod like them.

      iex> parent = %{"metadata" => %{"name" => "web-1", "uid" => "u1"}}
      iex> spec = %FLAMEK8sBackend.RunnerPod.Spec{runner_name: "web-1-flame-x7k2p",
      ...>   node_basename: "web-1-flame-x7k2p", flame_parent: "g2gD...",
      ...>   secret_env: %{"API_KEY" => "k"}}
      iex> secret = FLAMEK8sBackend.RunnerPod.secret(parent, spec, "cookie")
      iex> secret["stringData"]
      %{"API_KEY" => "k", "RELEASE_COOKIE" => "cookie"}
      iex> secret["metadata"]["labels"]["flame-k8s-backend.io/parent-uid"]
      "u1"
  """
  @spec secret(map(), Spec.t(), String.t()) :: map() | nil
  def secret(parent_pod, %Spec{} = spec, cookie) do
    if secret?(spec), do: build_secret(parent_pod, spec, cookie)
  end

  @doc """
  Whether a runner built from `spec` gets a secret of its own: always with `:secret_env`,
  otherwise only when its cookie cannot come from the parent's own Secret.

      iex> spec = %FLAMEK8sBackend.RunnerPod.Spec{runner_name: "r", node_basename: "r",
      ...>   flame_parent: "p", cookie_secret_ref: %{"name" => "app-cookie", "key" => "c"}}
      iex> FLAMEK8sBackend.RunnerPod.secret?(spec)
      false
      iex> FLAMEK8sBackend.RunnerPod.secret?(%{spec | secret_env: %{"API_KEY" => "k"}})
      true
  """
  @spec secret?(Spec.t()) :: boolean()
  def secret?(%Spec{cookie_secret_ref: ref, secret_env: secret_env}),
    do: is_nil(ref) or map_size(secret_env) > 0

  @doc """
  The `secretKeyRef` the parent's app container (`app_container_name`, `nil` for the first)
  takes `RELEASE_COOKIE` from, or `nil` when the parent's cookie comes from elsewhere.

      iex> parent = %{"spec" => %{"containers" => [%{"name" => "app", "env" => [
      ...>   %{"name" => "RELEASE_COOKIE", "valueFrom" =>
      ...>     %{"secretKeyRef" => %{"name" => "app-cookie", "key" => "cookie"}}}]}]}}
      iex> FLAMEK8sBackend.RunnerPod.cookie_secret_ref(parent, nil)
      %{"name" => "app-cookie", "key" => "cookie"}
  """
  @spec cookie_secret_ref(map(), String.t() | nil) :: map() | nil
  def cookie_secret_ref(parent_pod, app_container_name) do
    with {:ok, app} <- find_container(parent_pod, app_container_name),
         env when is_list(env) <- app["env"],
         %{"valueFrom" => %{"secretKeyRef" => %{"name" => name, "key" => key} = ref}} <-
           Enum.find(env, &(is_map(&1) and &1["name"] == "RELEASE_COOKIE")),
         true <- is_binary(name) and name != "" and is_binary(key) and key != "" do
      ref
    else
      _ -> nil
    end
  end

  defp build_secret(parent_pod, spec, cookie) do
    metadata =
      %{"name" => spec.runner_name, "labels" => identifying_labels(parent_pod)}
      |> put_if(spec.boot_timeout, "annotations", boot_timeout_annotation(spec))
      |> owner_references(parent_pod, spec)

    %{
      "apiVersion" => "v1",
      "kind" => "Secret",
      "type" => "Opaque",
      "metadata" => metadata,
      "stringData" => Map.put(spec.secret_env, "RELEASE_COOKIE", cookie)
    }
  end

  @doc """
  Sets the plain env var `name` of `pod`'s container `container_name` (the app container) to
  `value`, replacing a variable of that name; the other containers are left as they are.

      iex> pod = %{"spec" => %{"containers" => [%{"name" => "app", "env" => [%{"name" => "A", "value" => "1"}]}]}}
      iex> FLAMEK8sBackend.RunnerPod.put_env(pod, "app", "B", "2")["spec"]["containers"]
      [%{"name" => "app", "env" => [%{"name" => "A", "value" => "1"}, %{"name" => "B", "value" => "2"}]}]
  """
  @spec put_env(map(), String.t(), String.t(), String.t()) :: map()
  def put_env(pod, container_name, name, value) do
    update_in(pod, ["spec", "containers"], fn containers ->
      Enum.map(containers, fn
        %{"name" => ^container_name} = container ->
          env = Enum.reject(container["env"] || [], &(&1["name"] == name))
          Map.put(container, "env", env ++ [env(name, value)])

        other ->
          other
      end)
    end)
  end

  @doc """
  Builds the runner pod manifest from the parent pod.

  Returns `{:error, {:app_container_not_found, name, available_names}}` when the parent has no
  such container, and `{:error, {:invalid_manifest, message}}` when `:manifest` gives something
  that is not a pod.

      iex> parent = %{"metadata" => %{"name" => "web-1", "namespace" => "prod", "uid" => "u1"},
      ...>   "spec" => %{"containers" => [%{"name" => "app", "image" => "web:42"}]}}
      iex> spec = %FLAMEK8sBackend.RunnerPod.Spec{runner_name: "web-1-flame-x7k2p",
      ...>   node_basename: "web-1-flame-x7k2p", flame_parent: "g2gD..."}
      iex> {:ok, pod} = FLAMEK8sBackend.RunnerPod.build(parent, spec)
      iex> {pod["metadata"]["name"], pod["spec"]["restartPolicy"], hd(pod["spec"]["containers"])["image"]}
      {"web-1-flame-x7k2p", "Never", "web:42"}
  """
  @spec build(map(), Spec.t()) ::
          {:ok, map()}
          | {:error,
             {:app_container_not_found, String.t() | nil, [String.t()]}
             | {:invalid_manifest, String.t()}}
  def build(parent_pod, %Spec{} = spec) do
    with {:ok, app} <- find_container(parent_pod, spec.app_container_name),
         {:ok, pod} <- base_pod(parent_pod, app, spec),
         :ok <- validate_namespace(pod, parent_pod),
         {:ok, pod, app_index} <- ensure_app_container(pod, app, spec),
         :ok <- validate_env(pod) do
      finish(pod, app_index, parent_pod, app, spec)
    end
  end

  defp find_container(parent_pod, wanted) do
    containers = get_in(parent_pod, ["spec", "containers"]) || []
    names = Enum.map(containers, & &1["name"])

    case {wanted, containers} do
      {_, []} -> {:error, {:app_container_not_found, wanted, names}}
      {nil, [first | _]} -> {:ok, first}
      {name, _} -> find_named(containers, name, names)
    end
  end

  defp find_named(containers, name, names) do
    case Enum.find(containers, &(&1["name"] == name)) do
      nil -> {:error, {:app_container_not_found, name, names}}
      container -> {:ok, container}
    end
  end

  @container_keys ~w(name image imagePullPolicy command args env envFrom resources volumeMounts workingDir securityContext)
  @pod_spec_keys ~w(serviceAccountName automountServiceAccountToken imagePullSecrets volumes nodeSelector tolerations securityContext)

  defp base_pod(parent_pod, app, spec) do
    case spec.manifest do
      fun when is_function(fun, 2) ->
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
             {:invalid_manifest,
              "the :manifest function returned #{inspect(other)}, expected a map"}}
        end

      manifest ->
        container =
          app
          |> Map.take(@container_keys)
          |> Map.update("env", [], &drop_parent_env/1)

        pod =
          without_volumes(
            %{
              "apiVersion" => "v1",
              "kind" => "Pod",
              "metadata" => %{},
              "spec" =>
                parent_pod
                |> Map.get("spec", %{})
                |> Map.take(@pod_spec_keys)
                |> Map.put("containers", [container])
            },
            token_volumes(parent_pod)
          )

        manifest = stringify(manifest || %{})

        with :ok <- validate_manifest_containers(manifest, container["name"]) do
          {:ok, merge_manifest(pod, manifest, container["name"])}
        end
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

  defp validate_env(pod) do
    pod["spec"]["containers"]
    |> Enum.with_index()
    |> Enum.find_value(:ok, fn {container, i} ->
      case container["env"] do
        nil ->
          nil

        env when is_list(env) ->
          Enum.find_value(Enum.with_index(env), fn
            {%{"name" => name}, _} when is_binary(name) and name != "" ->
              nil

            {_, j} ->
              {:error,
               {:invalid_manifest,
                "spec.containers[#{i}].env[#{j}]: expected a map with a \"name\""}}
          end)

        _ ->
          {:error, {:invalid_manifest, "spec.containers[#{i}].env: expected a list"}}
      end
    end)
  end

  # The parent's own downward-API and cluster vars describe the parent, not the runner.
  defp drop_parent_env(env) do
    Enum.reject(
      env,
      &(&1["name"] in (@fixed_first ++
                         ~w(FLAME_PARENT RELEASE_NODE FLAME_K8S_RUNNER_SECRET FLAME_K8S_REAPER)))
    )
  end

  defp ensure_app_container(pod, app, spec) do
    containers = get_in(pod, ["spec", "containers"])

    cond do
      not is_list(containers) or containers == [] ->
        {:error, {:invalid_manifest, "the runner pod has no spec.containers"}}

      not Enum.all?(containers, &is_map/1) ->
        {:error, {:invalid_manifest, "spec.containers must be a list of maps"}}

      true ->
        name = spec.app_container_name || app["name"]
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

  defp finish(pod, index, parent_pod, app, spec) do
    namespace = get_in(parent_pod, ["metadata", "namespace"])
    app_name = get_in(pod, ["spec", "containers", Access.at(index), "name"])
    annotations = annotations(parent_pod, app_name, spec)

    metadata =
      (pod["metadata"] || %{})
      |> Map.drop(["name", "resourceVersion", "uid", "creationTimestamp"])
      |> Map.drop(["generateName"])
      |> Map.put("name", spec.runner_name)
      |> put_if(namespace, "namespace", namespace)
      |> Map.update("labels", labels(parent_pod, spec), &Map.merge(&1, labels(parent_pod, spec)))
      |> Map.update("annotations", annotations, &Map.merge(&1, annotations))
      |> owner_references(parent_pod, spec)

    manifest_env = manifest_env(spec.manifest, app_name, pod, app)
    container = Enum.at(pod["spec"]["containers"], index)

    with {:ok, container} <- runner_container(container, manifest_env, spec) do
      pod_spec =
        pod["spec"]
        |> Map.put("restartPolicy", "Never")
        |> Map.delete("nodeName")
        |> put_deadline(spec.active_deadline_seconds)
        |> put_service_account(spec.service_account_name)
        |> put_tmp_volume(container)
        |> Map.update!("containers", &List.replace_at(&1, index, container))

      {:ok,
       pod
       |> Map.put("metadata", metadata)
       |> Map.put("spec", pod_spec)
       |> Map.put_new("apiVersion", "v1")
       |> Map.put_new("kind", "Pod")}
    end
  end

  defp put_deadline(pod_spec, nil), do: pod_spec
  defp put_deadline(pod_spec, seconds), do: Map.put(pod_spec, "activeDeadlineSeconds", seconds)

  # The parent's serviceAccount (the deprecated alias) would contradict the runner's own.
  defp put_service_account(pod_spec, nil), do: pod_spec

  defp put_service_account(pod_spec, name) do
    pod_spec |> Map.delete("serviceAccount") |> Map.put("serviceAccountName", name)
  end

  # The volume behind the app container's tmp mount, unless the pod brings its own of that name.
  defp put_tmp_volume(pod_spec, container) do
    mounted? = Enum.any?(container["volumeMounts"] || [], &(&1["name"] == @tmp_volume))
    volumes = pod_spec["volumes"] || []

    if mounted? and not Enum.any?(volumes, &(is_map(&1) and &1["name"] == @tmp_volume)) do
      Map.put(pod_spec, "volumes", volumes ++ [%{"name" => @tmp_volume, "emptyDir" => %{}}])
    else
      pod_spec
    end
  end

  # The env the user's manifest asked for, so that it outranks the defaults while the env
  # copied from the parent container does not.
  # For a function, entries it copied unchanged from the parent's container stay parent env.
  defp manifest_env(fun, app_name, pod, app) when is_function(fun, 2),
    do: container_env(pod, app_name) -- (app["env"] || [])

  defp manifest_env(nil, _app_name, _pod, _app), do: []

  defp manifest_env(manifest, app_name, _pod, _app),
    do: container_env(stringify(manifest), app_name)

  defp container_env(pod, app_name) do
    case get_in(pod, ["spec", "containers"]) do
      containers when is_list(containers) ->
        Enum.find_value(containers, [], fn
          %{} = c -> c["name"] in [nil, app_name] && (c["env"] || [])
          _ -> nil
        end)

      _ ->
        []
    end
  end

  defp runner_container(container, manifest_env, spec) do
    parent_env = drop_parent_env(container["env"] || [])

    defaults =
      [
        env("PHX_SERVER", "false"),
        env("RELEASE_DISTRIBUTION", "name"),
        env("RELEASE_NODE", "#{spec.node_basename}@$(POD_IP)")
      ] ++ Enum.map(Enum.sort(spec.forwarded_env), fn {k, v} -> env(k, v) end)

    user_env = Enum.map(Enum.sort(spec.env), fn {name, value} -> env(name, value) end)
    # Lowest of all: a TMPDIR the container already has points somewhere it may write too.
    tmp_env = if spec.tmp_dir, do: [env("TMPDIR", spec.tmp_dir)], else: []

    fixed =
      [
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("POD_IP", "status.podIP")
      ] ++ cookie_env(spec)

    last = [env("FLAME_PARENT", spec.flame_parent)]

    merged =
      [tmp_env, parent_env, defaults, manifest_env, user_env, fixed, last]
      |> Enum.reduce(%{order: [], by_name: %{}}, &merge_env/2)

    with {:ok, merged} <- merged |> without_cookie_flags() |> put_dist_port(spec.dist_port) do
      fixed_names = Enum.map(fixed ++ last, & &1["name"])
      # A plain env var would win over the secret's envFrom value of the same name.
      secret_only = @secret_only ++ Map.keys(spec.secret_env)

      # $(VAR) expansion only sees variables defined earlier in the list: the downward-API vars
      # come first so RELEASE_NODE=<basename>@$(POD_IP) resolves.
      ordered =
        Enum.map(fixed, & &1["name"]) ++
          Enum.reject(merged.order, &(&1 in fixed_names or &1 in secret_only)) ++
          Enum.map(last, & &1["name"])

      env_from =
        if secret?(spec),
          do: (container["envFrom"] || []) ++ [%{"secretRef" => %{"name" => spec.runner_name}}],
          else: container["envFrom"] || []

      {:ok,
       container
       |> Map.put("env", Enum.map(ordered, &Map.fetch!(merged.by_name, &1)))
       |> Map.put("envFrom", env_from)
       |> put_tmp_mount(spec.tmp_dir)
       |> Map.drop(~w(ports livenessProbe readinessProbe startupProbe lifecycle))}
    end
  end

  # A cookie in the emulator's flags would be readable by anyone who may read pods: left out,
  # and the variable with it when nothing else was in it.
  defp without_cookie_flags(merged) do
    Enum.reduce(@flag_vars, merged, fn name, acc ->
      case acc.by_name[name] do
        %{"value" => value} = var when is_binary(value) ->
          case strip_cookie_flags(value) do
            ^value ->
              acc

            "" ->
              %{acc | order: List.delete(acc.order, name), by_name: Map.delete(acc.by_name, name)}

            stripped ->
              %{acc | by_name: Map.put(acc.by_name, name, Map.put(var, "value", stripped))}
          end

        _ ->
          acc
      end
    end)
  end

  @doc """
  Emulator flags (as in `ERL_AFLAGS`) without `-setcookie` and its values, read as `erl` reads
  them: words split at white space, `"..."` and `'...'` quoting, `\\` escapes; a flag's values
  run up to the next word that starts with `-` or `+`; nothing after `-extra` is a flag. The
  other words are kept, separated by one space; flags without `-setcookie` come back as they
  are.

      iex> FLAMEK8sBackend.RunnerPod.strip_cookie_flags("-kernel shell_history enabled -setcookie s3cr3t +S 2")
      "-kernel shell_history enabled +S 2"
      iex> FLAMEK8sBackend.RunnerPod.strip_cookie_flags("-setcookie web@10.0.0.1 'my cookie'")
      ""
  """
  @spec strip_cookie_flags(String.t()) :: String.t()
  def strip_cookie_flags(flags) do
    words = words(flags, [])
    kept = drop_setcookie(words)
    if kept == words, do: flags, else: Enum.map_join(kept, " ", fn {_value, raw} -> raw end)
  end

  defp drop_setcookie([]), do: []
  defp drop_setcookie([{"-extra", _} | _] = plain), do: plain

  defp drop_setcookie([{"-setcookie", _} | rest]),
    do: rest |> Enum.drop_while(fn {value, _} -> not flag?(value) end) |> drop_setcookie()

  defp drop_setcookie([word | rest]), do: [word | drop_setcookie(rest)]

  defp flag?(value), do: String.starts_with?(value, ["-", "+"])

  # The words of `flags`, each as {its value, its text as written}.
  defp words(<<c, rest::binary>>, acc) when c in ~c" \t\n\r", do: words(rest, acc)
  defp words(<<>>, acc), do: Enum.reverse(acc)

  defp words(flags, acc) do
    {value, length} = word(flags, [], 0, nil)
    <<raw::binary-size(length), rest::binary>> = flags
    words(rest, [{IO.iodata_to_binary(value), raw} | acc])
  end

  # Reads one word: its value (iodata) and how many bytes it takes, within `quote` (nil, ?" or ?').
  defp word(<<>>, value, n, _quote), do: {value, n}
  defp word(<<c, _::binary>>, value, n, nil) when c in ~c" \t\n\r", do: {value, n}

  defp word(<<q, rest::binary>>, value, n, nil) when q in [?", ?'],
    do: word(rest, value, n + 1, q)

  defp word(<<q, rest::binary>>, value, n, q), do: word(rest, value, n + 1, nil)

  defp word(<<?\\, c, rest::binary>>, value, n, quote) when quote != ?',
    do: word(rest, [value, c], n + 2, quote)

  defp word(<<c, rest::binary>>, value, n, quote), do: word(rest, [value, c], n + 1, quote)

  # Erlang takes the first setting of a kernel parameter: in front of ERL_AFLAGS (which comes
  # before the command line and ERL_ZFLAGS), the port wins over anything else that sets it.
  defp put_dist_port(merged, nil), do: {:ok, merged}

  defp put_dist_port(merged, port) do
    flags = "-kernel inet_dist_listen_min #{port} inet_dist_listen_max #{port}"

    case merged.by_name["ERL_AFLAGS"] do
      %{"valueFrom" => _} ->
        {:error,
         {:invalid_manifest,
          "ERL_AFLAGS comes from valueFrom, so :dist_port cannot go in front of it: give " <>
            "ERL_AFLAGS as a value, or set inet_dist_listen_min/max in it and leave :dist_port out"}}

      %{"value" => value} when is_binary(value) and value != "" ->
        {:ok, merge_env([env("ERL_AFLAGS", flags <> " " <> value)], merged)}

      _ ->
        {:ok, merge_env([env("ERL_AFLAGS", flags)], merged)}
    end
  end

  # Something the container already mounts at that path (the parent's own volume, a
  # manifest's) is kept: it is the user's choice of a writable place.
  defp put_tmp_mount(container, false), do: container

  defp put_tmp_mount(container, path) do
    mounts = container["volumeMounts"] || []

    if Enum.any?(
         mounts,
         &(is_map(&1) and String.trim_trailing(&1["mountPath"] || "", "/") == path)
       ) do
      container
    else
      Map.put(
        container,
        "volumeMounts",
        mounts ++ [%{"name" => @tmp_volume, "mountPath" => path}]
      )
    end
  end

  defp merge_env(vars, acc) do
    Enum.reduce(vars, acc, fn %{"name" => name} = var, acc ->
      order = if Map.has_key?(acc.by_name, name), do: acc.order, else: acc.order ++ [name]
      %{order: order, by_name: Map.put(acc.by_name, name, var)}
    end)
  end

  defp env(name, %{} = source), do: source |> stringify() |> Map.put("name", name)
  defp env(name, value), do: %{"name" => name, "value" => value}

  # With a secret of its own the runner learns its name (SelfDelete deletes it); without, the
  # cookie comes from the parent's Secret, referenced like the parent does.
  defp cookie_env(spec) do
    if secret?(spec),
      do: [env("FLAME_K8S_RUNNER_SECRET", spec.runner_name)],
      else: [
        %{"name" => "RELEASE_COOKIE", "valueFrom" => %{"secretKeyRef" => spec.cookie_secret_ref}}
      ]
  end

  defp field_env(name, path),
    do: %{"name" => name, "valueFrom" => %{"fieldRef" => %{"fieldPath" => path}}}

  defp labels(parent_pod, spec), do: Map.merge(spec.labels, identifying_labels(parent_pod))

  defp identifying_labels(parent_pod),
    do: %{@managed_by_label => @managed_by, @parent_uid_label => uid(parent_pod)}

  defp annotations(parent_pod, app_name, spec) do
    Map.merge(
      %{@parent_annotation => name(parent_pod), @app_container_annotation => app_name},
      boot_timeout_annotation(spec)
    )
  end

  defp boot_timeout_annotation(%Spec{boot_timeout: ms}) when is_integer(ms),
    do: %{@boot_timeout_annotation => Integer.to_string(ms)}

  defp boot_timeout_annotation(_spec), do: %{}

  defp owner_references(metadata, _parent_pod, %Spec{omit_owner_reference: true}), do: metadata

  defp owner_references(metadata, parent_pod, _spec) do
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

  defp put_if(map, nil, _key, _value), do: map
  defp put_if(map, _, key, value), do: Map.put(map, key, value)

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

  # Atom keys become strings so users may write manifests either way.
  defp stringify(%{} = map) when not is_struct(map) do
    Map.new(map, fn {k, v} -> {key(k), stringify(v)} end)
  end

  defp stringify(list) when is_list(list), do: Enum.map(list, &stringify/1)
  defp stringify(other), do: other

  defp key(k) when is_atom(k), do: Atom.to_string(k)
  defp key(k), do: k
end
