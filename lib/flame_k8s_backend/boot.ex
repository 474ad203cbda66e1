defmodule FLAMEK8sBackend.Boot do
  @moduledoc false
  # One runner boot of FLAMEK8sBackend.remote_boot/1, up to the runner's remote_up: create the
  # secret and pod (tracked by the boot's reaper), watch the pod, wait for remote_up. A failure
  # comes back as a BootError; FLAMEK8sBackend adds the diagnostics and cleans up.

  require Logger

  alias FLAMEK8sBackend.{
    BootError,
    BootProgress,
    Kube,
    Reaper,
    RunnerName,
    RunnerPod,
    SelfDelete,
    Telemetry
  }

  @doc """
  Boots the runner of `state` (fresh from `FLAMEK8sBackend.init/1`) by `deadline` (`now/0`
  time), with `reaper` tracking what it creates. Returns the runner's terminator and the
  state of a booted runner (without its manifests).
  """
  # The pod and its secret get a name chosen in init/1 rather than by generateName, so that
  # even a create whose answer was lost (a timeout) is known to the reaper and deleted, however
  # late the API server commits it (see FLAMEK8sBackend.Reaper).
  @spec run(FLAMEK8sBackend.t(), pid(), integer()) ::
          {:ok, pid(), FLAMEK8sBackend.t()} | {:error, BootError.t()}
  def run(state, reaper, deadline) do
    started = now()
    progress = BootProgress.new(pod_id(state), node())
    %{pod: pod_manifest, secret: secret_manifest} = state.sealed.()
    # The runner tells its reaper what it deleted itself on shutdown (SelfDelete).
    pod_manifest =
      RunnerPod.put_env(
        pod_manifest,
        state.app_container,
        "FLAME_K8S_REAPER",
        SelfDelete.encode_reaper(reaper)
      )

    boot = %{
      reaper: reaper,
      manifest: pod_manifest,
      deadline: deadline,
      started: started,
      started_native: System.monotonic_time(),
      retried?: false
    }

    with :ok <- create_secret(state, reaper, secret_manifest, deadline),
         {:ok, terminator, progress, state} <- boot_pod(state, boot, progress) do
      log(state, :info, "runner #{node(terminator)} up in #{progress.timings.remote_up} ms")

      {:ok, terminator,
       %{
         state
         | remote_terminator_pid: terminator,
           runner_node_name: node(terminator),
           boot_timings: progress.timings,
           sealed: nil
       }}
    end
  end

  # Creates the pod and waits for its runner. A pod Kubernetes takes away before remote_up
  # (evicted, preempted, its node lost) is replaced by one new pod within the same deadline.
  defp boot_pod(state, boot, progress) do
    with :ok <- create(state, boot.reaper, :pod, boot.manifest, boot.deadline),
         progress = BootProgress.reached(progress, :created, now() - boot.started),
         :ok <- time_left(state, boot.deadline, progress),
         log(
           state,
           :info,
           "runner pod #{pod_id(state)} created in #{progress.timings.created} ms"
         ) do
      case await_boot(state, boot, progress) do
        {:ok, terminator, progress} ->
          {:ok, terminator, progress, state}

        {:disrupted, info, phase} when not boot.retried? ->
          retry(state, boot, progress, info, phase)

        {:disrupted, info, phase} ->
          {:error, %BootError{phase: phase, reason: {:disrupted, info}, pod: pod_id(state)}}

        {:error, _} = error ->
          error
      end
    end
  end

  # Once per boot: the pod Kubernetes took away is deleted (no grace: it never ran a call),
  # and a new one, with a new name, takes its place. Should that delete fail, the boot fails
  # instead, and its reaper deletes the pod it still tracks.
  defp retry(state, boot, progress, info, phase) do
    old = state.runner_name
    new = RunnerName.replacement(old)

    deleted =
      Telemetry.cleanup(
        %{
          deleter: :reaper,
          trigger: :boot_retry,
          kind: :pod,
          namespace: state.namespace,
          name: old
        },
        fn -> {Kube.delete_pod(state.kube, state.namespace, old, grace_period: 0), 1} end
      )

    if deleted == :ok do
      Telemetry.boot_retry(
        Map.merge(telemetry_meta(state), %{
          new_runner_name: new,
          reason: info.reason,
          message: info.message,
          phase: phase
        }),
        boot.started_native
      )

      log(
        state,
        :info,
        "runner pod #{pod_id(state)} was taken away by Kubernetes while booting " <>
          "(#{describe_disruption(info)}): booting #{state.namespace}/#{new} instead"
      )

      state = %{state | runner_name: new}
      manifest = RunnerPod.rename(boot.manifest, state.app_container, old, new)
      progress = %{progress | pod: pod_id(state), timings: Map.delete(progress.timings, :running)}
      boot_pod(state, %{boot | manifest: manifest, retried?: true}, progress)
    else
      {:error, %BootError{phase: phase, reason: {:disrupted, info}, pod: pod_id(state)}}
    end
  end

  defp describe_disruption(%{reason: reason, message: message}) when is_binary(message),
    do: "#{reason}: #{message}"

  defp describe_disruption(%{reason: reason}), do: reason

  # A runner that takes its cookie from the parent's Secret has none of its own.
  defp create_secret(_state, _reaper, nil, _deadline), do: :ok

  defp create_secret(state, reaper, manifest, deadline),
    do: create(state, reaper, :secret, manifest, deadline)

  # The reaper tracks the object from before its create is sent, and learns what the result
  # says about its existence. In a burst a create may wait for one of the client's create
  # slots for what is left of the boot, not just a request timeout; the request itself then
  # has its own timeout. The names were chosen in init/1 for this runner alone: the create is
  # idempotent (a 409 is ours).
  defp create(state, reaper, kind, manifest, deadline) do
    :ok = Reaper.track(reaper, kind, state.runner_name)
    create_fun = if kind == :pod, do: &Kube.create_pod/4, else: &Kube.create_secret/4

    result =
      create_fun.(state.kube, state.namespace, manifest,
        queue_timeout: remaining(deadline),
        idempotent: true
      )

    :ok = Reaper.created(reaper, kind, result)

    # A 409 on the name this backend chose is this very create, committed by an earlier try.
    case {Reaper.create_outcome(result), result} do
      {:created, _} ->
        :ok

      {_, {:error, reason}} ->
        phase = if kind == :pod, do: :create_pod, else: :create_secret
        {:error, %BootError{phase: phase, reason: reason, pod: pod_id(state)}}
    end
  end

  # Slow API requests may have eaten the boot timeout before the pod could even be watched.
  defp time_left(state, deadline, progress) do
    if remaining(deadline) > 0 do
      :ok
    else
      waited = progress.timings.created
      reason = {:timeout, %{waited_ms: waited, detail: "creating the secret and pod"}}
      {:error, %BootError{phase: :create_pod, reason: reason, pod: pod_id(state)}}
    end
  end

  # One watch covers the whole boot: it reports failures (image pull, a crash of the runner VM
  # even after the container started, deletion), when the pod runs, and the phase a timeout
  # hit; the boot itself completes on the runner's remote_up, which may even arrive before the
  # watch has seen the pod running.
  defp await_boot(state, boot, progress) do
    case Kube.await_pod(state.kube, state.namespace, state.runner_name,
           timeout: remaining(boot.deadline),
           unschedulable: state.unschedulable,
           report_ready: false,
           label_selector: state.runner_selector
         ) do
      {:ok, await} ->
        receive_boot(state, await, boot, progress)

      {:error, reason} ->
        {:error, %BootError{phase: :scheduling, reason: reason, pod: pod_id(state)}}
    end
  end

  defp receive_boot(state, await, boot, progress) do
    %{parent_ref: parent_ref} = state
    %{ref: ref} = await

    receive do
      {^parent_ref, {:remote_up, terminator}} ->
        # The reaper follows the pod from now on, on the same shared watch: subscribed before
        # the await leaves it, so that the watch stays open.
        redact = state.sealed.().redact

        :ok =
          Reaper.follow(boot.reaper, state.runner_selector, node(terminator), fn -> redact end)

        Kube.cancel_await(await)
        flush_await(ref)
        {:ok, terminator, BootProgress.reached(progress, :remote_up, now() - boot.started)}

      {:flame_k8s, ^ref, {:running, pod}} ->
        :ok = Reaper.pod_running(boot.reaper)
        progress = BootProgress.reached(progress, :running, now() - boot.started)
        ip = get_in(pod, ["status", "podIP"])
        ms = progress.timings.running
        log(state, :info, "runner pod #{pod_id(state)} running at #{ip} after #{ms} ms")
        receive_boot(state, await, boot, progress)

      {:flame_k8s, ^ref, {:disrupted, info}} ->
        phase = if BootProgress.running?(progress), do: :remote_up, else: :container_start
        {:disrupted, info, phase}

      {:flame_k8s, ^ref, result} ->
        {:error, BootProgress.error(progress, result)}
    after
      # The watch always answers by its timeout; this only guards against a lost message.
      remaining(boot.deadline) + 5_000 ->
        Kube.cancel_await(await)
        {:error, BootProgress.silent_watch_error(progress, state.boot_timeout)}
    end
  end

  defp flush_await(ref) do
    receive do
      {:flame_k8s, ^ref, _} -> flush_await(ref)
    after
      0 -> :ok
    end
  end

  @doc "Now, in ms of the monotonic clock: what deadlines are measured in."
  @spec now() :: integer()
  def now, do: System.monotonic_time(:millisecond)

  @doc "The ms left until `deadline` (`now/0` time), never less than 0."
  @spec remaining(integer()) :: non_neg_integer()
  def remaining(deadline) when is_integer(deadline), do: max(deadline - now(), 0)

  @doc "The metadata of a boot's telemetry events: its runner pod and the parent node."
  @spec telemetry_meta(FLAMEK8sBackend.t()) :: map()
  def telemetry_meta(state) do
    %{
      pod: pod_id(state),
      namespace: state.namespace,
      runner_name: state.runner_name,
      parent_node: node()
    }
  end

  @doc "The runner pod of a backend state as `namespace/name`, how logs and errors name it."
  @spec pod_id(FLAMEK8sBackend.t()) :: String.t()
  def pod_id(%{namespace: namespace, runner_name: name}), do: "#{namespace}/#{name}"

  @doc "Logs `message` at the state's `:log` level (warnings always as warnings), or not at all."
  @spec log(FLAMEK8sBackend.t(), :info | :warning, String.t()) :: :ok
  def log(%{log: false}, _kind, _message), do: :ok

  def log(%{log: level} = state, kind, message) do
    level = if kind == :warning, do: :warning, else: level
    Logger.log(level, message, pod: state.runner_name, namespace: state.namespace)
  end
end
