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
  distributed node reachable at its pod IP, and its service account needs RBAC on `pods` (and
  `secrets` for runners with a Secret of their own): see the
  [Kubernetes setup guide](kubernetes-setup.md).

  ## Guides

    * [Installation](installation.md): precompiled NIFs and building from source
    * [Kubernetes setup](kubernetes-setup.md): Deployment, RBAC, clustering, the headless
      Service and DNSCluster
    * [Runner pods](runner-pods.md): what a runner takes from the parent; `min`, `single_use`
      and `FLAME.place_child/3`
    * [Failures and cleanup](failures-and-cleanup.md): where a failed boot reaches you, the
      back-off of boots that keep failing, logging, and how pods and Secrets are deleted
    * [Code sync and networking](code-sync-and-networking.md)
    * [Telemetry](telemetry.md): the events, in detail in `FLAMEK8sBackend.Telemetry`
    * [Migrating from 0.7](migrating-from-0.7.md)
    * [Troubleshooting](troubleshooting.md): what each `FLAMEK8sBackend.BootError` means and
      what to do

  ## Options

  Given as `{FLAMEK8sBackend, opts}` to the pool, or with `config :flame, FLAMEK8sBackend, opts`
  (the pool's options win). Bad options raise `ArgumentError` naming the option; an option of
  the pure-Elixir `flame_k8s_backend` this backend spells differently says what to write.

  #{FLAMEK8sBackend.Options.docs()}
  """
  @behaviour FLAME.Backend

  require Logger

  import FLAMEK8sBackend.Boot, only: [log: 3, now: 0, remaining: 1]

  alias FLAMEK8sBackend.{
    Boot,
    BootBackoff,
    BootDiagnostics,
    BootError,
    BootProgress,
    Kube,
    Options,
    ParentPod,
    Reaper,
    RunnerPod,
    SelfDelete,
    SharedClient,
    Sweep,
    Telemetry
  }

  # The secret manifest carries the cookie and :secret_env, and the pod manifest FLAME_PARENT:
  # none of them may show up in logs or crash reports. Inspect covers Elixir's reports; an
  # Erlang-formatted crash report (:logger_formatter prints the FLAME Runner's state with ~p)
  # sees only the closure in :sealed, never what it captured.
  @derive {Inspect,
           only: [:namespace, :runner_name, :runner_node_name, :boot_timeout, :boot_timings]}
  defstruct [
    :kube,
    :namespace,
    :parent_ref,
    :sealed,
    :runner_name,
    :runner_selector,
    :app_container,
    :boot_timeout,
    :api_server_request_timeout,
    :unschedulable,
    :log,
    :runner_node_name,
    :remote_terminator_pid,
    :boot_timings,
    :backoff_key,
    # The service account whose token the parent hands over to the runner
    # (FLAMEK8sBackend.RunnerToken), or nil.
    :token_account
  ]

  @typedoc """
  What a boot creates and must never show: the runner pod's manifest, its secret's (`nil` when
  the runner takes the cookie from the parent's Secret), and the values to redact from
  Kubernetes' messages and logs (the cookie and the `:secret_env` values).
  """
  @type sealed :: %{pod: map(), secret: map() | nil, redact: [String.t()]}

  @typedoc """
  The backend state, as `init/1` and `remote_boot/1` return it.

  These fields are public and read-only (read them, never build or change a state yourself):

    * `:kube` - the Kubernetes API connection the boots use (shared by the VM's
      backends with the same connection options).
    * `:namespace`, `:runner_name` - where the runner pod goes and its name (also its
      secret's), chosen by `init/1`.
    * `:runner_selector` - the label selector of this parent's runner pods (their boots
      share one watch of it).
    * `:boot_timeout`, `:unschedulable` - the validated options of those names.
    * `:parent_ref` - the reference the runner's `remote_up` message to the process that
      called `init/1` is tagged with: `{parent_ref, {:remote_up, terminator_pid}}`.
    * `:runner_node_name` - the runner's node, once booted (`nil` before).
    * `:boot_timings` - once booted, milliseconds since `remote_boot/1` started: `:created`
      (secret and pod created), `:running` (the watch saw the pod running; absent when
      remote_up came first) and `:remote_up` (`nil` before).

  The other fields are internal and may change in any release.
  """
  @type t :: %__MODULE__{
          kube: Kube.t(),
          namespace: String.t(),
          parent_ref: reference(),
          sealed: (-> sealed()) | nil,
          runner_name: String.t(),
          runner_selector: String.t(),
          app_container: String.t() | nil,
          boot_timeout: pos_integer(),
          api_server_request_timeout: pos_integer(),
          unschedulable: :wait | :fail,
          log: false | Logger.level(),
          runner_node_name: node() | nil,
          remote_terminator_pid: pid() | nil,
          boot_timings: %{optional(BootProgress.milestone()) => non_neg_integer()} | nil,
          backoff_key: BootBackoff.key()
        }

  @doc """
  `FLAME.Backend` callback: validates the options, connects, reads the parent pod (once per
  VM), sweeps the runner pods and secrets this parent left behind and prepares the runner
  manifest. No pod is
  created yet.

      {:ok, state} = FLAMEK8sBackend.init(boot_timeout: 30_000, env: %{"ROLE" => "runner"})
  """
  @impl true
  @spec init(keyword()) :: {:ok, t()} | {:error, BootError.t()}
  def init(opts) do
    opts =
      Options.from(
        Application.get_env(:flame, __MODULE__, []),
        opts,
        Application.get_env(:flame, :terminator, [])
      )

    with :ok <- ensure_distributed(),
         {:ok, kube} <- SharedClient.get(opts),
         {:ok, {namespace, _} = parent_id} <- ParentPod.id(opts.parent_pod, System.get_env()),
         {:ok, parent_pod} <-
           ParentPod.fetch_once(kube, parent_id, SharedClient.connect_opts(opts)),
         :ok <- ParentPod.ip_family(parent_pod, distribution_family()),
         :ok <- Sweep.run(kube, namespace, parent_pod, opts),
         parent_ref = make_ref(),
         cookie = Atom.to_string(Node.get_cookie()),
         runtime = RunnerPod.Runtime.new(parent_pod, opts, parent_ref, cookie),
         {:ok, pod_manifest} <- build_pod(parent_pod, opts, runtime) do
      secret_manifest = RunnerPod.secret(parent_pod, opts, runtime, cookie)
      redact = [cookie | Map.values(opts.secret_env)]

      {:ok,
       %__MODULE__{
         kube: kube,
         namespace: namespace,
         parent_ref: parent_ref,
         sealed: fn -> %{pod: pod_manifest, secret: secret_manifest, redact: redact} end,
         runner_name: runtime.runner_name,
         # Every boot of this parent shares one watch of the parent's runner pods.
         runner_selector: RunnerPod.selector(parent_pod),
         app_container: RunnerPod.app_container_name(pod_manifest),
         boot_timeout: opts.boot_timeout,
         api_server_request_timeout: opts.api_server_request_timeout,
         unschedulable: opts.unschedulable,
         log: opts.log,
         backoff_key: BootBackoff.key(opts),
         token_account: token_account(opts.service_account_token, pod_manifest)
       }}
    end
  end

  @doc """
  `FLAME.Backend` callback: creates the runner's secret (if it has one) and pod, waits for the
  pod (a watch) and for the runner's `remote_up`, all within `:boot_timeout`. On failure the
  pod and secret are deleted and `{:error, %FLAMEK8sBackend.BootError{}}` is returned.

  After a failure that does not fix itself within seconds (a missing image, RBAC, an invalid
  manifest, ...), boots with the same options back off: for a window of 2 s, doubling with
  each failure after it up to 30 s, they create nothing and return that failure at once,
  with its `:cached` field set (see `FLAMEK8sBackend.BootError` and
  [Failures and cleanup](failures-and-cleanup.md#boots-that-keep-failing)).
  """
  @impl true
  @spec remote_boot(t()) :: {:ok, pid(), t()} | {:error, BootError.t()}
  def remote_boot(%__MODULE__{} = state) do
    Telemetry.boot_span(
      Boot.telemetry_meta(state),
      fn -> boot_or_back_off(state) end,
      fn {:ok, _terminator, state} -> state.boot_timings end
    )
  end

  # A boot within its pool's back-off window sends no request at all.
  defp boot_or_back_off(state) do
    case BootBackoff.check(state.backoff_key) do
      {:cached, error} ->
        # One line: the events and log were in the warning of the failure itself.
        log(state, :info, Exception.message(%{error | events: nil, log: nil}))
        {:error, error}

      :boot ->
        started = BootBackoff.now()
        result = boot_or_clean_up(state)
        :ok = BootBackoff.record(state.backoff_key, started, result)
        result
    end
  end

  defp boot_or_clean_up(state) do
    deadline = now() + state.boot_timeout

    {:ok, reaper} =
      Reaper.start(
        state.kube,
        state.namespace,
        self(),
        state.log,
        state.api_server_request_timeout,
        state.token_account
      )

    case Boot.run(state, reaper, deadline) do
      {:ok, terminator, state} ->
        :ok = Reaper.monitor(reaper, terminator)
        {:ok, terminator, state}

      {:error, %BootError{} = error} ->
        # A failed boot returns at most a request timeout after its deadline (less a margin for
        # the return itself), even when the API server does not answer: half of what is left
        # for the diagnostics, the rest for the deletes, which the reaper goes on retrying in
        # the background if need be.
        cleanup_by = deadline + state.kube.request_timeout - 250
        budget = min(3_000, div(remaining(cleanup_by), 2))
        # Kubernetes' side of the story is read before the pod goes: its log goes with it.
        error =
          BootDiagnostics.add(state.kube, error, [budget: budget] ++ diagnostics_opts(state))

        Reaper.reap_now(reaper, remaining(cleanup_by))
        log(state, :warning, Exception.message(error))
        {:error, error}
    end
  end

  # The API server's ServiceAccount admission gives a pod without one the "default" account.
  defp token_account(:handover, %{"spec" => spec}),
    do: spec["serviceAccountName"] || spec["serviceAccount"] || "default"

  defp token_account(_mount_or_none, _pod), do: nil

  defp diagnostics_opts(state) do
    [
      namespace: state.namespace,
      pod: state.runner_name,
      app_container: state.app_container,
      redact: state.sealed.().redact
    ]
  end

  @doc """
  The manifests `remote_boot/1` would create for a state fresh from `init/1`: the runner
  pod and its secret (`nil` for a runner that takes its cookie from the parent's Secret), for
  callers that create and wait for a runner themselves (benchmarks, tests, a custom wait).

  **They are not redacted**: the secret's `stringData` holds the VM's cookie
  (`RELEASE_COOKIE`) and the `:secret_env` values in plain text, and the pod's env holds
  `FLAME_PARENT` (which lets the runner connect back to this parent). Never log or inspect
  them. The pod lacks one variable `remote_boot/1` adds, `FLAME_K8S_REAPER`: a runner created
  from it deletes its own pod at shutdown (when its service account may) but tells no reaper,
  and no reaper looks after what you created: delete the pod and secret yourself. The sweep
  of a later `init/1` deletes them once they are older than `:boot_timeout` plus 30 s (a
  finished pod, with its secret, once it is older than `:boot_timeout`).

  The runner's `remote_up` comes to the process that called `init/1`, as
  `{state.parent_ref, {:remote_up, terminator_pid}}`. A state returned by a successful
  `remote_boot/1` no longer holds the manifests: this function raises `ArgumentError` for it.

      {:ok, state} = FLAMEK8sBackend.init(boot_timeout: 30_000)
      %{pod: pod, secret: secret} = FLAMEK8sBackend.runner_manifests(state)
      if secret, do: {:ok, _} = FLAMEK8sBackend.Kube.create_secret(state.kube, state.namespace, secret)
      {:ok, _} = FLAMEK8sBackend.Kube.create_pod(state.kube, state.namespace, pod)
      parent_ref = state.parent_ref

      receive do
        {^parent_ref, {:remote_up, terminator}} -> node(terminator)
      after
        state.boot_timeout -> :timeout
      end
  """
  @spec runner_manifests(t()) :: %{pod: map(), secret: map() | nil}
  def runner_manifests(%__MODULE__{sealed: sealed}) when is_function(sealed, 0),
    do: Map.take(sealed.(), [:pod, :secret])

  def runner_manifests(%__MODULE__{}) do
    raise ArgumentError,
          "FLAMEK8sBackend.runner_manifests/1: this state has booted; its manifests are gone"
  end

  @doc """
  `FLAME.Backend` callback: spawns a 0-arity function or `{module, function, args}` on the
  runner node and monitors it.
  """
  @impl true
  @spec remote_spawn_monitor(t(), (-> any()) | {module(), atom(), list()}) ::
          {:ok, {pid(), reference()}}
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
  `FLAME.Backend` callback, run on the runner node: deletes its own pod (and secret) when its
  service account may (see [Cleanup](failures-and-cleanup.md#cleanup)), then stops the VM.
  """
  @impl true
  @spec system_shutdown() :: no_return()
  def system_shutdown do
    SelfDelete.run()
    System.stop()
  end

  @doc """
  `FLAME.Backend` callback. The only messages of this backend that can reach the Runner are
  late answers of a pod watch cancelled at the end of a boot; they carry no news.
  """
  @impl true
  @spec handle_info(term(), t()) :: {:noreply, t()}
  def handle_info({:flame_k8s, ref, _late}, state) when is_reference(ref), do: {:noreply, state}
  def handle_info(_msg, state), do: {:noreply, state}

  ## init

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

  defp distribution_family do
    if :init.get_argument(:proto_dist) == {:ok, [[~c"inet6_tcp"]]}, do: :inet6, else: :inet
  end

  defp build_pod(parent_pod, opts, runtime) do
    case RunnerPod.build(parent_pod, opts, runtime) do
      {:ok, pod} -> {:ok, pod}
      {:error, reason} -> {:error, %BootError{phase: :manifest, reason: reason}}
    end
  end
end
