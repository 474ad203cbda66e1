defmodule FLAMEK8sBackend.RunnerPod do
  @moduledoc false
  # Builds the runner pod and its secret from the parent pod, the validated options and the
  # runtime values of `FLAMEK8sBackend.RunnerPod.Runtime`. Pure: no I/O, no process state.
  #
  # ## The runner pod
  #
  # The app container is the parent's container named `:app_container_name` (default: the
  # first one). From the parent the runner takes that container's image, command, args, env,
  # envFrom, resources, volume mounts and working dir, and the pod's service account, image pull
  # secrets, volumes, node selector, tolerations and security context. It never takes the
  # parent's labels (a Deployment's selector would adopt the runner and its ReplicaSet would
  # delete it), probes, ports or node name, nor a service-account token volume of the parent
  # (below). `:resources`, `:node_selector`, `:tolerations`, `:affinity`,
  # `:priority_class_name` and `:runtime_class_name` replace (or, `nil`, remove) those settings
  # of the parent before anything else, and `terminationGracePeriodSeconds` becomes
  # `:shutdown_timeout` plus a margin: the pod below is built from the parent as they leave it.
  #
  # **Service-account tokens.** The parent's volumes that carry a service-account token, and
  # their mounts, are never copied: a projected volume with a `serviceAccountToken` source
  # (what the ServiceAccount admission plugin injects as `kube-api-access-*`, or one of the
  # parent's own), and a legacy token Secret (`<account>-token-xxxxx`, or whatever is mounted
  # at `/var/run/secrets/kubernetes.io/serviceaccount`). Copied, it would give the runner a
  # token even under `automountServiceAccountToken: false`. Under `service_account_token:
  # :mount` the API server injects the runner's own token (of `:service_account_name`, else the
  # parent's account), or none; under `:handover` (the default) and `:none` the pod says
  # `automountServiceAccountToken: false` (step 3). A runner that needs such a volume gets it
  # from `:manifest`.
  #
  # Then, in order:
  #
  #   1. a map `:manifest` is deep-merged over that pod (containers merge by name; a container
  #      without a name is the app container); a `:manifest` function receives the parent pod
  #      and its app container and returns the whole pod instead (what would make it the
  #      parent's — `status`, controller owner references, the parent's own labels — is dropped,
  #      and env entries copied unchanged from the parent rank as parent env);
  #   2. `metadata`: the runner's name (the parent's name, `-flame-` and a random suffix,
  #      chosen by the backend), the namespace, labels (manifest
  #      labels, then `:labels`, then the identifying labels below), and a controller owner
  #      reference to the parent pod unless `:omit_owner_reference` (Kubernetes' garbage
  #      collector deletes runners with their parent, and no ReplicaSet ever adopts one);
  #   3. `restartPolicy: Never`, `activeDeadlineSeconds` when `:active_deadline_seconds` is set,
  #      `serviceAccountName` when `:service_account_name` is, and
  #      `automountServiceAccountToken: false` unless `service_account_token: :mount` (all win
  #      over the manifest's);
  #   4. the app container's environment, by precedence (later wins):
  #      `TMPDIR` (the `:tmp_dir`) < parent container env < defaults (`PHX_SERVER=false`,
  #      `RELEASE_DISTRIBUTION=name`, `RELEASE_NODE=<basename>@$(POD_IP)`, and
  #      `ERL_AFLAGS`/`ERL_ZFLAGS` of the parent VM) < `:manifest` env < `:env` < fixed
  #      (`POD_NAME`, `POD_NAMESPACE`, `POD_IP` from the downward API, `FLAME_PARENT`, and
  #      under `service_account_token: :handover` `FLAME_K8S_CA_CERT` from the namespace's
  #      `kube-root-ca.crt` ConfigMap, optional).
  #      `RELEASE_COOKIE` and the `:secret_env` names are never plain env vars: they are removed
  #      from the env list (a plain var would win over the secret) and come from the runner
  #      secret (named like the pod, same owner reference) through `envFrom`, and
  #      `FLAME_K8S_RUNNER_SECRET` names that secret (for the runner's own cleanup). When the
  #      parent's `RELEASE_COOKIE` comes from a Secret (`valueFrom.secretKeyRef`, given as
  #      `:cookie_secret_ref`) and there is no `:secret_env`, the runner references that same
  #      key instead and gets no secret of its own. At boot, `FLAMEK8sBackend` adds
  #      `FLAME_K8S_REAPER` (the parent's reaper for this runner, see
  #      `FLAMEK8sBackend.SelfDelete`) with `put_env/4`.
  #      A `-setcookie` in `ERL_AFLAGS`, `ERL_FLAGS` or `ERL_ZFLAGS` (whoever set them: a
  #      release's `env.sh` puts it in the parent VM's flags, which are forwarded) is left out
  #      with its values (read as `erl` reads them): the runner gets the cookie from its
  #      secret, as `RELEASE_COOKIE`, never as plain pod env;
  #   5. with `:dist_port`, `-kernel inet_dist_listen_min P inet_dist_listen_max P` in front of
  #      the final `ERL_AFLAGS` (the first setting of a kernel parameter wins, so neither the
  #      parent's forwarded flags nor the release's `vm.args` can move the port); then, with
  #      `hidden: true`, `-hidden` (unless that `ERL_AFLAGS` has it already), in front of the
  #      rest, which stays (an `-extra` in it cannot make `-hidden` a plain argument);
  #   6. with `:tmp_dir` (under `:auto`, only for an app container with a read-only root
  #      filesystem), an `emptyDir` volume `flame-tmp` (unless the pod already has a volume
  #      of that name) mounted at that path in the app container (unless something is already
  #      mounted there). An `emptyDir` is writable by any user, also under a read-only root
  #      filesystem.
  #
  # A `:manifest` map cannot move the runner to another namespace, and a container in it that
  # names no container of the pod and has no image is an error (the pure-Elixir backend took the
  # first container as the app container whatever its name; here a container without a name is).
  #
  # Identifying labels: `app.kubernetes.io/managed-by=flame_k8s_backend` and
  # `flame-k8s-backend.io/parent-uid=<parent pod uid>`; the annotations
  # `flame-k8s-backend.io/parent-pod` (the parent's name),
  # `flame-k8s-backend.io/app-container` (the app container's name) and, on the pod and its
  # secret, `flame-k8s-backend.io/boot-timeout-ms` (the `:boot_timeout` it was created with,
  # which the sweep at `FLAMEK8sBackend.init/1` reads).

  alias FLAMEK8sBackend.Options
  alias FLAMEK8sBackend.RunnerPod.{Env, Manifest, Metadata, Runtime}

  @tmp_volume "flame-tmp"
  # Where `tmp_dir: :auto` mounts it.
  @auto_tmp_dir "/tmp/flame"
  # Seconds of terminationGracePeriodSeconds beyond :shutdown_timeout.
  @grace_margin_s 10

  @doc """
  The label selector matching every runner pod of `parent_pod`.

      iex> FLAMEK8sBackend.RunnerPod.selector(%{"metadata" => %{"uid" => "u1"}})
      "app.kubernetes.io/managed-by=flame_k8s_backend,flame-k8s-backend.io/parent-uid=u1"
  """
  @spec selector(map()) :: String.t()
  defdelegate selector(parent_pod), to: Metadata

  @doc """
  The name of a runner pod's app container, as its annotation records it (`nil` for a pod
  without it).

      iex> FLAMEK8sBackend.RunnerPod.app_container_name(%{"metadata" =>
      ...>   %{"annotations" => %{"flame-k8s-backend.io/app-container" => "web"}}})
      "web"
  """
  @spec app_container_name(map()) :: String.t() | nil
  defdelegate app_container_name(pod), to: Metadata

  @doc """
  The `:boot_timeout` (ms) a runner pod or secret was created with, as its annotation records
  it (`nil` for one without it, or with a value that is not a positive integer).

      iex> FLAMEK8sBackend.RunnerPod.boot_timeout(%{"metadata" =>
      ...>   %{"annotations" => %{"flame-k8s-backend.io/boot-timeout-ms" => "45000"}}})
      45000
  """
  @spec boot_timeout(map()) :: pos_integer() | nil
  defdelegate boot_timeout(object), to: Metadata

  @doc """
  The runner secret, named like the runner pod: the cookie plus `:secret_env`, labelled like
  the runner pods and owned by the parent pod like them; `nil` when the runner takes its
  cookie from the parent's Secret (`secret?/2`).

      iex> parent = %{"metadata" => %{"name" => "web-1", "uid" => "u1"}}
      iex> opts = FLAMEK8sBackend.Options.validate!(secret_env: %{"API_KEY" => "k"})
      iex> runtime = %FLAMEK8sBackend.RunnerPod.Runtime{runner_name: "web-1-flame-x7k2p",
      ...>   node_basename: "web-1-flame-x7k2p", flame_parent: "g2gD..."}
      iex> secret = FLAMEK8sBackend.RunnerPod.secret(parent, opts, runtime, "cookie")
      iex> secret["stringData"]
      %{"API_KEY" => "k", "RELEASE_COOKIE" => "cookie"}
      iex> secret["metadata"]["labels"]["flame-k8s-backend.io/parent-uid"]
      "u1"
  """
  @spec secret(map(), Options.t(), Runtime.t(), String.t()) :: map() | nil
  def secret(parent_pod, %Options{} = opts, %Runtime{} = runtime, cookie) do
    if secret?(opts, runtime), do: build_secret(parent_pod, opts, runtime, cookie)
  end

  @doc """
  Whether a runner gets a secret of its own: always with `:secret_env`, otherwise only when
  its cookie cannot come from the parent's own Secret.

      iex> runtime = %FLAMEK8sBackend.RunnerPod.Runtime{runner_name: "r", node_basename: "r",
      ...>   flame_parent: "p", cookie_secret_ref: %{"name" => "app-cookie", "key" => "c"}}
      iex> FLAMEK8sBackend.RunnerPod.secret?(FLAMEK8sBackend.Options.validate!([]), runtime)
      false
      iex> opts = FLAMEK8sBackend.Options.validate!(secret_env: %{"API_KEY" => "k"})
      iex> FLAMEK8sBackend.RunnerPod.secret?(opts, runtime)
      true
  """
  @spec secret?(Options.t(), Runtime.t()) :: boolean()
  def secret?(%Options{secret_env: secret_env}, %Runtime{cookie_secret_ref: ref}),
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

  defp build_secret(parent_pod, opts, runtime, cookie) do
    %{
      "apiVersion" => "v1",
      "kind" => "Secret",
      "type" => "Opaque",
      "metadata" => Metadata.secret(parent_pod, opts, runtime),
      "stringData" => Map.put(opts.secret_env, "RELEASE_COOKIE", cookie)
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
    update_env(pod, container_name, fn env ->
      Enum.reject(env, &(&1["name"] == name)) ++ [%{"name" => name, "value" => value}]
    end)
  end

  @doc """
  The pod `pod` renamed from `old` to `new`, for a pod that replaces it (see
  `FLAMEK8sBackend.Boot`): its name, and in the app container `container_name` the runner's
  node name when it is the default one (`old` at the pod's IP), so that the runner's node is
  named after the pod it runs in. A node name set otherwise (`:runner_node_basename`, `:env`)
  stays.

      iex> pod = %{"metadata" => %{"name" => "web-1-flame-aaaaaaaa"},
      ...>   "spec" => %{"containers" => [%{"name" => "app", "env" => [
      ...>     %{"name" => "RELEASE_NODE", "value" => "web-1-flame-aaaaaaaa@$(POD_IP)"}]}]}}
      iex> pod = FLAMEK8sBackend.RunnerPod.rename(pod, "app", "web-1-flame-aaaaaaaa", "web-1-flame-bbbbbbbb")
      iex> {pod["metadata"]["name"], hd(hd(pod["spec"]["containers"])["env"])["value"]}
      {"web-1-flame-bbbbbbbb", "web-1-flame-bbbbbbbb@$(POD_IP)"}
  """
  @spec rename(map(), String.t(), String.t(), String.t()) :: map()
  def rename(pod, container_name, old, new) do
    default = Env.release_node(old)

    pod
    |> put_in(["metadata", "name"], new)
    |> update_env(container_name, fn env ->
      Enum.map(env, fn
        %{"name" => "RELEASE_NODE", "value" => ^default} = var ->
          %{var | "value" => Env.release_node(new)}

        var ->
          var
      end)
    end)
  end

  defp update_env(pod, container_name, fun) do
    update_in(pod, ["spec", "containers"], fn containers ->
      Enum.map(containers, fn
        %{"name" => ^container_name} = container ->
          Map.put(container, "env", fun.(container["env"] || []))

        other ->
          other
      end)
    end)
  end

  @doc """
  Builds the runner pod manifest from the parent pod, the validated options and the runtime
  values.

  Returns `{:error, {:app_container_not_found, name, available_names}}` when the parent has no
  such container, and `{:error, {:invalid_manifest, message}}` when `:manifest` gives something
  that is not a pod.

      iex> parent = %{"metadata" => %{"name" => "web-1", "namespace" => "prod", "uid" => "u1"},
      ...>   "spec" => %{"containers" => [%{"name" => "app", "image" => "web:42"}]}}
      iex> opts = FLAMEK8sBackend.Options.validate!(boot_timeout: 30_000)
      iex> runtime = %FLAMEK8sBackend.RunnerPod.Runtime{runner_name: "web-1-flame-x7k2p",
      ...>   node_basename: "web-1-flame-x7k2p", flame_parent: "g2gD..."}
      iex> {:ok, pod} = FLAMEK8sBackend.RunnerPod.build(parent, opts, runtime)
      iex> {pod["metadata"]["name"], pod["spec"]["restartPolicy"], hd(pod["spec"]["containers"])["image"]}
      {"web-1-flame-x7k2p", "Never", "web:42"}
  """
  @spec build(map(), Options.t(), Runtime.t()) ::
          {:ok, map()}
          | {:error,
             {:app_container_not_found, String.t() | nil, [String.t()]}
             | {:invalid_manifest, String.t()}}
  def build(parent_pod, %Options{} = opts, %Runtime{} = runtime) do
    with {:ok, app} <- find_container(parent_pod, opts.app_container_name),
         {:ok, pod, app_index} <-
           Manifest.pod(parent_pod, app, opts.app_container_name, opts.manifest, placement(opts)),
         :ok <- Env.validate(pod) do
      finish(pod, app_index, parent_pod, app, opts, runtime)
    end
  end

  # Resources and placement: each option given replaces the parent's setting, `nil` removes it.
  # The grace period is always the runner's own, and a manifest's still wins: also one a
  # `:manifest` function copies from the parent pod it is given, which holds the runner's.
  defp placement(opts) do
    %{
      "terminationGracePeriodSeconds" => grace_period(opts.shutdown_timeout),
      "resources" => opts.resources,
      "nodeSelector" => opts.node_selector,
      "tolerations" => opts.tolerations,
      "affinity" => opts.affinity,
      "priorityClassName" => opts.priority_class_name,
      "runtimeClassName" => opts.runtime_class_name
    }
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

  defp finish(pod, index, parent_pod, app, opts, runtime) do
    app_name = get_in(pod, ["spec", "containers", Access.at(index), "name"])
    metadata = Metadata.pod(pod["metadata"], parent_pod, app_name, opts, runtime)
    manifest_env = Env.manifest_env(opts.manifest, app_name, pod, app)
    container = Enum.at(pod["spec"]["containers"], index)
    opts = %{opts | tmp_dir: tmp_dir(opts.tmp_dir, container)}
    own_secret? = secret?(opts, runtime)

    with {:ok, env} <- Env.build(container["env"] || [], manifest_env, opts, runtime, own_secret?) do
      container = runner_container(container, env, opts, runtime, own_secret?)

      pod_spec =
        pod["spec"]
        |> Map.put("restartPolicy", "Never")
        |> Map.delete("nodeName")
        |> put_deadline(opts.active_deadline_seconds)
        |> put_service_account(opts.service_account_name)
        |> put_token_automount(opts.service_account_token)
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

  # The runner serves no traffic: no ports, no probes, no lifecycle hooks of the parent's.
  defp runner_container(container, env, opts, runtime, own_secret?) do
    env_from =
      if own_secret?,
        do: (container["envFrom"] || []) ++ [%{"secretRef" => %{"name" => runtime.runner_name}}],
        else: container["envFrom"] || []

    container
    |> Map.put("env", env)
    |> Map.put("envFrom", env_from)
    |> put_tmp_mount(opts.tmp_dir)
    |> Map.drop(~w(ports livenessProbe readinessProbe startupProbe lifecycle))
  end

  # On SIGTERM (a drain, a spot reclaim, a deletion) the runner's FLAME terminator lets its
  # calls finish for up to :shutdown_timeout; Kubernetes kills the container once
  # the grace period is over. The margin covers the VM's own stop after the drain.
  defp grace_period(shutdown_timeout), do: div(shutdown_timeout + 999, 1_000) + @grace_margin_s

  defp put_deadline(pod_spec, nil), do: pod_spec
  defp put_deadline(pod_spec, seconds), do: Map.put(pod_spec, "activeDeadlineSeconds", seconds)

  # The parent's serviceAccount (the deprecated alias) would contradict the runner's own.
  defp put_service_account(pod_spec, nil), do: pod_spec

  defp put_service_account(pod_spec, name) do
    pod_spec |> Map.delete("serviceAccount") |> Map.put("serviceAccountName", name)
  end

  # The token is a volume, and the kubelet starts a pod with volumes about 0.3 s later: a
  # handed-over token (FLAMEK8sBackend.RunnerToken) needs none.
  defp put_token_automount(pod_spec, :mount), do: pod_spec

  defp put_token_automount(pod_spec, _handover_or_none),
    do: Map.put(pod_spec, "automountServiceAccountToken", false)

  # `:auto`: a writable place only where the root filesystem is not one (an emptyDir is a
  # volume too, see above).
  defp tmp_dir(:auto, %{"securityContext" => %{"readOnlyRootFilesystem" => true}}),
    do: @auto_tmp_dir

  defp tmp_dir(:auto, _container), do: false

  defp tmp_dir(path_or_false, _container), do: path_or_false

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
end
