defmodule FLAMEK8sBackend do
  @moduledoc """
  A `FLAME.Backend` that boots each runner as a pod in the parent's own Kubernetes cluster.

  The runner pod runs the parent's image, joins the parent's BEAM cluster through Erlang
  distribution, runs FLAME calls, and is deleted when it goes idle. Boots are event driven (a
  watch on the pod, no polling), every failure says why, and no pod or secret is left behind.

  ## Usage

      # config/runtime.exs
      config :flame, :backend, FLAMEK8sBackend
      config :flame, FLAMEK8sBackend, log: :info

      # in your supervision tree
      {FLAME.Pool,
       name: MyApp.Runner,
       backend: {FLAMEK8sBackend, env: %{"MY_SETTING" => "1"}},
       min: 0, max: 10, max_concurrency: 5, idle_shutdown_after: 30_000}

      FLAME.call(MyApp.Runner, fn -> :math.pi() end)

  The parent pod needs `POD_NAME` and `POD_NAMESPACE` from the downward API, must run as a
  distributed node reachable at its pod IP (`RELEASE_DISTRIBUTION=name`,
  `RELEASE_NODE=my_app@$(POD_IP)`), and its service account needs `get`, `list`, `watch`,
  `create`, `delete` on `pods` and `create`, `delete` on `secrets` in its namespace. See the
  README and `examples/kubernetes/`.

  ## Options

  Given as `{FLAMEK8sBackend, opts}` to the pool, or with `config :flame, FLAMEK8sBackend, opts`
  (the pool's options win):

    * `:app_container_name` - the parent container whose image and settings the runner uses.
      Default: the first container.
    * `:manifest` - a map deep-merged into the runner pod built from the parent (containers
      merge by name; a container without a name is the app container), or a function
      `(parent_pod, app_container) -> pod manifest` that returns the whole pod. See
      `FLAMEK8sBackend.RunnerPod` for what is always set on top.
    * `:env` - `%{"NAME" => "value"}` (or an EnvVarSource map as value) for the runner's app
      container; wins over the manifest's env and the defaults.
    * `:secret_env` - `%{"NAME" => "value"}` given to the runner through its secret, never as
      plain pod env.
    * `:labels` - extra runner pod labels, e.g. `%{"excluster" => "flame"}` for the headless
      Service your DNSCluster query uses.
    * `:omit_owner_reference` - default `false`; when `true` the runner pod has no owner
      reference to the parent pod.
    * `:runner_node_basename` - the runner's node name before `@`; default: the runner pod's
      name, so every runner node has a distinct name (`web-7d9f8b-x2k9p-flame-ab12cd34@10.1.2.3`)
      even where several share one host's epmd.
    * `:boot_timeout` - ms for the whole boot (create, schedule, start, `remote_up`);
      default 30_000. FLAME passes its pool's `:boot_timeout`.
    * `:unschedulable` - `:wait` (default; a cluster autoscaler may still add a node, and the
      scheduler's message is reported if the boot times out) or `:fail` (fail at once).
    * `:log` - `false` (default) or a Logger level for boot progress. FLAME's pool passes its
      own `:log` (default `false`); a `false` never hides a level set here or in config.
    * `:parent_pod` - `{namespace, name}`; default from `POD_NAMESPACE` and `POD_NAME`.
    * `:kubeconfig`, `:context` - connect through a kubeconfig instead of the pod's service
      account (a parent running outside the cluster, e.g. in development).
    * `:request_timeout` - ms per Kubernetes API request; default 15_000.

  ## Failures

  `remote_boot/1` returns `{:error, %FLAMEK8sBackend.BootError{}}` naming the phase and the
  reason: image pull (with the image), unschedulable (with the scheduler's message), a
  container that exited (code, `OOMKilled`), RBAC (the server's message names verb and
  resource), an unreachable API server, or a timeout naming the phase it stopped in.
  The pod and its secret are deleted before the error is returned.

  ## Cleanup

  A runner's pod and secret are deleted: by the parent when the runner's terminator or its
  FLAME Runner process goes down (`FLAMEK8sBackend.Reaper`), on every boot failure, by the
  runner itself in `system_shutdown/0` when its service account may delete pods, and by a
  sweep of this parent's finished runner pods whenever a runner is initialised.
  """
  # FLAME is the user's dependency, not ours (see mix.exs): when mix compiles this library
  # before FLAME, the behaviour is simply not declared; the callbacks are the same.
  if Code.ensure_loaded?(FLAME.Backend), do: @behaviour(FLAME.Backend)

  require Logger

  alias FLAMEK8sBackend.{BootError, Kube, Options, Reaper, RunnerPod}

  @compile {:no_warn_undefined, [FLAME.Parent]}

  @sweep_interval 60_000

  # The secret manifest carries the cookie and :secret_env, and the pod manifest FLAME_PARENT:
  # none of them may show up in logs or crash reports.
  @derive {Inspect,
           only: [:namespace, :runner_name, :runner_node_name, :boot_timeout, :boot_timings]}
  defstruct [
    :kube,
    :namespace,
    :parent_ref,
    :pod_manifest,
    :secret_manifest,
    :runner_name,
    :boot_timeout,
    :unschedulable,
    :log,
    :runner_node_name,
    :remote_terminator_pid,
    :boot_timings
  ]

  @typedoc """
  The backend state. Once booted, `boot_timings` holds milliseconds since `remote_boot/1`
  started: `:created` (secret and pod created), `:running` (the watch saw the pod running;
  absent when remote_up came first) and `:remote_up`.
  """
  @type t :: %__MODULE__{}

  @doc """
  `FLAME.Backend` callback: validates the options, connects, reads the parent pod, sweeps
  this parent's finished runner pods and prepares the runner manifest. No pod is created yet.

      {:ok, state} = FLAMEK8sBackend.init(boot_timeout: 30_000, env: %{"ROLE" => "runner"})
  """
  @spec init(keyword()) :: {:ok, t()} | {:error, BootError.t()}
  def init(opts) do
    opts = Options.from(Application.get_env(:flame, __MODULE__, []), opts)

    with :ok <- ensure_distributed(),
         {:ok, kube} <- connect(opts),
         {:ok, {namespace, _} = parent_id} <- parent_pod_id(opts),
         {:ok, parent_pod} <- fetch_parent_pod(kube, parent_id),
         :ok <- sweep(kube, namespace, parent_pod, opts),
         parent_ref = make_ref(),
         runner_name = runner_name(parent_pod),
         basename = opts.runner_node_basename || runner_name,
         {:ok, pod_manifest} <-
           RunnerPod.build(parent_pod, %{
             app_container_name: opts.app_container_name,
             manifest: opts.manifest,
             env: opts.env,
             labels: opts.labels,
             omit_owner_reference: opts.omit_owner_reference,
             node_basename: basename,
             flame_parent: flame_parent(parent_ref, basename),
             runner_name: runner_name,
             secret_names: Map.keys(opts.secret_env),
             forwarded_env: forwarded_env()
           })
           |> tag_error(:manifest) do
      cookie = Atom.to_string(Node.get_cookie())

      secret =
        RunnerPod.secret(
          parent_pod,
          runner_name,
          cookie,
          opts.secret_env,
          opts.omit_owner_reference
        )

      {:ok,
       %__MODULE__{
         kube: kube,
         namespace: namespace,
         parent_ref: parent_ref,
         pod_manifest: pod_manifest,
         secret_manifest: secret,
         runner_name: runner_name,
         boot_timeout: opts.boot_timeout,
         unschedulable: opts.unschedulable,
         log: opts.log
       }}
    end
  end

  @doc """
  `FLAME.Backend` callback: creates the runner's secret and pod, waits for the pod (a watch)
  and for the runner's `remote_up`, all within `:boot_timeout`. On failure the pod and secret
  are deleted and `{:error, %FLAMEK8sBackend.BootError{}}` is returned.
  """
  @spec remote_boot(t()) :: {:ok, pid(), t()} | {:error, BootError.t()}
  def remote_boot(%__MODULE__{} = state) do
    deadline = System.monotonic_time(:millisecond) + state.boot_timeout
    {:ok, reaper} = Reaper.start(state.kube, state.namespace, self(), state.log)

    case boot(state, reaper, deadline) do
      {:ok, terminator, state} ->
        :ok = Reaper.monitor(reaper, terminator)
        {:ok, terminator, state}

      {:error, %BootError{} = error} ->
        Reaper.reap_now(reaper)
        log(state, :warning, Exception.message(error))
        {:error, error}
    end
  end

  # The pod and its secret get a name chosen here rather than by generateName, so that even a
  # create whose answer was lost (a timeout) is known to the reaper and deleted.
  defp boot(state, reaper, deadline) do
    started = now()
    :ok = Reaper.track(reaper, :secret, state.runner_name)
    :ok = Reaper.track(reaper, :pod, state.runner_name)

    with :ok <- create(state, :create_secret, &Kube.create_secret/3, state.secret_manifest),
         :ok <- create(state, :create_pod, &Kube.create_pod/3, state.pod_manifest),
         timings = %{created: now() - started},
         :ok <- time_left(state, deadline, timings),
         log(state, :info, "runner pod #{pod_id(state)} created in #{timings.created} ms"),
         {:ok, terminator, timings} <- await_boot(state, deadline, started, timings) do
      log(state, :info, "runner #{node(terminator)} up in #{timings.remote_up} ms")

      {:ok, terminator,
       %{
         state
         | remote_terminator_pid: terminator,
           runner_node_name: node(terminator),
           boot_timings: timings,
           pod_manifest: nil,
           secret_manifest: nil
       }}
    end
  end

  # Slow API requests may have eaten the boot timeout before the pod could even be watched.
  defp time_left(state, deadline, timings) do
    if remaining(deadline) > 0 do
      :ok
    else
      reason = {:timeout, %{waited_ms: timings.created, detail: "creating the secret and pod"}}
      {:error, %BootError{phase: :create_pod, reason: reason, pod: pod_id(state)}}
    end
  end

  defp create(state, phase, create_fun, manifest) do
    case create_fun.(state.kube, state.namespace, manifest) do
      {:ok, _} -> :ok
      {:error, reason} -> {:error, %BootError{phase: phase, reason: reason, pod: pod_id(state)}}
    end
  end

  # One watch covers the whole boot: it reports failures (image pull, a crash of the runner VM
  # even after the container started, deletion), when the pod runs, and the phase a timeout
  # hit; the boot itself completes on the runner's remote_up, which may even arrive before the
  # watch has seen the pod running.
  defp await_boot(state, deadline, started, timings) do
    case Kube.await_pod(state.kube, state.namespace, state.runner_name,
           timeout: remaining(deadline),
           unschedulable: state.unschedulable,
           report_ready: false
         ) do
      {:ok, await} ->
        receive_boot(state, await, deadline, started, timings)

      {:error, reason} ->
        {:error, %BootError{phase: :scheduling, reason: reason, pod: pod_id(state)}}
    end
  end

  defp receive_boot(state, await, deadline, started, timings) do
    %{parent_ref: parent_ref} = state
    %{ref: ref} = await

    receive do
      {^parent_ref, {:remote_up, terminator}} ->
        Kube.cancel_await(await)
        flush_await(ref)
        {:ok, terminator, Map.put(timings, :remote_up, now() - started)}

      {:flame_k8s, ^ref, {:running, pod}} ->
        timings = Map.put(timings, :running, now() - started)
        ip = get_in(pod, ["status", "podIP"])

        log(
          state,
          :info,
          "runner pod #{pod_id(state)} running at #{ip} after #{timings.running} ms"
        )

        receive_boot(state, await, deadline, started, timings)

      {:flame_k8s, ^ref, result} ->
        {:error, not_ready_error(state, result, timings)}
    after
      # The watch always answers by its timeout; this only guards against a lost message.
      remaining(deadline) + 5_000 ->
        Kube.cancel_await(await)
        phase = if Map.has_key?(timings, :running), do: :running, else: :container_start
        timeout = %{phase: phase, waited_ms: state.boot_timeout, detail: nil}
        {:error, not_ready_error(state, {:timeout, timeout}, timings)}
    end
  end

  defp flush_await(ref) do
    receive do
      {:flame_k8s, ^ref, _} -> flush_await(ref)
    after
      0 -> :ok
    end
  end

  defp now, do: System.monotonic_time(:millisecond)

  # A container that exits once the pod ran is the runner VM failing to come up.
  defp not_ready_error(state, {:failed, reason}, timings) do
    phase =
      cond do
        match?({:unschedulable, _}, reason) -> :scheduling
        Map.has_key?(timings, :running) -> :remote_up
        true -> :container_start
      end

    %BootError{phase: phase, reason: reason, pod: pod_id(state)}
  end

  # The pod ran but the runner never said remote_up: name the phase after what was awaited.
  defp not_ready_error(state, {:timeout, %{phase: :running} = info}, timings) do
    detail = info[:detail] || "pod running, but the runner node never connected to #{node()}"
    not_ready_error(state, {:timeout, %{info | phase: :remote_up, detail: detail}}, timings)
  end

  defp not_ready_error(state, {:timeout, %{phase: phase} = info}, _timings) do
    %BootError{phase: phase, reason: {:timeout, Map.delete(info, :phase)}, pod: pod_id(state)}
  end

  defp not_ready_error(state, {:deleted, name}, timings) do
    phase = if Map.has_key?(timings, :running), do: :remote_up, else: :container_start
    %BootError{phase: phase, reason: {:deleted, name}, pod: pod_id(state)}
  end

  defp not_ready_error(state, {:error, reason}, timings) do
    phase = if Map.has_key?(timings, :running), do: :remote_up, else: :scheduling
    %BootError{phase: phase, reason: reason, pod: pod_id(state)}
  end

  @doc """
  `FLAME.Backend` callback: spawns a 0-arity function or `{module, function, args}` on the
  runner node and monitors it.
  """
  @spec remote_spawn_monitor(t(), (() -> any()) | {module(), atom(), list()}) ::
          {:ok, {pid(), reference()}} | {:error, term()}
  def remote_spawn_monitor(%__MODULE__{runner_node_name: node} = _state, term) do
    case term do
      func when is_function(func, 0) ->
        {:ok, Node.spawn_monitor(node, func)}

      {mod, fun, args} when is_atom(mod) and is_atom(fun) and is_list(args) ->
        {:ok, Node.spawn_monitor(node, mod, fun, args)}

      other ->
        raise ArgumentError,
              "FLAMEK8sBackend.remote_spawn_monitor/2: expected a function of arity 0 or {module, function, args}, got: #{inspect(other)}"
    end
  end

  @doc """
  `FLAME.Backend` callback, run on the runner node: deletes its own pod and secret when its
  service account may (see `FLAMEK8sBackend.SelfDelete`), then stops the VM.
  """
  @spec system_shutdown() :: no_return()
  def system_shutdown do
    FLAMEK8sBackend.SelfDelete.run()
    System.stop()
  end

  @doc """
  `FLAME.Backend` callback. The only messages of this backend that can reach the Runner are
  late answers of a pod watch cancelled at the end of a boot; they carry no news.
  """
  @spec handle_info(term(), t()) :: {:noreply, t()}
  def handle_info({:flame_k8s, ref, _late}, state) when is_reference(ref), do: {:noreply, state}
  def handle_info(_msg, state), do: {:noreply, state}

  ## init helpers

  defp ensure_distributed do
    if Node.alive?() do
      :ok
    else
      {:error,
       %BootError{
         phase: :connect,
         reason:
           {:not_distributed,
            "the parent VM is not a distributed node: run it with RELEASE_DISTRIBUTION=name and RELEASE_NODE=<app>@$(POD_IP)"}
       }}
    end
  end

  defp connect(opts) do
    connect_opts =
      [request_timeout: opts.request_timeout] ++
        if(opts.kubeconfig, do: [kubeconfig: opts.kubeconfig], else: []) ++
        if opts.context, do: [context: opts.context, mode: :kubeconfig], else: []

    # One client per connection settings for the whole VM: runners then share its connection
    # pool (no TLS handshake per boot) and the NIF's memory stays that of one client.
    key = {__MODULE__, :kube, connect_opts}

    case :persistent_term.get(key, nil) do
      %Kube{} = kube ->
        {:ok, kube}

      nil ->
        with {:ok, kube} <- Kube.connect(connect_opts) |> tag_error(:connect) do
          :persistent_term.put(key, kube)
          {:ok, kube}
        end
    end
  rescue
    # The NIF failed to load (its stub raises): say so instead of crashing the Runner.
    error in ErlangError ->
      {:error, %BootError{phase: :connect, reason: {:nif_not_loaded, Exception.message(error)}}}
  end

  defp parent_pod_id(%{parent_pod: {_, _} = id}), do: {:ok, id}

  defp parent_pod_id(_opts) do
    case {System.get_env("POD_NAMESPACE"), System.get_env("POD_NAME")} do
      {ns, name} when ns not in [nil, ""] and name not in [nil, ""] ->
        {:ok, {ns, name}}

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

  defp fetch_parent_pod(kube, {namespace, name}) do
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

  # Finished runner pods of this parent, left behind when an earlier reaper could not delete
  # them (the parent VM was killed, the API was unreachable). Only pods older than a boot
  # timeout, so a sibling boot that just failed keeps its own story, and at most once a minute
  # per parent, so a burst of boots does not list pods once each. Never fails a boot.
  defp sweep(kube, namespace, parent_pod, opts) do
    key = {__MODULE__, :swept, get_in(parent_pod, ["metadata", "uid"])}
    last = :persistent_term.get(key, nil)

    if is_nil(last) or now() - last > @sweep_interval do
      :persistent_term.put(key, now())
      selector = RunnerPod.selector(parent_pod)

      with {:ok, pods} <- Kube.list_pods(kube, namespace, label_selector: selector) do
        for pod <- pods, finished?(pod), older_than?(pod, opts.boot_timeout) do
          name = get_in(pod, ["metadata", "name"])
          _ = Kube.delete_pod(kube, namespace, name, grace_period: 0)
          _ = Kube.delete_secret(kube, namespace, name)
          if opts.log, do: Logger.log(opts.log, "swept finished runner pod #{namespace}/#{name}")
        end
      end
    end

    :ok
  end

  defp finished?(pod), do: get_in(pod, ["status", "phase"]) in ["Succeeded", "Failed"]

  defp older_than?(pod, ms) do
    with created when is_binary(created) <- get_in(pod, ["metadata", "creationTimestamp"]),
         {:ok, created, _} <- DateTime.from_iso8601(created) do
      DateTime.diff(DateTime.utc_now(), created, :millisecond) > ms
    else
      _ -> false
    end
  end

  defp flame_parent(parent_ref, basename) do
    parent_ref
    |> FLAME.Parent.new(self(), __MODULE__, basename, "POD_IP")
    |> FLAME.Parent.encode()
  end

  defp forwarded_env do
    for name <- ~w(ERL_AFLAGS ERL_ZFLAGS),
        value = System.get_env(name),
        value not in [nil, ""],
        into: %{} do
      {name, value}
    end
  end

  defp runner_name(parent_pod) do
    base =
      parent_pod
      |> get_in(["metadata", "name"])
      |> String.slice(0, 40)
      |> String.trim_trailing("-")

    suffix = :crypto.strong_rand_bytes(5) |> Base.encode32(case: :lower, padding: false)
    "#{base}-flame-#{suffix}"
  end

  defp tag_error({:error, %BootError{}} = error, _phase), do: error
  defp tag_error({:error, reason}, phase), do: {:error, %BootError{phase: phase, reason: reason}}
  defp tag_error(ok, _phase), do: ok

  defp remaining(deadline), do: max(deadline - System.monotonic_time(:millisecond), 0)

  defp pod_id(%{namespace: namespace, runner_name: name}), do: "#{namespace}/#{name}"

  defp log(%{log: false}, _level, _message), do: :ok

  defp log(%{log: level} = state, kind, message) do
    level = if kind == :warning, do: :warning, else: level
    Logger.log(level, message, pod: state.runner_name, namespace: state.namespace)
  end
end
