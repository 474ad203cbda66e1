defmodule FLAMEK8sBackend.Telemetry do
  # The event table, in this moduledoc and in FLAMEK8sBackend's.
  @events_doc """
  | event | measurements | metadata |
  |---|---|---|
  | `[:flame_k8s_backend, :boot, :start]` | `:system_time`, `:monotonic_time` | `:pod` (`"namespace/name"`), `:namespace`, `:runner_name`, `:parent_node`, `:telemetry_span_context` |
  | `[:flame_k8s_backend, :boot, :stop]` | `:duration`, `:monotonic_time`, `:create_duration`, `:pod_start_duration` (when the watch saw the pod running before the runner connected), `:remote_up_duration` | as `:start`, plus `:runner_node` |
  | `[:flame_k8s_backend, :boot, :exception]` | `:duration`, `:monotonic_time` | as `:start`, plus `:kind`, `:reason`, `:stacktrace`, `:phase`, `:error` and `:cached` (`true` when the boot created nothing and returned its pool's last failure from the back-off cache) |
  | `[:flame_k8s_backend, :boot, :retry]` | `:system_time`, `:waited` | as `:start`, plus `:reason`, `:message`, `:phase` and `:new_runner_name` (the replacement pod) |
  | `[:flame_k8s_backend, :cleanup, :delete]` | `:duration`, `:attempts` | `:deleter`, `:trigger`, `:kind`, `:namespace`, `:name`, `:result` |
  | `[:flame_k8s_backend, :runner, :disruption]` | `:system_time` | `:pod`, `:namespace`, `:runner_name`, `:runner_node`, `:reason`, `:message` |
  | `[:flame_k8s_backend, :runner, :down]` | `:system_time` | as `:disruption`, plus `:exit_code` |
  """

  @moduledoc """
  The `:telemetry` events of the backend. They are emitted only when the `:telemetry`
  application is there (it is your dependency, as FLAME is; this library does not depend on
  it) and its module is loaded: no handler can be attached before that, so nothing is lost.

  ## Events

  #{@events_doc}
  Durations are in `:native` time units (convert with `System.convert_time_unit/3`, or
  `unit: {:native, :millisecond}` in `Telemetry.Metrics`). The phase durations of a boot add up
  to its `:duration`: `:create_duration` (secret and pod created), `:pod_start_duration`
  (created until the pod's watch saw it running: scheduling, image pull, container start) and
  `:remote_up_duration` (the rest: until the runner's `remote_up`, from the creation when the
  runner connected before the watch saw the pod running). The first two have millisecond
  precision.

  A failed boot is an `:exception` with `kind: :error`, `reason` and `phase` from its
  `FLAMEK8sBackend.BootError` (also in `:error`, with the pod's events and log when they could be
  read) and `stacktrace: []`; a boot that raised has the raised exception's kind, reason and
  stacktrace and `phase: nil`. A boot of a pool in back-off after a failure that does not fix
  itself within seconds (see [Failures and cleanup](failures-and-cleanup.md#boots-that-keep-failing))
  creates nothing and ends at once: an `:exception` with `cached: true`, whose `:error` is
  the earlier failure (its `:pod` is the pod that failed; the metadata's `:pod` and
  `:runner_name` were never created). Every other `:exception` has `cached: false`: count
  those to count pods that failed.

  Cleanup: one `[:flame_k8s_backend, :cleanup, :delete]` per pod or secret a cleanup path
  deleted or tried to delete, emitted on the parent: `:deleter` is `:reaper` (the parent),
  `:sweep` (the parent, at `init/1`) or `:runner` (the runner deleting its own pod and secret
  at shutdown; it reports each delete, timed on its node, to the parent's reaper, which emits
  the event); `:trigger` is `:boot_failed`, `:runner_down`, `:orphaned` (a sweep),
  `:boot_retry` (the pod Kubernetes took away during a boot, replaced by a new one) or
  `:system_shutdown` (with `deleter: :runner`); `:kind` is `:pod` or `:secret`; `:result` is
  `:ok` or `{:error, reason}`; `:attempts` counts the requests sent. A runner with no reaper
  to tell (one created from `FLAMEK8sBackend.runner_manifests/1`) emits its `:runner` events
  on its own node instead. Each delete is one event, on one node: a handler attached on
  every node counts it once.

  Boot retries: a runner pod that Kubernetes takes away before the runner's `remote_up` (a
  `DisruptionTarget` condition: preemption, eviction, a taint or PodGC deletion, the kubelet's
  termination; or phase `Failed` with reason `Evicted`, `Preempting`, `NodeLost`,
  `NodeShutdown` or `Terminated`) is deleted and replaced by one new pod within the same
  `:boot_timeout`, with one `[:flame_k8s_backend, :boot, :retry]` event: `:reason` and
  `:message` are Kubernetes' for the first pod, `:phase` where its boot was
  (`:container_start` or `:remote_up`), `:waited` the `:native` time since the boot started,
  `:pod` and `:runner_name` the first pod's, `:new_runner_name` the replacement's. Never more
  than one retry per boot, and never for the runner's own faults (a crash, a bad image or
  config, a deletion by someone else): a second pod taken away fails the boot with reason
  `{:disrupted, %{reason: reason, message: message}}`. The boot's `:stop` or `:exception`
  follows as usual (its metadata names the first pod).

  Runners after their boot: the parent follows each booted runner's pod through the watch its
  boots share (no request of its own). `[:flame_k8s_backend, :runner, :disruption]` comes once,
  as soon as the pod gets a `DisruptionTarget` condition, which Kubernetes sets before it acts
  (`:reason` `"PreemptionByScheduler"`, `"EvictionByEvictionAPI"`, `"DeletionByTaintManager"`,
  `"DeletionByPodGC"` or `"TerminationByKubelet"`): user code has the pod's grace period to
  act. `[:flame_k8s_backend, :runner, :down]` comes once when the runner was taken away or
  failed, with one warning log line naming the pod and the reason: `:reason` is the
  condition's reason for a disrupted pod, else the pod's (`"Evicted"`, `"NodeLost"`, ...), else
  the container's (`"OOMKilled"`, `"Error"`), or `"Deleted"` for a pod deleted through the API
  by someone else; `:exit_code` is the container's when known (else `nil`); `:message` is
  Kubernetes' message. An orderly end (an idle shutdown, where the runner deletes its own pod,
  or the parent's reaper deleting the pod of a runner that already stopped) emits no `:down`:
  count `:down` events to count runners Kubernetes took away. Both are emitted on the parent.

  Metadata never holds the cookie, `:secret_env` values or API credentials.
  """

  @type event :: [atom(), ...]

  @doc "The table of events, as Markdown."
  @spec events_doc() :: String.t()
  def events_doc, do: @events_doc

  @boot [:flame_k8s_backend, :boot]
  @cleanup [:flame_k8s_backend, :cleanup, :delete]
  @runner [:flame_k8s_backend, :runner]

  @doc """
  Emits `event` when `:telemetry` is loaded; otherwise does nothing.

      iex> FLAMEK8sBackend.Telemetry.execute([:my_app, :noop], %{count: 1}, %{})
      :ok
  """
  @spec execute(event(), map(), map()) :: :ok
  def execute(event, measurements, metadata), do: emit(telemetry(), event, measurements, metadata)

  @doc false
  # The module is a parameter so the tests can name one that is not loaded.
  @spec emit(module(), event(), map(), map()) :: :ok
  def emit(module, event, measurements, metadata) do
    if function_exported?(module, :execute, 3) do
      _ = module.execute(event, measurements, metadata)
    end

    :ok
  end

  @doc """
  Runs a boot, `fun` (which returns `{:ok, terminator, state}` or `{:error, %BootError{}}`),
  as a span: `:start`, then `:stop` or `:exception` with the metadata of `meta`. `timings`
  reads the milestones (ms since the start) out of a successful result.
  """
  @spec boot_span(map(), (-> result), (result -> map())) :: result when result: term()
  def boot_span(meta, fun, timings) do
    start = System.monotonic_time()
    meta = Map.put(meta, :telemetry_span_context, make_ref())
    execute(@boot ++ [:start], %{system_time: System.system_time(), monotonic_time: start}, meta)

    try do
      fun.()
    catch
      kind, reason ->
        stacktrace = __STACKTRACE__

        exception(meta, start, %{
          kind: kind,
          reason: reason,
          stacktrace: stacktrace,
          phase: nil,
          cached: false
        })

        :erlang.raise(kind, reason, stacktrace)
    else
      {:ok, terminator, _state} = result ->
        now = System.monotonic_time()

        measurements =
          result
          |> timings.()
          |> phase_durations(now - start)
          |> Map.merge(%{duration: now - start, monotonic_time: now})

        execute(@boot ++ [:stop], measurements, Map.put(meta, :runner_node, node(terminator)))
        result

      {:error, %{phase: phase, reason: reason} = error} = result ->
        exception(meta, start, %{
          kind: :error,
          reason: reason,
          stacktrace: [],
          phase: phase,
          error: error,
          cached: Map.get(error, :cached) != nil
        })

        result
    end
  end

  defp exception(meta, start, extra) do
    now = System.monotonic_time()

    execute(
      @boot ++ [:exception],
      %{duration: now - start, monotonic_time: now},
      Map.merge(meta, extra)
    )
  end

  @doc """
  The phase durations (`:native` units) of a boot that took `duration`, from its milestones
  (ms since its start): `:create_duration` and `:pod_start_duration` (when the pod was seen
  running) from the milestones, and `:remote_up_duration` the rest, so that the three add up
  to `duration` exactly.

      iex> ms = &System.convert_time_unit(&1, :millisecond, :native)
      iex> d = FLAMEK8sBackend.Telemetry.phase_durations(%{created: 10, running: 40, remote_up: 400}, ms.(401))
      iex> {d.create_duration, d.pod_start_duration, d.remote_up_duration} == {ms.(10), ms.(30), ms.(361)}
      true
      iex> FLAMEK8sBackend.Telemetry.phase_durations(%{created: 10, remote_up: 400}, ms.(400)) |> Map.keys()
      [:create_duration, :remote_up_duration]
  """
  @spec phase_durations(%{optional(atom()) => non_neg_integer()}, integer()) :: %{
          atom() => integer()
        }
  def phase_durations(timings, duration) do
    native = &System.convert_time_unit(&1, :millisecond, :native)
    create = native.(Map.get(timings, :created, 0))

    start =
      case timings do
        %{running: running} -> %{pod_start_duration: native.(running) - create}
        _ -> %{}
      end

    Map.merge(start, %{
      create_duration: create,
      remote_up_duration: duration - create - Map.get(start, :pod_start_duration, 0)
    })
  end

  @doc """
  Runs one delete of a cleanup path and emits `[:flame_k8s_backend, :cleanup, :delete]`.
  `fun` returns `{result, attempts}`, where `result` is `:ok` or `{:error, reason}`; `meta`
  has `:deleter`, `:trigger`, `:kind`, `:namespace` and `:name`. Returns `result`.
  """
  @spec cleanup(map(), (-> {:ok | {:error, term()}, pos_integer()})) :: :ok | {:error, term()}
  def cleanup(meta, fun) do
    start = System.monotonic_time()
    {result, attempts} = fun.()
    cleanup_done(Map.put(meta, :result, result), System.monotonic_time() - start, attempts)
    result
  end

  @doc """
  Emits `[:flame_k8s_backend, :cleanup, :delete]` for a delete that is over, timed elsewhere:
  `meta` as for `cleanup/2` plus `:result`, `duration` in `:native` units.
  """
  @spec cleanup_done(map(), integer(), pos_integer()) :: :ok
  def cleanup_done(meta, duration, attempts),
    do: execute(@cleanup, %{duration: duration, attempts: attempts}, meta)

  @doc """
  Emits the cleanup event of a delete the runner did itself at shutdown (`deleter: :runner`,
  `trigger: :system_shutdown`, one attempt), from what it reported to the parent's reaper:
  `:kind`, `:name`, `:result` and `:duration_us`, the
  microseconds it took on the runner (native time units may differ between nodes).
  """
  @spec runner_cleanup(String.t(), FLAMEK8sBackend.SelfDelete.deletion()) :: :ok
  def runner_cleanup(namespace, %{kind: kind, name: name, result: result, duration_us: us}) do
    meta = %{
      deleter: :runner,
      trigger: :system_shutdown,
      kind: kind,
      namespace: namespace,
      name: name,
      result: result
    }

    cleanup_done(meta, System.convert_time_unit(us, :microsecond, :native), 1)
  end

  @doc """
  Emits `[:flame_k8s_backend, :runner, event]` (`:disruption` or `:down`) now, with `meta`.
  """
  @spec runner_event(:disruption | :down, map()) :: :ok
  def runner_event(event, meta) when event in [:disruption, :down],
    do: execute(@runner ++ [event], %{system_time: System.system_time()}, meta)

  @doc """
  Emits `[:flame_k8s_backend, :boot, :retry]`: the boot that started at `started` (native
  monotonic time) replaces its pod, which Kubernetes took away; `meta` as for the boot's
  `:start` plus `:reason`, `:message`, `:phase` and `:new_runner_name`.
  """
  @spec boot_retry(map(), integer()) :: :ok
  def boot_retry(meta, started) do
    measurements = %{system_time: System.system_time(), waited: System.monotonic_time() - started}
    execute(@boot ++ [:retry], measurements, meta)
  end

  # A call through a variable: :telemetry is not a dependency, so neither the compiler nor
  # dialyzer may expect it to exist.
  defp telemetry, do: :telemetry
end
