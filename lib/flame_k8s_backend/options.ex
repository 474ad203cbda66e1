defmodule FLAMEK8sBackend.Options do
  @moduledoc false
  # The backend's options, in one place: the schema below validates them (raising
  # ArgumentError that names the option, never echoing a :secret_env value) and renders their
  # documentation into FLAMEK8sBackend's moduledoc (`docs/0`). Add an option here and nowhere
  # else.

  alias FLAMEK8sBackend.Options.Types

  # Each option: its type (checked by Types.check/3), its default, and its documentation.
  # `doc: false` hides an option FLAME passes but this backend does not use. A `nil` default
  # means the option may be left unset, and `default_doc` then says what happens.
  @schema [
    app_container_name: [
      type: :non_empty_string,
      default: nil,
      default_doc: "the first container",
      doc: "the parent container whose image and settings the runner uses."
    ],
    manifest: [
      type: :manifest,
      default: nil,
      default_doc: "none, the runner pod as built from the parent",
      doc: """
      a map deep-merged into the runner pod built from the parent (containers merge by name; \
      a container without a name is the app container), or a function \
      `(parent_pod, app_container) -> pod manifest` that returns the whole pod. See \
      [Runner pods](runner-pods.md#what-the-backend-sets) for what is always set on top.\
      """
    ],
    env: [
      type: :env,
      default: %{},
      doc: """
      `%{"NAME" => "value"}` (or an EnvVarSource map as value) for the runner's app \
      container; wins over the manifest's env and the defaults.\
      """
    ],
    secret_env: [
      type: :secret_env,
      default: %{},
      doc: """
      `%{"NAME" => "value"}` given to the runner through its secret, never as plain pod env. \
      Values never appear in errors or `inspect/1`. A function of no arguments returning that \
      map is called at each `init/1` instead: the pool's own state (FLAME keeps the backend's \
      options, and a crash report prints them) then holds the function, not the values.\
      """
    ],
    labels: [
      type: :labels,
      default: %{},
      doc: """
      extra runner pod labels, e.g. `%{"team" => "search"}`. Not the headless Service's \
      label: DNSCluster connects parents only (see \
      [Kubernetes setup](kubernetes-setup.md#headless-service-and-dnscluster)).\
      """
    ],
    omit_owner_reference: [
      type: :boolean,
      default: false,
      doc: "when `true`, the runner pod and secret have no owner reference to the parent pod."
    ],
    runner_node_basename: [
      type: :node_basename,
      default: nil,
      default_doc: """
      the runner pod's name, so every runner node has a distinct name \
      (`web-7d9f8b-x2k9p-flame-ab12cd34@10.1.2.3`) even where several share one host's epmd\
      """,
      doc: "the runner's node name before `@`."
    ],
    boot_timeout: [
      type: :milliseconds,
      default: 30_000,
      doc: """
      ms for the whole boot (create, schedule, start, `remote_up`). FLAME passes its pool's \
      `:boot_timeout`.\
      """
    ],
    unschedulable: [
      type: {:one_of, [:fail, :wait]},
      default: :wait,
      doc: """
      `:wait` (a cluster autoscaler or Karpenter may still add a node) or `:fail` (fail at \
      once). With `:wait` the boot follows the pending pod's Events: while the autoscaler adds \
      a node the phase is `:scaling_up` (a boot that times out then says so, with the \
      autoscaler's message: raise `:boot_timeout` for autoscaled pools), and when it says no \
      node it can add would fit (`NotTriggerScaleUp`, Karpenter's `FailedScheduling`) the boot \
      fails at once at `:scheduling` with `{:no_scale_up, ...}`. Otherwise a timeout reports \
      the scheduler's message.\
      """
    ],
    log: [
      type: :log,
      default: false,
      doc: """
      `false` or a Logger level: each boot's progress (pod running, runner up) at that \
      level, a failed boot's error at `:warning`, the reaper's deletes at that level. FLAME's \
      pool (0.4, 0.5) puts its own `:log` (default `false`) over the options of \
      `{FLAMEK8sBackend, opts}`, so a `log:` there never arrives: set the pool's `:log` \
      (`{FLAME.Pool, log: :info, ...}`, which turns on FLAME's own runner logs too) or \
      `config :flame, FLAMEK8sBackend, log: :info` (a pool's `false` never hides it).\
      """
    ],
    parent_pod: [
      type: :parent_pod,
      default: nil,
      default_doc: "from the `POD_NAMESPACE` and `POD_NAME` environment variables",
      doc: "`{namespace, name}` of the pod this VM runs in."
    ],
    kubeconfig: [
      type: :non_empty_string,
      default: nil,
      default_doc:
        "the pod's service account; outside a pod, `$KUBECONFIG`, then `~/.kube/config`",
      doc: """
      path of a kubeconfig to connect through, for a parent running outside the cluster \
      (e.g. in development).\
      """
    ],
    context: [
      type: :non_empty_string,
      default: nil,
      default_doc: "the kubeconfig's current context",
      doc: "the kubeconfig context to use; implies connecting through a kubeconfig."
    ],
    request_timeout: [
      type: :milliseconds,
      default: 15_000,
      doc: "ms per Kubernetes API request."
    ],
    api_server_request_timeout: [
      type: :milliseconds,
      # kube-apiserver's default --request-timeout (1m0s).
      default: 60_000,
      doc: """
      ms the API server itself gives a request before it abandons it: its \
      `--request-timeout` (kube-apiserver's default is 60 s). A create whose answer was lost \
      (`:request_timeout` passed first, the connection broke) may still be committed until \
      then, so the parent deletes such a runner pod or secret again once that much time \
      has passed. Raise it for an API server run with a longer `--request-timeout`.\
      """
    ],
    tmp_dir: [
      type: :tmp_dir,
      default: :auto,
      doc: """
      an absolute path where the runner's app container gets a writable `emptyDir` volume \
      (named `flame-tmp`), with `TMPDIR` pointing at it unless the container sets `TMPDIR` \
      itself; `false` for none; `:auto` for `"/tmp/flame"` when the app container's root \
      filesystem is read-only (`securityContext.readOnlyRootFilesystem`), else none (any \
      volume makes a pod start about 0.3 s later: see \
      [Boot time](runner-pods.md#boot-time)). It is what FLAME's `code_sync` needs on \
      runners that cannot write to `/tmp` (see "Code sync" below). A volume named \
      `flame-tmp` in `:manifest` replaces the default one (e.g. `medium: Memory`, a \
      `sizeLimit`); a mount of the app container at this path is kept as it is.\
      """
    ],
    dist_port: [
      type: :port,
      default: nil,
      default_doc: "any free port, as Erlang chooses",
      doc: """
      a fixed TCP port for the runner's Erlang distribution, so a NetworkPolicy can admit \
      exactly it (with epmd's 4369): `-kernel inet_dist_listen_min P inet_dist_listen_max P` \
      goes first in the runner's `ERL_AFLAGS`, where it wins over later settings of the same \
      parameters. The parent's own port is the parent's setting (see \
      [Networking](code-sync-and-networking.md#networking)).\
      """
    ],
    release_mode: [
      type: {:one_of, [:interactive, :embedded, :inherit]},
      default: :interactive,
      doc: """
      the runner's `RELEASE_MODE`, how a release loads its code: `:interactive` loads each \
      module on first use, and a runner's VM connects to its parent about 0.2 s sooner than \
      in `:embedded` mode, which loads every module of the release before it starts (the \
      default of releases); `:inherit` leaves the parent's. It matters only for runners that \
      run a release (`bin/app start`); `:env` wins over it. Code that asks \
      `function_exported?/3` of a module it never loaded sees `false` in interactive mode: \
      call `Code.ensure_loaded/1` first, or set `:embedded`. See \
      [Boot time](runner-pods.md#boot-time).\
      """
    ],
    hidden: [
      type: :boolean,
      default: false,
      doc: """
      `true` starts the runner's VM as a hidden Erlang node (`-hidden` in its `ERL_AFLAGS`, \
      which both `bin/app start` and plain `elixir`/`erl` read): it connects to its parent \
      only, and `:global` and `:pg` never see it, so several parents clustered together \
      (DNSCluster, libcluster) cannot lose each other's runners to `:global`'s \
      "prevent overlapping partitions". What it costs: from the runner, `:pg` groups \
      (Phoenix.PubSub's default adapter), `:global` names and `Node.list()` do not reach \
      the parent or the cluster. So `false` keeps runners visible, for code on them that \
      uses those; set `true` when more than one clustered parent boots runners. `-hidden` goes in front of whatever `ERL_AFLAGS` the runner \
      gets otherwise (the parent's forwarded one, or `:env`'s, which replaces it), which \
      stays; with `false`, a `-hidden` the parent's own flags carry is forwarded as it is. \
      See [Several parents and hidden runners](kubernetes-setup.md#several-parents-and-hidden-runners).\
      """
    ],
    active_deadline_seconds: [
      type: :seconds,
      default: nil,
      default_doc: "none: a runner lives as long as FLAME keeps it",
      doc: """
      the runner pod's `activeDeadlineSeconds`: Kubernetes kills the runner this many seconds \
      after its pod started, whatever happens to the parent, the reaper or the API server. A \
      backstop for runners that must never outlive a known bound (`single_use` jobs, \
      `:omit_owner_reference`); leave it unset for long-lived runners (`min` pools, \
      `FLAME.place_child/3`, Livebook), which it would kill in the middle of their work. \
      It must be longer than `:boot_timeout` (an `ArgumentError` naming both otherwise), and \
      should leave the runner time to work after its boot.\
      """
    ],
    service_account_name: [
      type: :dns_subdomain,
      default: nil,
      default_doc: "the parent pod's service account",
      doc: """
      the ServiceAccount the runner pods run as (their `spec.serviceAccountName`; it wins \
      over `:manifest`'s). Runners rarely need what the parent needs: give them an account \
      whose Role allows only `delete` on `pods`, so a runner can delete its own pod when it \
      shuts down and nothing else (see \
      [Runner service account](kubernetes-setup.md#runner-service-account)).\
      """
    ],
    service_account_token: [
      type: {:one_of, [:handover, :mount, :none]},
      default: :handover,
      doc: """
      how a runner gets the token of its service account, which it deletes its own pod (and \
      secret) with when it stops (see \
      [Runner service account](kubernetes-setup.md#runner-service-account)). `:handover`: \
      the pod mounts no token (`automountServiceAccountToken: false`, so it starts about \
      0.3 s sooner); once the runner is up, the parent requests a token bound to the runner's \
      pod (`create` on `serviceaccounts/token`, see [RBAC](kubernetes-setup.md#rbac)) and \
      hands it over through Erlang distribution, renewed while the runner lives; it serves \
      only that cleanup. `:mount`: the API server mounts the account's token as for any pod \
      (unless the account or the manifest says `automountServiceAccountToken: false`), for \
      runner code that calls the Kubernetes API itself. `:none`: no token at all; the \
      parent deletes the runner's pod. `:handover` and `:none` win over the manifest's \
      `automountServiceAccountToken`.\
      """
    ],
    resources: [
      type: {:inheritable, :resources},
      default: :inherit,
      default_doc: "the parent app container's",
      doc: """
      the app container's `resources`, as Kubernetes writes them: \
      `%{requests: %{"cpu" => "500m", "memory" => "1Gi"}, limits: %{"nvidia.com/gpu" => 1}}` \
      (quantities as strings or integers, resource names as Kubernetes qualified names, so \
      GPUs and other extended resources too). It replaces the parent's resources as a whole; \
      `nil` gives the runner none. See \
      [Placement and resources](runner-pods.md#placement-and-resources).\
      """
    ],
    node_selector: [
      type: {:inheritable, :node_selector},
      default: :inherit,
      default_doc: "the parent pod's",
      doc: """
      the runner pod's `nodeSelector`, `%{"label" => "value"}`: it replaces the parent's \
      (`nil`: none, so a pool never lands on the parent's nodes by accident).\
      """
    ],
    tolerations: [
      type: {:inheritable, :tolerations},
      default: :inherit,
      default_doc: "the parent pod's",
      doc: """
      the runner pod's `tolerations`, a list of maps such as \
      `%{key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule"}`: it replaces the \
      parent's (`nil`: none).\
      """
    ],
    affinity: [
      type: {:inheritable, :affinity},
      default: :inherit,
      default_doc: "none (runners do not take the parent's)",
      doc: """
      the runner pod's `affinity`, a map of `nodeAffinity`, `podAffinity` and \
      `podAntiAffinity` as Kubernetes writes them.\
      """
    ],
    priority_class_name: [
      type: {:inheritable, :dns_subdomain},
      default: :inherit,
      default_doc: "none (runners do not take the parent's)",
      doc: """
      the runner pod's `priorityClassName`, e.g. a low class for preemptible batch pools.\
      """
    ],
    runtime_class_name: [
      type: {:inheritable, :dns_subdomain},
      default: :inherit,
      default_doc: "none (runners do not take the parent's)",
      doc: "the runner pod's `runtimeClassName` (e.g. `nvidia`, `gvisor`)."
    ],
    shutdown_timeout: [
      type: :milliseconds,
      # FLAME's terminator's own default.
      default: 30_000,
      default_doc: """
      the runner's `config :flame, :terminator, shutdown_timeout:` (the parent's own, as \
      runners run its release), else FLAME's `30_000`\
      """,
      doc: """
      the ms a stopping runner's FLAME terminator lets its calls finish (on SIGTERM too), as \
      `config :flame, :terminator, shutdown_timeout:` sets it in the runner. Runner pods get \
      `terminationGracePeriodSeconds` of this (in seconds, rounded up) plus 10 s, so that \
      Kubernetes does not kill a drained or reclaimed runner before FLAME has; a \
      `terminationGracePeriodSeconds` in `:manifest` wins (see \
      [Graceful termination](runner-pods.md#graceful-termination)).\
      """
    ],
    # FLAME passes its own terminator supervisor; this backend has no use for it.
    terminator_sup: [type: :any, default: nil, doc: false]
  ]

  @keys Keyword.keys(@schema)

  @derive {Inspect, except: [:secret_env]}
  defstruct Enum.map(@schema, fn {key, spec} -> {key, spec[:default]} end)

  @typedoc "Validated options; `inspect/1` leaves out `:secret_env`."
  @type t :: %__MODULE__{
          app_container_name: String.t() | nil,
          manifest: map() | (map(), map() -> map()) | nil,
          env: %{String.t() => String.t() | map()},
          secret_env: %{String.t() => String.t()},
          labels: %{String.t() => String.t()},
          omit_owner_reference: boolean(),
          runner_node_basename: String.t() | nil,
          boot_timeout: pos_integer(),
          unschedulable: :wait | :fail,
          log: false | Logger.level(),
          parent_pod: {String.t(), String.t()} | nil,
          kubeconfig: String.t() | nil,
          context: String.t() | nil,
          request_timeout: pos_integer(),
          api_server_request_timeout: pos_integer(),
          tmp_dir: String.t() | false | :auto,
          dist_port: 1..65_535 | nil,
          hidden: boolean(),
          active_deadline_seconds: pos_integer() | nil,
          service_account_name: String.t() | nil,
          service_account_token: :handover | :mount | :none,
          resources: map() | nil | :inherit,
          node_selector: %{String.t() => String.t()} | nil | :inherit,
          tolerations: [map()] | nil | :inherit,
          affinity: map() | nil | :inherit,
          priority_class_name: String.t() | nil | :inherit,
          runtime_class_name: String.t() | nil | :inherit,
          shutdown_timeout: pos_integer(),
          release_mode: :interactive | :embedded | :inherit,
          terminator_sup: term()
        }

  @doc """
  Merges `config :flame, FLAMEK8sBackend` (lowest) with the options FLAME passes, then
  validates. FLAME's pool always passes its own `:log` (default `false`, over any `log:` in
  `{FLAMEK8sBackend, opts}`): a `false` never hides the level configured in the config.

      iex> FLAMEK8sBackend.Options.from([boot_timeout: 1_000, log: :info], log: false).log
      :info
  """
  @spec from(keyword(), keyword(), keyword()) :: t()
  def from(app_env, opts, terminator_env \\ []) do
    app_env = Types.keyword!(app_env, "config :flame, FLAMEK8sBackend")
    opts = Types.keyword!(opts, "FLAMEK8sBackend options")
    merged = terminator_env |> release_defaults() |> Keyword.merge(app_env) |> Keyword.merge(opts)
    log = Enum.find([opts[:log], app_env[:log]], false, & &1)
    validate!(Keyword.put(merged, :log, log))
  end

  # Runners run the parent's release, so the parent's `config :flame, :terminator` is theirs:
  # on SIGTERM their terminator lets calls finish for its :shutdown_timeout.
  defp release_defaults(terminator_env) do
    what = "config :flame, :terminator"

    case Keyword.fetch(Types.keyword!(terminator_env, what), :shutdown_timeout) do
      {:ok, ms} ->
        try do
          [shutdown_timeout: Types.check(:milliseconds, :shutdown_timeout, ms)]
        rescue
          error in ArgumentError ->
            reraise ArgumentError, "#{what}: #{error.message}", __STACKTRACE__
        end

      :error ->
        []
    end
  end

  @doc """
  Validates options given as a keyword list; unset options get their defaults.

      iex> FLAMEK8sBackend.Options.validate!(env: [ROLE: "runner"]).env
      %{"ROLE" => "runner"}
  """
  @spec validate!(keyword()) :: t()
  def validate!(opts) do
    opts = Types.keyword!(opts, "FLAMEK8sBackend options")

    Types.known!(opts, @keys)

    opts
    |> Enum.reduce(%__MODULE__{}, fn {key, value}, acc ->
      Map.replace!(acc, key, validate_one!(key, value))
    end)
    |> Types.check_deadline!()
  end

  @doc """
  The documented options as a Markdown list, for `FLAMEK8sBackend`'s moduledoc.

      iex> FLAMEK8sBackend.Options.docs() =~ "* `:boot_timeout` - ms for the whole boot"
      true
  """
  @spec docs() :: String.t()
  def docs do
    for {key, spec} <- @schema, spec[:doc] do
      "  * `#{inspect(key)}` - #{spec[:doc]} Default: #{default_doc(spec)}.\n"
    end
    |> Enum.join()
  end

  defp default_doc(spec) do
    case Keyword.fetch(spec, :default_doc) do
      {:ok, text} -> String.trim_trailing(text)
      :error -> "`#{literal(spec[:default])}`"
    end
  end

  # Written as in code: 30_000, not 30000.
  defp literal(ms) when is_integer(ms) and ms >= 10_000,
    do: Regex.replace(~r/\B(?=(\d{3})+$)/, Integer.to_string(ms), "_")

  defp literal(value), do: inspect(value)

  defp validate_one!(key, value) do
    spec = Keyword.fetch!(@schema, key)

    if is_nil(value) and is_nil(spec[:default]),
      do: nil,
      else: Types.check(spec[:type], key, value)
  end
end
