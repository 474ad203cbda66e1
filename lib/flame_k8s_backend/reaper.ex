defmodule FLAMEK8sBackend.Reaper do
  @moduledoc """
  Deletes a runner's pod and secret from the parent side when the runner is gone.

  One reaper per runner, started before anything is created. It monitors the FLAME Runner
  process that owns the boot and, once booted, the remote terminator: when either goes down
  (idle shutdown, the runner VM killed, its node lost, the Runner crashing mid-boot) it deletes
  what it tracks. A boot that fails has it delete everything at once with `reap_now/2`.
  Failed deletes are retried with a doubling back-off (250 ms up to 30 s) for up to ten minutes,
  so an API server that is down for a while still gets the deletes once it is back (not when
  RBAC forbids them: that does not heal by itself). A booted runner's pod is deleted with its
  own grace period, one that never booted at once. Each attempt runs in a process of its own,
  so `reap_now/2` can answer by its deadline while the deletes go on in the background.

  A booted runner whose node is still connected when the FLAME Runner or the terminator goes
  down (an idle shutdown: the terminator tells the parent first, then shuts its VM down) deletes
  its own pod and secret in `system_shutdown/0`: the reaper waits for that node to go down (at
  most 30 s), then deletes whatever is left: the runner tells the reaper what it deleted
  (`FLAME_K8S_REAPER` in its env names the reaper), so that is usually nothing. Deleting at
  once would race the runner's own cleanup and always win it. Each delete is a
  `[:flame_k8s_backend, :cleanup, :delete]` event (`deleter: :reaper`, `trigger: :boot_failed`
  or `:runner_down`; see `FLAMEK8sBackend.Telemetry`), and so is each delete the runner
  reports (`deleter: :runner`, `trigger: :system_shutdown`, emitted by the reaper).

  `FLAMEK8sBackend.remote_boot/1` uses it like this:

      {:ok, reaper} = Reaper.start(kube, namespace, self(), log)
      # Only for a runner with a secret of its own (never the parent's Secret it may reference).
      :ok = Reaper.track(reaper, :secret, runner_name)
      :ok = Reaper.track(reaper, :pod, runner_name)
      # ... create the secret and the pod, await the runner's remote_up, then either
      :ok = Reaper.monitor(reaper, remote_terminator)
      # or, when the boot failed (answers once done, or after 5 s with the deletes still going)
      :ok = Reaper.reap_now(reaper, 5_000)
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
    waiting_for_node?: false,
    # A `reap_now/2` caller not answered yet.
    caller: nil,
    # While deleting: %{trigger:, why:, attempt:, pending: [{kind, name}], started: (native
    # monotonic time of the first try), give_up_at:, worker: {pid, monitor} of the try under way}
    reaping: nil
  ]

  @backoff 250
  @max_backoff 30_000
  @give_up_after 600_000
  @answer_after_attempts 3
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
  Deletes what it tracks now (a failed boot), retrying failed deletes, then stops. Returns once
  done, so that the caller's error comes after the cleanup, or, with the deletes still being
  retried in the background, after three failed tries or `timeout` ms (the boot's own bound),
  whichever comes first.
  """
  @spec reap_now(pid(), timeout()) :: :ok
  def reap_now(reaper, timeout \\ :infinity),
    do: GenServer.call(reaper, {:reap_now, timeout}, :infinity)

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

  def handle_call({:reap_now, timeout}, from, state) do
    _ = if timeout != :infinity, do: Process.send_after(self(), :answer_caller, timeout)
    state = %{state | caller: from}

    case state.reaping do
      nil -> start_reaping(state, :boot_failed, "boot failed")
      _already -> {:noreply, state}
    end
  end

  @impl true
  def handle_info({:attempted, pid, results}, %{reaping: %{worker: {pid, monitor}}} = state) do
    Process.demonitor(monitor, [:flush])
    attempted(state, results)
  end

  # The try's process crashed before it could report: every pending delete failed.
  def handle_info(
        {:DOWN, monitor, :process, _, reason},
        %{reaping: %{worker: {_, monitor}}} = state
      ) do
    error = {:error, {:internal, "delete attempt crashed: #{inspect(reason, limit: 8)}"}}
    attempted(state, for({kind, name} <- state.reaping.pending, do: {kind, name, error}))
  end

  # Once deleting, the Runner or the terminator going down changes nothing.
  def handle_info({:DOWN, _ref, :process, _pid, _reason}, %{reaping: %{}} = state),
    do: {:noreply, state}

  def handle_info(:retry, %{reaping: %{}} = state), do: {:noreply, attempt(state)}

  def handle_info(:answer_caller, state), do: {:noreply, answer(state)}

  def handle_info(message, %{reaping: %{}} = state)
      when message == :runner_exit_grace_over or elem(message, 0) == :nodedown,
      do: {:noreply, state}

  def handle_info({:DOWN, _ref, :process, _pid, _reason}, %{waiting_for_node?: true} = state),
    do: {:noreply, state}

  def handle_info({:DOWN, _ref, :process, _pid, reason}, state) do
    if runner_node_up?(state) do
      :erlang.monitor_node(state.runner_node, true)
      Process.send_after(self(), :runner_exit_grace_over, @runner_exit_grace)
      {:noreply, %{state | waiting_for_node?: true}}
    else
      start_reaping(state, :runner_down, "runner down: #{inspect(reason)}")
    end
  end

  # The runner's own deletes at shutdown (FLAMEK8sBackend.SelfDelete.report/3): their events
  # are emitted here, on the parent, and what it deleted is not deleted again.
  def handle_info({__MODULE__, :self_deleted, deletions}, state) when is_list(deletions),
    do: {:noreply, Enum.reduce(deletions, state, &runner_deleted/2)}

  def handle_info({:nodedown, node}, state),
    do: start_reaping(state, :runner_down, "runner node #{node} down")

  def handle_info(:runner_exit_grace_over, state) do
    why = "runner node still up #{@runner_exit_grace} ms after shutdown"
    start_reaping(state, :runner_down, why)
  end

  defp runner_deleted(
         %{kind: kind, name: name, result: result, duration_us: us} = deletion,
         state
       )
       when kind in [:pod, :secret] and is_binary(name) and is_integer(us) and us >= 0 do
    Telemetry.runner_cleanup(state.namespace, deletion)

    if result == :ok and Map.fetch!(state, kind) == name,
      do: Map.put(state, kind, nil),
      else: state
  end

  defp runner_deleted(_unknown, state), do: state

  defp runner_node_up?(%{booted?: true, runner_node: node}) when node != node(),
    do: node in Node.list(:connected)

  defp runner_node_up?(_state), do: false

  defp start_reaping(state, trigger, why) do
    pending = for {kind, name} <- [pod: state.pod, secret: state.secret], name, do: {kind, name}

    reaping = %{
      trigger: trigger,
      why: why,
      attempt: 1,
      pending: pending,
      started: System.monotonic_time(),
      give_up_at: now() + @give_up_after,
      worker: nil
    }

    continue(%{state | reaping: reaping})
  end

  # One try of every pending delete, in order (pod first), in a process of its own, so that
  # the reaper can answer reap_now/2 by its deadline whatever the API server does.
  defp attempt(%{reaping: reaping} = state) do
    reaper = self()

    worker =
      spawn_monitor(fn ->
        results = for {kind, name} <- reaping.pending, do: {kind, name, delete(state, kind, name)}
        send(reaper, {:attempted, self(), results})
      end)

    %{state | reaping: %{reaping | worker: worker}}
  end

  defp attempted(%{reaping: reaping} = state, results) do
    giving_up? = now() >= reaping.give_up_at

    pending =
      for {kind, name, result} <- results,
          not settled?(state, kind, name, result, giving_up?),
          do: {kind, name}

    reaping = %{reaping | pending: pending, worker: nil}

    if pending == [] do
      continue(%{state | reaping: reaping})
    else
      # A back-off before the next try, not a wait for an event: nothing announces that an
      # API server is answering again.
      Process.send_after(self(), :retry, backoff(reaping.attempt))
      state = %{state | reaping: %{reaping | attempt: reaping.attempt + 1}}
      # A failed boot's error need not wait for an API server that is down: after a few
      # tries the caller has its answer and the deletes go on in the background.
      {:noreply, if(reaping.attempt >= @answer_after_attempts, do: answer(state), else: state)}
    end
  end

  defp answer(%{caller: nil} = state), do: state

  defp answer(state) do
    GenServer.reply(state.caller, :ok)
    %{state | caller: nil}
  end

  defp continue(%{reaping: %{pending: []}} = state), do: {:stop, :normal, answer(state)}

  defp continue(state), do: {:noreply, attempt(state)}

  # Whether a delete's result ends its tries: it worked (a pod already gone counts), RBAC
  # forbids it (retrying will not change that), or the retries are over. Reports each ending.
  defp settled?(state, kind, name, result, giving_up?) do
    final? =
      case result do
        :ok -> true
        {:error, {:api, status, _, _}} when status in [401, 403] -> true
        {:error, _} -> giving_up?
      end

    if final?, do: report(state, kind, name, result)
    final?
  end

  # The event's duration covers every try of this delete and the back-offs between them.
  defp report(%{reaping: reaping} = state, kind, name, result) do
    meta = %{
      deleter: :reaper,
      trigger: reaping.trigger,
      kind: kind,
      namespace: state.namespace,
      name: name,
      result: result
    }

    Telemetry.cleanup_done(meta, System.monotonic_time() - reaping.started, reaping.attempt)

    case result do
      :ok ->
        log(state, "deleted runner #{kind} #{state.namespace}/#{name} (#{reaping.why})")

      {:error, error} ->
        Logger.warning(
          "flame_k8s_backend could not delete runner #{kind} #{state.namespace}/#{name}: " <>
            FLAMEK8sBackend.BootError.describe(error)
        )
    end
  end

  # A booted runner gets its pod's grace period, so its VM can finish what it is doing; a pod
  # that never booted has nothing to finish.
  defp delete(state, kind, name) do
    case kind do
      :pod when state.booted? -> Kube.delete_pod(state.kube, state.namespace, name)
      :pod -> Kube.delete_pod(state.kube, state.namespace, name, grace_period: 0)
      :secret -> Kube.delete_secret(state.kube, state.namespace, name)
    end
  end

  defp backoff(attempt), do: min(@backoff * Integer.pow(2, min(attempt - 1, 20)), @max_backoff)

  defp now, do: System.monotonic_time(:millisecond)

  defp log(%{log: false}, _message), do: :ok
  defp log(%{log: level}, message), do: Logger.log(level, message)
end
