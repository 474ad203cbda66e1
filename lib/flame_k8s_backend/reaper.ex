defmodule FLAMEK8sBackend.Reaper do
  @moduledoc """
  Deletes a runner's pod and secret from the parent side when the runner is gone.

  One reaper per runner, started before anything is created. It monitors the FLAME Runner
  process that owns the boot and, once booted, the remote terminator: when either goes down
  (idle shutdown, the runner VM killed, its node lost, the Runner crashing mid-boot) it deletes
  what it tracks. A boot that fails has it delete everything at once with `reap_now/1`.
  Failed deletes are retried (not when RBAC forbids them); a booted runner's pod is deleted with
  its own grace period, one that never booted at once.

  `FLAMEK8sBackend.remote_boot/1` uses it like this:

      {:ok, reaper} = Reaper.start(kube, namespace, self(), log)
      :ok = Reaper.track(reaper, :secret, runner_name)
      :ok = Reaper.track(reaper, :pod, runner_name)
      # ... create the secret and the pod, await the runner's remote_up, then either
      :ok = Reaper.monitor(reaper, remote_terminator)
      # or, when the boot failed
      :ok = Reaper.reap_now(reaper)
  """
  use GenServer, restart: :temporary

  require Logger

  alias FLAMEK8sBackend.Kube

  defstruct [:kube, :namespace, :log, pod: nil, secret: nil, booted?: false]

  @attempts 3
  @backoff 250

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
    {:reply, :ok, %{state | booted?: true}}
  end

  def handle_call(:reap_now, _from, state) do
    reap(state, :boot_failed)
    {:stop, :normal, :ok, state}
  end

  @impl true
  def handle_info({:DOWN, _ref, :process, _pid, reason}, state) do
    reap(state, reason)
    {:stop, :normal, state}
  end

  defp reap(%__MODULE__{pod: pod, secret: secret} = state, reason) do
    if pod, do: delete(state, :pod, pod, reason)
    if secret, do: delete(state, :secret, secret, reason)
  end

  defp delete(state, kind, name, reason) do
    case delete_with_retries(state, kind, name, @attempts) do
      :ok ->
        log(
          state,
          "deleted runner #{kind} #{state.namespace}/#{name} (runner down: #{inspect(reason)})"
        )

      {:error, error} ->
        Logger.warning(
          "flame_k8s_backend could not delete runner #{kind} #{state.namespace}/#{name}: " <>
            FLAMEK8sBackend.BootError.describe(error)
        )
    end
  end

  # A booted runner gets its pod's grace period, so its VM can finish what it is doing; a pod
  # that never booted has nothing to finish.
  defp delete_with_retries(state, kind, name, attempts_left) do
    result =
      case kind do
        :pod when state.booted? -> Kube.delete_pod(state.kube, state.namespace, name)
        :pod -> Kube.delete_pod(state.kube, state.namespace, name, grace_period: 0)
        :secret -> Kube.delete_secret(state.kube, state.namespace, name)
      end

    case result do
      {:error, {:api, status, _, _}} = error when status in [401, 403] ->
        error

      {:error, _} when attempts_left > 1 ->
        Process.sleep(@backoff * (@attempts - attempts_left + 1))
        delete_with_retries(state, kind, name, attempts_left - 1)

      result ->
        result
    end
  end

  defp log(%{log: false}, _message), do: :ok
  defp log(%{log: level}, message), do: Logger.log(level, message)
end
