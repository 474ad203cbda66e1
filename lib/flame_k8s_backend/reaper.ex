defmodule FLAMEK8sBackend.Reaper do
  @moduledoc """
  Deletes a runner's pod and secret from the parent side when the runner is gone.

  One reaper per runner, started before anything is created. It monitors the FLAME Runner
  process that owns the boot and, once booted, the remote terminator: when either goes down
  (idle shutdown, the runner VM killed, its node lost, the Runner crashing mid-boot) it deletes
  what it tracks. A boot that fails cleans up itself and then `release/1`s the reaper.
  """
  use GenServer, restart: :temporary

  require Logger

  alias FLAMEK8sBackend.Kube

  defstruct [:kube, :namespace, :log, pod: nil, secret: nil]

  @doc "Starts a reaper that watches `owner` (the FLAME Runner process)."
  @spec start(Kube.t(), String.t(), pid(), false | Logger.level()) :: {:ok, pid()}
  def start(kube, namespace, owner, log) do
    DynamicSupervisor.start_child(
      FLAMEK8sBackend.ReaperSupervisor,
      {__MODULE__, {kube, namespace, owner, log}}
    )
  end

  @doc false
  def start_link(args), do: GenServer.start_link(__MODULE__, args)

  @doc "Tracks a created `:pod` or `:secret` by name."
  @spec track(pid(), :pod | :secret, String.t()) :: :ok
  def track(reaper, kind, name), do: GenServer.call(reaper, {:track, kind, name})

  @doc "Also reaps when `pid` (the runner's remote terminator) goes down."
  @spec monitor(pid(), pid()) :: :ok
  def monitor(reaper, pid), do: GenServer.call(reaper, {:monitor, pid})

  @doc "Stops the reaper without deleting anything (the caller cleaned up already)."
  @spec release(pid()) :: :ok
  def release(reaper), do: GenServer.call(reaper, :release)

  @impl true
  def init({kube, namespace, owner, log}) do
    Process.monitor(owner)
    {:ok, %__MODULE__{kube: kube, namespace: namespace, log: log}}
  end

  @impl true
  def handle_call({:track, kind, name}, _from, state),
    do: {:reply, :ok, Map.put(state, kind, name)}

  def handle_call({:monitor, pid}, _from, state) do
    Process.monitor(pid)
    {:reply, :ok, state}
  end

  def handle_call(:release, _from, state), do: {:stop, :normal, :ok, state}

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
    result =
      case kind do
        :pod -> Kube.delete_pod(state.kube, state.namespace, name, grace_period: 0)
        :secret -> Kube.delete_secret(state.kube, state.namespace, name)
      end

    case result do
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

  defp log(%{log: false}, _message), do: :ok
  defp log(%{log: level}, message), do: Logger.log(level, message)
end
