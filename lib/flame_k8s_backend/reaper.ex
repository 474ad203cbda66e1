defmodule FLAMEK8sBackend.Reaper do
  @moduledoc """
  Deletes a runner's pod and secret from the parent side when the runner is gone.

  One reaper per runner, started before anything is created. It monitors the FLAME Runner
  process that owns the boot and, once booted, the remote terminator: when either goes down
  (idle shutdown, the runner VM killed, its node lost, the Runner crashing mid-boot) it deletes
  what it tracks. A boot that fails has it delete everything at once with `reap_now/1`.
  Failed deletes are retried (not when RBAC forbids them); a booted runner's pod is deleted with
  its own grace period, one that never booted at once.

  A booted runner whose node is still connected when the FLAME Runner or the terminator goes
  down (an idle shutdown: the terminator tells the parent first, then shuts its VM down) deletes
  its own pod and secret in `system_shutdown/0`: the reaper waits for that node to go down (at
  most 30 s), then deletes whatever is left: the runner tells the reaper what it deleted
  (`FLAME_K8S_REAPER` in its env names the reaper), so that is usually nothing. Deleting at
  once would race the runner's own cleanup and always win it. Each delete is a
  `[:flame_k8s_backend, :cleanup, :delete]` event (`deleter: :reaper`, `trigger: :boot_failed`
  or `:runner_down`; see `FLAMEK8sBackend.Telemetry`).

  `FLAMEK8sBackend.remote_boot/1` uses it like this:

      {:ok, reaper} = Reaper.start(kube, namespace, self(), log)
      # Only for a runner with a secret of its own (never the parent's Secret it may reference).
      :ok = Reaper.track(reaper, :secret, runner_name)
      :ok = Reaper.track(reaper, :pod, runner_name)
      # ... create the secret and the pod, await the runner's remote_up, then either
      :ok = Reaper.monitor(reaper, remote_terminator)
      # or, when the boot failed
      :ok = Reaper.reap_now(reaper)
  """
  use GenServer, restart: :temporary

  require Logger

  alias FLAMEK8sBackend.{Kube, Telemetry}

  defstruct [
    :kube,
    :namespace,
    :log,
    pod: nil,
    secret: nil,
    booted?: false,
    runner_node: nil,
    waiting_for_node?: false
  ]

  @attempts 3
  @backoff 250
  # How long a booted runner's VM gets to delete itself and stop once it has been told to; a
  # VM that hangs longer is reaped.
  @runner_exit_grace 30_000

  @doc "Starts a reaper that watches `owner` (the FLAME Runner process)."
  @spec start(Kube.t(), String.t(), pid(), false | Logger.level()) ::
          DynamicSupervisor.on_start_child()
  def start(kube, namespace, owner, log) do
    DynamicSupervisor.start_child(
      FLAMEK8sBackend.ReaperSupervisor,
      {__MODULE__, {kube, namespace, owner, log}}
    )
  end

  @doc false
  @spec start_link({Kube.t(), String.t(), pid(), false | Logger.level()}) :: GenServer.on_start()
  def start_link(args), do: GenServer.start_link(__MODULE__, args)

  @doc "Tracks a created `:pod` or `:secret` by name."
  @spec track(pid(), :pod | :secret, String.t()) :: :ok
  def track(reaper, kind, name), do: GenServer.call(reaper, {:track, kind, name})

  @doc "Also reaps when `pid` (the runner's remote terminator) goes down."
  @spec monitor(pid(), pid()) :: :ok
  def monitor(reaper, pid), do: GenServer.call(reaper, {:monitor, pid})

  @doc """
  Deletes what it tracks now (a failed boot), retrying a failed delete, then stops. Returns
  once done, so the caller's error is returned only after the cleanup.
  """
  @spec reap_now(pid()) :: :ok
  def reap_now(reaper), do: GenServer.call(reaper, :reap_now, :infinity)

  @impl true
  def init({kube, namespace, owner, log}) do
    Process.monitor(owner)
    {:ok, %__MODULE__{kube: kube, namespace: namespace, log: log}}
  end

  @impl true
  def handle_call({:track, :pod, name}, _from, state), do: {:reply, :ok, %{state | pod: name}}

  def handle_call({:track, :secret, name}, _from, state),
    do: {:reply, :ok, %{state | secret: name}}

  def handle_call({:monitor, pid}, _from, state) do
    Process.monitor(pid)
    {:reply, :ok, %{state | booted?: true, runner_node: node(pid)}}
  end

  def handle_call(:reap_now, _from, state) do
    reap(state, :boot_failed, "boot failed")
    {:stop, :normal, :ok, state}
  end

  @impl true
  def handle_info({:DOWN, _ref, :process, _pid, _reason}, %{waiting_for_node?: true} = state),
    do: {:noreply, state}

  def handle_info({:DOWN, _ref, :process, _pid, reason}, state) do
    if runner_node_up?(state) do
      :erlang.monitor_node(state.runner_node, true)
      Process.send_after(self(), :runner_exit_grace_over, @runner_exit_grace)
      {:noreply, %{state | waiting_for_node?: true}}
    else
      reap(state, :runner_down, "runner down: #{inspect(reason)}")
      {:stop, :normal, state}
    end
  end

  # The runner deleted these itself (FLAMEK8sBackend.SelfDelete): nothing left to send for them.
  def handle_info({__MODULE__, :self_deleted, kinds}, state) when is_list(kinds) do
    state =
      Enum.reduce(kinds, state, fn
        :pod, state -> %{state | pod: nil}
        :secret, state -> %{state | secret: nil}
        _other, state -> state
      end)

    {:noreply, state}
  end

  def handle_info({:nodedown, node}, state) do
    reap(state, :runner_down, "runner node #{node} down")
    {:stop, :normal, state}
  end

  def handle_info(:runner_exit_grace_over, state) do
    reap(state, :runner_down, "runner node still up #{@runner_exit_grace} ms after shutdown")
    {:stop, :normal, state}
  end

  defp runner_node_up?(%{booted?: true, runner_node: node}) when node != node(),
    do: node in Node.list(:connected)

  defp runner_node_up?(_state), do: false

  defp reap(%__MODULE__{pod: pod, secret: secret} = state, trigger, why) do
    if pod, do: delete(state, :pod, pod, trigger, why)
    if secret, do: delete(state, :secret, secret, trigger, why)
  end

  defp delete(state, kind, name, trigger, why) do
    meta = %{
      deleter: :reaper,
      trigger: trigger,
      kind: kind,
      namespace: state.namespace,
      name: name
    }

    case Telemetry.cleanup(meta, fn -> delete_with_retries(state, kind, name, 1) end) do
      :ok ->
        log(state, "deleted runner #{kind} #{state.namespace}/#{name} (#{why})")

      {:error, error} ->
        Logger.warning(
          "flame_k8s_backend could not delete runner #{kind} #{state.namespace}/#{name}: " <>
            FLAMEK8sBackend.BootError.describe(error)
        )
    end
  end

  # A booted runner gets its pod's grace period, so its VM can finish what it is doing; a pod
  # that never booted has nothing to finish. Returns the result and the number of attempts.
  defp delete_with_retries(state, kind, name, attempt) do
    result =
      case kind do
        :pod when state.booted? -> Kube.delete_pod(state.kube, state.namespace, name)
        :pod -> Kube.delete_pod(state.kube, state.namespace, name, grace_period: 0)
        :secret -> Kube.delete_secret(state.kube, state.namespace, name)
      end

    case result do
      {:error, {:api, status, _, _}} = error when status in [401, 403] ->
        {error, attempt}

      {:error, _} when attempt < @attempts ->
        # A back-off before the next request, not a wait for an event: nothing announces
        # that an API server is answering again.
        Process.sleep(@backoff * attempt)
        delete_with_retries(state, kind, name, attempt + 1)

      result ->
        {result, attempt}
    end
  end

  defp log(%{log: false}, _message), do: :ok
  defp log(%{log: level}, message), do: Logger.log(level, message)
end
