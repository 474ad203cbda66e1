defmodule FLAMEK8sBackend.BootError do
  @moduledoc """
  Why a runner did not boot. `FLAMEK8sBackend.init/1` and `FLAMEK8sBackend.remote_boot/1`
  return `{:error, %FLAMEK8sBackend.BootError{}}`, FLAME stops the runner with it, and
  `Exception.message/1` tells a person what happened. What each phase and reason means, and
  what to do about it: [Troubleshooting](troubleshooting.md).

  Fields:

    * `:phase` - where the boot stopped: `:connect`, `:parent_pod`, `:manifest` (the runner pod
      could not be built from the parent and the options), `:create_secret`, `:create_pod`,
      `:scheduling`, `:scaling_up` (the pod was unschedulable and a cluster autoscaler or
      Karpenter was adding a node for it: only with `{:timeout, _}`), `:container_start` or
      `:remote_up`
    * `:reason` - what happened, as data:
      * `{:image_pull, %{reason: "ErrImagePull" | "ImagePullBackOff" | ..., image: image, message: msg}}`
      * `{:container_config, %{reason: reason, container: name, message: msg}}`
      * `{:container_exited, %{container: name, exit_code: code, reason: "OOMKilled" | "Error" | ..., message: msg}}`
      * `{:unschedulable, scheduler_message}`
      * `{:no_scale_up, %{source: "cluster-autoscaler" | "karpenter", message: msg, scheduler: scheduler_message}}` -
        unschedulable, and the autoscaler says no node it can add would take the pod (its
        `NotTriggerScaleUp` or Karpenter's `FailedScheduling` event, whose message is `msg`):
        with `unschedulable: :wait`, the boot fails at once rather than at its timeout
      * `{:pod_phase, "Failed" | "Succeeded", message}`
      * `{:deleted, pod_name}` - somebody deleted the pod during the boot
      * `{:disrupted, %{reason: reason, message: message}}` - Kubernetes took the pod away
        (`reason` a `DisruptionTarget` condition's, e.g. `"EvictionByEvictionAPI"`, or a failed
        pod's, e.g. `"Evicted"`) and then took its one replacement away too
      * `{:timeout, %{waited_ms: ms, detail: detail}}` - `:phase` says which phase timed out;
        `detail` is the last thing Kubernetes said (e.g. the scheduler's message; at
        `:scaling_up`, the autoscaler's, as `"cluster-autoscaler: pod triggered scale-up: ..."`)
      * `{:parent_pod_not_found, "namespace/name"}`, `{:not_distributed, message}`,
        `{:ip_family, message}` (runners' pod IPs are of another family than the parent's
        distribution)
      * `{:app_container_not_found, name, available_names}` - the `:app_container_name` option
        names no container of the parent pod
      * `{:nif_not_loaded, message}` - the NIF library could not be loaded
      * `{:outcome_unknown, %{reason: reason, settled_at: ms}}` - a create was sent but its
        answer was lost; the API server may still commit it (the reaper deletes it then)
      * an API client error: `{:api, status, reason, message}` (the API server's own
        message; a 403 names the verb and the resource), `{:connect, message}` (the server
        could not be reached), `{:timeout, ms}` (no answer within `:request_timeout`),
        `{:invalid_manifest, message}` (naming the offending path of the pod or secret),
        `{:config, message}` (unusable credentials or kubeconfig), `{:decode, message}` (an
        answer that is not what Kubernetes sends) or `{:internal, message}` (a bug in this
        library: please report it)
    * `:pod` - `"namespace/name"` of the runner pod, when one was created
    * `:events` - when the pod may have existed, its latest Events, oldest first (maps with
      `:type`, `:reason`, `:message`, `:count`, `:last_seen`, `:source`),
      `{:unreadable, why}` (e.g. the API server did not answer in time) or `:forbidden` (the
      parent's Role lacks `list` on `events`: a warning said so once); `nil` when there was
      no pod to ask about
    * `:log` - for a container that exited (or a runner VM that never connected),
      `%{container: name, lines: last_lines}`, `{:unreadable, why}` or `:forbidden` (no `get`
      on `pods/log`); otherwise `nil`

    * `:cached` - `nil` for a failure of this boot. A boot of a pool whose last boot failed for
      a reason that does not fix itself within seconds (an image pull, the container's config,
      an invalid manifest, a 400, 401, 403, 404 or 422 from the API server, unschedulable with
      `unschedulable: :fail` or with no scale-up that could help) is not tried again for a
      while: within a window that starts at 2 s and doubles with each failure after it, up to
      30 s, boots with the same options return that last error at once, creating nothing,
      with `cached: %{failures: n, age_ms: ms, retry_in_ms: ms}` (failures in a row, how long
      ago the error happened, when the next boot tries for real). `:pod`, `:events` and `:log` are the
      failed pod's. A success, or other options, end the window; a timeout, a connection
      error, a 5xx or a container that exited never open one. See
      [Failures and cleanup](failures-and-cleanup.md#boots-that-keep-failing).

  `:events` and `:log` are best effort: whether they could
  be read never changes `:phase` or `:reason`. Secret values (the cookie, `:secret_env`) never
  appear in them, nor in `:reason`.

  ## Example

      iex> error = %FLAMEK8sBackend.BootError{phase: :scheduling, pod: "default/web-flame-x7k2p",
      ...>   reason: {:unschedulable, "0/3 nodes are available: 3 Insufficient cpu."}}
      iex> Exception.message(error)
      "runner pod default/web-flame-x7k2p failed while scheduling: unschedulable: 0/3 nodes are available: 3 Insufficient cpu."

  A boot that timed out while a cluster autoscaler was adding a node for its pod:

      iex> error = %FLAMEK8sBackend.BootError{phase: :scaling_up, pod: "default/web-flame-x7k2p",
      ...>   reason: {:timeout, %{waited_ms: 30_000,
      ...>     detail: "cluster-autoscaler: pod triggered scale-up: [{gpu-pool 0->1 (max: 4)}]"}}}
      iex> Exception.message(error)
      "runner pod default/web-flame-x7k2p failed while waiting for a new node: timed out after 30000 ms while the autoscaler added a node (cluster-autoscaler: pod triggered scale-up: [{gpu-pool 0->1 (max: 4)}]); new nodes take minutes: raise the pool's :boot_timeout for autoscaled pools"

  The same failure, returned from the cache by a boot 1.2 s later:

      iex> error = %FLAMEK8sBackend.BootError{phase: :scheduling, pod: "default/web-flame-x7k2p",
      ...>   reason: {:unschedulable, "0/3 nodes are available: 3 Insufficient cpu."},
      ...>   cached: %{failures: 2, age_ms: 1_200, retry_in_ms: 2_800}}
      iex> error |> Exception.message() |> String.split("\\n") |> List.last()
      "  not retried: the same failure as 1200 ms ago (2 in a row); no pod was created; boots with these options fail at once for 2800 ms more"
  """

  defexception [:phase, :reason, :pod, :events, :log, :cached]

  @type phase ::
          :connect
          | :parent_pod
          | :manifest
          | :create_secret
          | :create_pod
          | :scheduling
          | :scaling_up
          | :container_start
          | :remote_up

  @type unreadable :: {:unreadable, String.t()}

  @type t :: %__MODULE__{
          phase: phase(),
          reason: term(),
          pod: String.t() | nil,
          events: [map()] | unreadable() | :forbidden | nil,
          log: %{container: String.t(), lines: [String.t()]} | unreadable() | :forbidden | nil,
          cached:
            %{
              failures: pos_integer(),
              age_ms: non_neg_integer(),
              retry_in_ms: pos_integer()
            }
            | nil
        }

  @doc """
  The error for a person: what failed and why, then what Kubernetes said (events, the last log
  lines), one per line.

      iex> error = %FLAMEK8sBackend.BootError{phase: :container_start, pod: "prod/web-flame-x7k2p",
      ...>   reason: {:container_exited, %{container: "web", exit_code: 1, reason: "Error"}},
      ...>   events: {:unreadable, "no answer within 3000 ms"},
      ...>   log: %{container: "web", lines: ["** (RuntimeError) no DATABASE_URL"]}}
      iex> String.split(Exception.message(error), "\\n")
      [
        ~s{runner pod prod/web-flame-x7k2p failed while starting its container: container "web" exited with code 1 (Error)},
        "  events: not readable (no answer within 3000 ms)",
        ~s(  last log lines of container "web":),
        "    ** (RuntimeError) no DATABASE_URL"
      ]
  """
  @impl true
  @spec message(t()) :: String.t()
  def message(%__MODULE__{phase: phase, reason: reason, pod: pod} = error) do
    subject = if pod, do: "runner pod #{pod}", else: "runner"

    "#{subject} failed while #{phase_text(phase)}: #{describe_in(phase, reason)}" <>
      cached_text(error.cached) <> events_text(error.events) <> log_text(error.log)
  end

  defp cached_text(nil), do: ""

  defp cached_text(%{failures: failures, age_ms: age, retry_in_ms: retry_in}) do
    "\n  not retried: the same failure as #{age} ms ago (#{failures} in a row); no pod was " <>
      "created; boots with these options fail at once for #{retry_in} ms more"
  end

  defp events_text(nil), do: ""
  defp events_text(:forbidden), do: ""
  defp events_text([]), do: "\n  events: none"
  defp events_text({:unreadable, why}), do: "\n  events: not readable (#{why})"

  defp events_text(events) when is_list(events) do
    "\n  events (oldest first):" <>
      Enum.map_join(events, fn event ->
        count = if is_integer(event[:count]) and event[:count] > 1, do: " (x#{event[:count]})"
        "\n    #{event[:type]} #{event[:reason]}#{count}: #{event[:message]}"
      end)
  end

  defp log_text(nil), do: ""
  defp log_text(:forbidden), do: ""
  defp log_text({:unreadable, why}), do: "\n  log: not readable (#{why})"

  defp log_text(%{container: container, lines: []}),
    do: "\n  log of container #{inspect(container)}: empty"

  defp log_text(%{container: container, lines: lines}) do
    "\n  last log lines of container #{inspect(container)}:" <>
      Enum.map_join(lines, &"\n    #{&1}")
  end

  defp phase_text(:connect), do: "connecting to the Kubernetes API"
  defp phase_text(:parent_pod), do: "reading the parent pod"
  defp phase_text(:manifest), do: "building its manifest"
  defp phase_text(:create_secret), do: "creating its secret"
  defp phase_text(:create_pod), do: "being created"
  defp phase_text(:scheduling), do: "scheduling"
  defp phase_text(:scaling_up), do: "waiting for a new node"
  defp phase_text(:container_start), do: "starting its container"
  defp phase_text(:remote_up), do: "waiting for the runner node's remote_up"
  defp phase_text(other), do: to_string(other)

  # FLAME bounds the boot by :boot_timeout: a scale-up that needs longer can only be waited
  # for with a longer one.
  defp describe_in(:scaling_up, {:timeout, %{} = info}) do
    autoscaler = if info[:detail], do: " (#{info[:detail]})", else: ""

    "timed out after #{info[:waited_ms]} ms while the autoscaler added a node#{autoscaler}; " <>
      "new nodes take minutes: raise the pool's :boot_timeout for autoscaled pools"
  end

  defp describe_in(_phase, reason), do: describe(reason)

  @doc """
  A sentence for a person about `reason` (a `:reason` of this error, or any
  API client error).

      iex> FLAMEK8sBackend.BootError.describe({:api, 403, "Forbidden", "pods is forbidden"})
      "API error 403 Forbidden: pods is forbidden"
  """
  @spec describe(term()) :: String.t()
  def describe({:image_pull, %{} = info}),
    do: "cannot pull image #{inspect(info[:image])} (#{info[:reason]}): #{info[:message]}"

  def describe({:container_config, %{} = info}),
    do:
      "container #{inspect(info[:container])} cannot be created (#{info[:reason]}): #{info[:message]}"

  def describe({:container_exited, %{} = info}) do
    message = if info[:message], do: ": #{info[:message]}", else: ""

    "container #{inspect(info[:container])} exited with code #{info[:exit_code]} " <>
      "(#{info[:reason]})#{message}"
  end

  def describe({:unschedulable, message}), do: "unschedulable: #{message}"

  def describe({:no_scale_up, %{} = info}),
    do:
      "unschedulable, and #{info[:source]} cannot add a node that would fit: " <>
        "#{info[:message]} (scheduler: #{info[:scheduler]})"

  def describe({:pod_phase, phase, message}),
    do: "pod reached phase #{phase}#{if message, do: ": #{message}", else: ""}"

  def describe({:deleted, name}), do: "pod #{name} was deleted"

  def describe({:disrupted, %{} = info}) do
    message = if info[:message], do: ": #{info[:message]}", else: ""
    "taken away by Kubernetes (#{info[:reason]})#{message}, after one replacement pod"
  end

  def describe({:timeout, %{} = info}) do
    detail = if info[:detail], do: "; last seen: #{info[:detail]}", else: ""
    "timed out after #{info[:waited_ms]} ms#{detail}"
  end

  def describe({:parent_pod_not_found, pod}),
    do:
      "parent pod #{pod} not found (set POD_NAMESPACE and POD_NAME from the downward API, " <>
        "or the :parent_pod option)"

  def describe({:not_distributed, message}), do: message
  def describe({:ip_family, message}), do: message
  def describe({:nif_not_loaded, message}), do: message
  # A 401 says only "Unauthorized": the person reading it needs to know it is the credentials.
  def describe({:api, 401, reason, message}),
    do:
      "API error 401 #{reason}: the API server rejected the credentials (the token is " <>
        "expired, revoked or not valid for this cluster): #{message}"

  def describe({:api, status, reason, message}), do: "API error #{status} #{reason}: #{message}"
  def describe({:connect, message}), do: "cannot reach the API server: #{message}"

  def describe({:timeout, ms}) when is_integer(ms),
    do: "no answer from the API server within #{ms} ms"

  def describe({:outcome_unknown, %{reason: reason}}),
    do:
      "the create was sent but its answer was lost (#{describe(reason)}); " <>
        "the API server may still commit it, and it is deleted if it does"

  def describe({:invalid_manifest, message}), do: "invalid runner manifest: #{message}"
  def describe({:config, message}), do: "unusable Kubernetes connection settings: #{message}"
  def describe({:decode, message}), do: "unexpected answer from the API server: #{message}"
  def describe({:internal, message}), do: "internal error of the Kubernetes client: #{message}"

  def describe({:app_container_not_found, name, available}),
    do: "the parent pod has no container #{inspect(name)} (it has #{inspect(available)})"

  def describe(other), do: inspect(other)
end
