defmodule FLAMEK8sBackend.Reaper.Down do
  @moduledoc false
  # Why a booted runner went, told from its pod: the reaper follows the pod through the shared
  # watch (FLAMEK8sBackend.Kube.follow_pod/4) and, from the changes it forwards, emits
  #
  #   * [:flame_k8s_backend, :runner, :disruption] once, as soon as the pod gets a
  #     DisruptionTarget condition (Kubernetes announces preemption, eviction, taint or
  #     PodGC deletions, and the kubelet's terminations this way before it acts);
  #   * [:flame_k8s_backend, :runner, :down] once, with Kubernetes' reason, exit code and
  #     message, and one warning line, when the runner was taken away or ended on its own:
  #     disrupted (the condition's reason), a container that failed (OOMKilled, an exit code;
  #     the pod's reason first, e.g. Evicted), or deleted by someone else ("Deleted").
  #
  # When the pod is gone from the API, a connection to the runner's node still up is dropped
  # (see disconnect/1). An orderly end is no `:down`: the runner deleted its own pod at an idle shutdown
  # (SelfDelete reported it, and its VM was not already stopping), or the reaper deleted it
  # after the runner went; a runner VM that stopped with exit code 0 likewise. A pod deleted
  # without a condition can be the runner's own delete, whose report comes a moment after the
  # watch shows it: that one is decided when the runner is gone (runner_gone/1), which its
  # report always precedes.

  require Logger

  alias FLAMEK8sBackend.{Kube, Telemetry}

  defstruct [
    :selector,
    :runner_node,
    :pod,
    # fn -> the secret values to keep out of messages end (a closure, so that a crash report
    # of the reaper shows none of them)
    :redact,
    :disruption,
    :terminated,
    # The pod was deleted by someone other than its runner or this reaper, as far as known.
    deleted?: false,
    # The runner deleted its own pod at an orderly shutdown.
    self_deleted?: false,
    reported?: false
  ]

  @type t :: %__MODULE__{}

  @doc """
  Starts following the tracked pod of `state` (a reaper's) through the shared watch of
  `selector`; `redact` returns the values its messages must not show.
  """
  @spec follow(map(), String.t(), node(), (-> [String.t()])) :: map()
  def follow(%{objects: %{pod: %{name: pod}}} = state, selector, runner_node, redact) do
    down = %{state.down | selector: selector, runner_node: runner_node, pod: pod, redact: redact}

    case Kube.follow_pod(state.kube, state.namespace, pod, selector) do
      {:ok, follow} ->
        %{state | follow: follow, down: down}

      {:error, reason} ->
        Logger.warning(
          "flame_k8s_backend cannot follow runner pod #{state.namespace}/#{pod}: " <>
            "#{FLAMEK8sBackend.BootError.describe(reason)}; why it goes will not be known"
        )

        %{state | down: down}
    end
  end

  def follow(state, _selector, _runner_node, _redact), do: state

  @doc """
  Whether the follow may still say why the runner went: it runs, and neither a `:down` nor an
  orderly end has been decided.
  """
  @spec open?(map()) :: boolean()
  def open?(%{follow: nil}), do: false
  def open?(%{down: down}), do: not down.reported? and not down.self_deleted?

  @doc "Takes one message of the follow."
  @spec followed(map(), term()) :: map()
  def followed(%{down: down} = state, {:disruption, info}) do
    if down.disruption do
      state
    else
      info = redact(down, info)
      emit(state, :disruption, Map.take(info, [:reason, :message]))
      put(state, disruption: info)
    end
  end

  def followed(%{down: down} = state, :deleting) do
    cond do
      down.disruption -> report(state)
      # Its own delete, after the runner went.
      state.reaping != nil -> state
      down.self_deleted? -> state
      true -> put(state, deleted?: true)
    end
  end

  def followed(%{down: down} = state, {:terminated, info}) do
    state = put(state, terminated: redact(down, info))

    cond do
      down.disruption -> report(state)
      # Decided when the runner is gone: was it the runner's own delete?
      down.deleted? -> state
      down.self_deleted? -> state
      failed?(info) -> report(state)
      true -> state
    end
  end

  def followed(state, :gone) do
    disconnect(state.down.runner_node)
    %{runner_gone(state) | follow: nil}
  end

  def followed(state, {:error, _reason}), do: %{runner_gone(state) | follow: nil}
  def followed(state, _other), do: state

  @doc """
  The runner's own deletes at shutdown were reported (`FLAMEK8sBackend.SelfDelete`): a
  deletion of its pod seen by the watch was its own, unless its VM was already stopping when
  it deleted (a SIGTERM from a deletion by someone else also ends in its shutdown).
  """
  @spec self_deleted(map(), [map()]) :: map()
  def self_deleted(state, deletions) do
    if Enum.any?(deletions, &match?(%{stopping: true}, &1)),
      do: state,
      else: put(state, self_deleted?: true, deleted?: false)
  end

  @doc "The runner is gone: a disruption or a deletion by someone else not reported yet is."
  @spec runner_gone(map()) :: map()
  def runner_gone(%{down: down} = state) do
    cond do
      down.reported? or down.self_deleted? -> state
      down.disruption || down.deleted? -> report(state)
      true -> state
    end
  end

  # Kubernetes removed the pod only once its containers stopped (or was told to by a forced
  # delete): a connection to its runner that is still up is half-open, its FIN lost with the
  # pod's network, and FLAME's callers and monitors would wait for the next net tick.
  defp disconnect(nil), do: :ok

  defp disconnect(node) do
    if node in Node.list(:connected), do: :erlang.disconnect_node(node)
    :ok
  end

  defp failed?(%{reason: reason, exit_code: code}),
    do: code not in [0, nil] or reason not in ["Completed", "Succeeded"]

  defp report(%{down: %{reported?: true}} = state), do: state

  defp report(%{down: down} = state) do
    terminated = down.terminated || %{}

    {reason, message} =
      cond do
        down.disruption -> {down.disruption.reason, down.disruption.message}
        down.deleted? -> {"Deleted", "deleted through the API by someone else"}
        true -> {terminated.reason, terminated[:message]}
      end

    exit_code = terminated[:exit_code]
    meta = %{reason: reason, exit_code: exit_code, message: message}
    emit(state, :down, meta)
    code = if exit_code, do: " (exit code #{exit_code})", else: ""
    text = if message, do: ": #{message}", else: ""

    Logger.warning(
      "flame_k8s_backend runner pod #{state.namespace}/#{down.pod} went down: " <>
        "#{reason}#{code}#{text}",
      pod: down.pod,
      namespace: state.namespace
    )

    put(state, reported?: true)
  end

  defp emit(%{down: down} = state, event, meta) do
    Telemetry.runner_event(
      event,
      Map.merge(meta, %{
        pod: "#{state.namespace}/#{down.pod}",
        namespace: state.namespace,
        runner_name: down.pod,
        runner_node: down.runner_node
      })
    )
  end

  defp put(state, fields), do: %{state | down: struct!(state.down, fields)}

  defp redact(%{redact: redact}, info) when is_function(redact, 0) do
    case Enum.reject(redact.(), &(&1 in [nil, ""])) do
      [] -> info
      secrets -> Map.new(info, fn {k, v} -> {k, scrub(v, secrets)} end)
    end
  end

  defp redact(_down, info), do: info

  defp scrub(text, secrets) when is_binary(text), do: String.replace(text, secrets, "[redacted]")
  defp scrub(other, _secrets), do: other
end
