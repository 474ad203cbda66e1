defmodule FLAMEK8sBackend.Reaper do
  @moduledoc false
  # Deletes a runner's pod and secret from the parent side when the runner is gone: one reaper
  # per runner, started before anything is created. What it covers, next to the other ways
  # runners are cleaned up, is in [Cleanup](failures-and-cleanup.md#cleanup).
  #
  # `FLAMEK8sBackend.remote_boot/1` uses it like this:
  #
  #     {:ok, reaper} = Reaper.start(kube, namespace, self(), log, 60_000)
  #     # Before each create (the secret only for a runner with a secret of its own, never the
  #     # parent's Secret it may reference); the create's result right after it.
  #     :ok = Reaper.track(reaper, :secret, runner_name)
  #     :ok = Reaper.created(reaper, :secret, Kube.create_secret(kube, namespace, secret))
  #     :ok = Reaper.track(reaper, :pod, runner_name)
  #     :ok = Reaper.created(reaper, :pod, Kube.create_pod(kube, namespace, pod))
  #     # ... await the runner's remote_up, then either
  #     :ok = Reaper.monitor(reaper, remote_terminator)
  #     # or, when the boot failed (answers once done, or after 5 s with the deletes still going)
  #     :ok = Reaper.reap_now(reaper, 5_000)
  # It monitors the FLAME Runner process and, once booted, the remote terminator. When either
  # goes down while the runner's node is still connected (an idle shutdown: the runner
  # deletes its own pod and secret in system_shutdown/0 and tells the reaper what it deleted,
  # FLAME_K8S_REAPER in its env naming the reaper), it waits for that node to go down (at most
  # @runner_exit_grace) and deletes only what is left: deleting at once would race the
  # runner's own cleanup. The deletes themselves: FLAMEK8sBackend.Reaper.Deletes.
  #
  # A create whose answer never came may still be committed by the API server up to its own
  # deadline for the request (`:api_server_request_timeout`): a DELETE that finds nothing
  # before then proves nothing, so such an object is deleted again once that deadline (counted
  # from when the create's caller stopped waiting) and a margin have passed. A create refused
  # with a 4xx other than 409 created nothing; a 409 on the backend's own name means it exists.
  use GenServer, restart: :temporary

  require Logger

  alias FLAMEK8sBackend.{Kube, RunnerToken, Telemetry}
  alias FLAMEK8sBackend.Reaper.{Deletes, Down}

  @registry FLAMEK8sBackend.ReaperRegistry

  defstruct [
    :kube,
    :namespace,
    :log,
    :owner,
    # ms during which a create whose answer was lost may still be committed (see above).
    :follow_up_ms,
    # By kind (:pod, :secret): %{name:, create:, until:}. `create` is :pending (sent, no answer
    # yet), :created, :rejected (nothing was created) or :unknown; `until` is the monotonic ms
    # before which a DELETE that finds nothing does not prove that nothing will be created.
    objects: %{},
    booted?: false,
    terminator: nil,
    # The service account whose tokens the runner is handed (FLAMEK8sBackend.RunnerToken),
    # and the process that does it.
    token_account: nil,
    token_handover: nil,
    runner_node: nil,
    waiting_for_node?: false,
    # How many reapers crashed before this one and handed their runner on.
    generation: 0,
    # A `reap_now/2` caller not answered yet.
    caller: nil,
    # The booted runner's pod, followed through the shared watch (see Runner.Down):
    # %{ref:, handle:} of the follow, what it has shown, and whether `:down` was decided.
    follow: nil,
    down: %FLAMEK8sBackend.Reaper.Down{},
    # Stopping was put off until the follow tells why the runner went (see linger/1).
    lingering?: false,
    # While deleting: %{trigger:, why:, attempt:, pending: [{kind, name}], started: (native
    # monotonic time of the first try), give_up_at:, worker: {pid, monitor} of the try under way}
    reaping: nil
  ]

  # How long a booted runner's VM gets to delete itself and stop once it has been told to; a
  # VM that hangs longer is reaped.
  @runner_exit_grace 30_000
  # Past its deadline for a request, an API server may still be finishing the storage write it
  # had started for it.
  @commit_margin 5_000
  # A reaper whose state makes it crash again and again stops handing it on: the sweep is left.
  @max_generations 3
  # How long a reaper done deleting waits for its follow to say why the runner went.
  @linger 10_000

  @doc """
  Starts a reaper that watches `owner` (the FLAME Runner process). `api_server_request_timeout`
  is the API server's own deadline for a request, in ms (its `--request-timeout`): until
  then (and a margin), a create whose answer was lost may still be committed, and is deleted
  again after it. With a `token_account`, the runner is handed tokens of that service
  account for its pod (`FLAMEK8sBackend.RunnerToken`): requested from `pod_running/1` (or
  `monitor/2`, whichever comes first), handed over from `monitor/2` on.
  """
  @spec start(
          Kube.t(),
          String.t(),
          pid(),
          false | Logger.level(),
          pos_integer(),
          String.t() | nil
        ) :: DynamicSupervisor.on_start_child()
  def start(kube, namespace, owner, log, api_server_request_timeout, token_account \\ nil) do
    state = %__MODULE__{
      kube: kube,
      namespace: namespace,
      owner: owner,
      log: log,
      follow_up_ms: api_server_request_timeout + @commit_margin,
      token_account: token_account
    }

    DynamicSupervisor.start_child(FLAMEK8sBackend.ReaperSupervisor, {__MODULE__, state})
  end

  @doc false
  @spec start_link(t()) :: GenServer.on_start()
  def start_link(%__MODULE__{} = state), do: GenServer.start_link(__MODULE__, state)

  @typedoc false
  @type t :: %__MODULE__{}

  @doc """
  Tracks the `:pod` or `:secret` named `name`, whose create is about to be sent: from now on it
  may exist. Report the create's result with `created/3`; until then its outcome is unknown.
  """
  @spec track(pid(), :pod | :secret, String.t()) :: :ok
  def track(reaper, kind, name), do: GenServer.call(reaper, {:track, kind, name})

  @doc """
  Reports the result of the create of the tracked `kind`: what it says about whether the
  object exists (see `create_outcome/1`).
  """
  @spec created(pid(), :pod | :secret, {:ok, term()} | {:error, term()}) :: :ok
  def created(reaper, kind, result),
    do: GenServer.call(reaper, {:created, kind, create_outcome(result)})

  @doc """
  What a create's result says about the object: `:created` (also a 409: the name is the
  backend's own choice, so what has it is what an earlier try of this create made),
  `:rejected` (any other 4xx: the API server refused it, nothing was created) or `:unknown`
  (no answer, a broken connection, a 5xx: it may have been created, or may still be).

      iex> FLAMEK8sBackend.Reaper.create_outcome({:error, {:api, 409, "AlreadyExists", "exists"}})
      :created
      iex> FLAMEK8sBackend.Reaper.create_outcome({:error, {:api, 403, "Forbidden", "no"}})
      :rejected
      iex> FLAMEK8sBackend.Reaper.create_outcome({:error, {:timeout, 15_000}})
      :unknown
  """
  @spec create_outcome({:ok, term()} | {:error, term()}) :: :created | :rejected | :unknown
  def create_outcome({:ok, _}), do: :created
  def create_outcome({:error, {:api, 409, _, _}}), do: :created
  def create_outcome({:error, {:api, status, _, _}}) when status in 400..499, do: :rejected
  def create_outcome({:error, _}), do: :unknown

  @doc """
  Follows the booted runner's pod (the tracked `:pod`) through the connection's shared watch
  of `selector`, for as long as this reaper lives (`redact` returns the values its messages must
  not show): its disruption and its end become
  `[:flame_k8s_backend, :runner, :disruption | :down]` events (see `FLAMEK8sBackend.Reaper.Down`).
  Call it before the boot's await is cancelled, so that the watch stays open.
  """
  @spec follow(pid(), String.t(), node(), (-> [String.t()])) :: :ok
  def follow(reaper, selector, runner_node, redact),
    do: GenServer.call(reaper, {:follow, selector, runner_node, redact})

  @doc "The tracked `:pod` runs: a reaper with a token account requests the runner's token."
  @spec pod_running(pid()) :: :ok
  def pod_running(reaper), do: GenServer.call(reaper, :pod_running)

  @doc """
  Also reaps when `pid` (the runner's remote terminator) goes down. A reaper started with a
  `token_account` hands the runner its token now (`FLAMEK8sBackend.RunnerToken`).
  """
  @spec monitor(pid(), pid()) :: :ok
  def monitor(reaper, pid), do: GenServer.call(reaper, {:monitor, pid})

  @doc """
  Deletes what it tracks now (a failed boot), retrying failed deletes, then stops. Returns once
  done (a create whose outcome is unknown: once its first delete was sent, its follow-up goes
  on in the background), so that the caller's error comes after the cleanup, or, with the
  deletes still being retried in the background, after three failed tries or `timeout` ms
  (the boot's own bound), whichever comes first.
  """
  @spec reap_now(pid(), timeout()) :: :ok
  def reap_now(reaper, timeout \\ :infinity) do
    GenServer.call(reaper, {:reap_now, timeout}, :infinity)
  catch
    # It crashed meanwhile: its successor goes on deleting.
    :exit, _ -> :ok
  end

  @doc "Whether a live reaper of this VM tracks the `kind` named `name` in `namespace`."
  @spec tracked?(String.t(), :pod | :secret, String.t()) :: boolean()
  def tracked?(namespace, kind, name),
    do: Registry.lookup(@registry, {namespace, kind, name}) != []

  @impl true
  def init(%__MODULE__{generation: 0} = state) do
    Process.monitor(state.owner)
    {:ok, state}
  end

  # A successor: the crashed reaper's runner, carried on from where it was.
  def init(%__MODULE__{} = state) do
    Process.monitor(state.owner)
    # The crashed reaper's follow ended with it.
    state =
      case state do
        %{follow: %{}, down: down} ->
          Down.follow(%{state | follow: nil}, down.selector, down.runner_node, down.redact)

        _ ->
          state
      end

    _ = if state.terminator, do: Process.monitor(state.terminator)
    Enum.each(state.objects, fn {kind, object} -> register(state, kind, object.name) end)

    cond do
      state.reaping ->
        {:ok, %{state | reaping: %{state.reaping | worker: nil}}, {:continue, :attempt}}

      state.waiting_for_node? ->
        :erlang.monitor_node(state.runner_node, true)
        Process.send_after(self(), :runner_exit_grace_over, @runner_exit_grace)
        {:ok, state}

      # Not from init/1: the supervisor that starts the handover is busy starting this one.
      state.booted? and state.token_account != nil ->
        {:ok, %{state | token_handover: nil}, {:continue, :hand_over_tokens}}

      true ->
        {:ok, state}
    end
  end

  @impl true
  def handle_continue(:attempt, state), do: {:noreply, Deletes.attempt(state)}

  def handle_continue(:hand_over_tokens, state), do: {:noreply, hand_over_tokens(state)}

  @impl true
  def handle_call({:track, kind, name}, _from, state) when kind in [:pod, :secret] do
    # A boot that replaced a pod Kubernetes took away tracks the new one instead (the old one
    # was deleted first).
    _ =
      case state.objects do
        %{^kind => %{name: old}} when old != name ->
          Registry.unregister(@registry, {state.namespace, kind, old})

        _ ->
          :ok
      end

    register(state, kind, name)
    object = %{name: name, create: :pending, until: nil}
    state = if kind == :pod, do: stop_token_handover(state), else: state
    {:reply, :ok, %{state | objects: Map.put(state.objects, kind, object)}}
  end

  def handle_call({:created, kind, outcome}, _from, state) do
    objects =
      Map.update!(state.objects, kind, fn object ->
        until =
          if outcome == :unknown, do: System.monotonic_time(:millisecond) + state.follow_up_ms

        %{object | create: outcome, until: until}
      end)

    {:reply, :ok, %{state | objects: objects}}
  end

  def handle_call(:pod_running, _from, state), do: {:reply, :ok, hand_over_tokens(state)}

  def handle_call({:follow, selector, runner_node, redact}, _from, state) do
    {:reply, :ok, Down.follow(state, selector, runner_node, redact)}
  end

  def handle_call({:monitor, pid}, _from, state) do
    Process.monitor(pid)
    state = %{state | booted?: true, terminator: pid, runner_node: node(pid)}
    {:reply, :ok, hand_over_tokens(state)}
  end

  def handle_call({:reap_now, timeout}, from, state) do
    _ = if timeout != :infinity, do: Process.send_after(self(), :answer_caller, timeout)
    state = %{state | caller: from}

    case state.reaping do
      nil -> Deletes.start(state, :boot_failed, "boot failed")
      _already -> {:noreply, state}
    end
  end

  @impl true
  def handle_info({:flame_k8s, ref, message}, %{follow: %{ref: ref}} = state) do
    state = Down.followed(state, message)

    if state.lingering? and not Down.open?(state),
      do: {:stop, :normal, state},
      else: {:noreply, state}
  end

  def handle_info(:linger_over, %{lingering?: true} = state),
    do: {:stop, :normal, Down.runner_gone(state)}

  def handle_info({:attempted, pid, results}, %{reaping: %{worker: {pid, monitor}}} = state) do
    Process.demonitor(monitor, [:flush])
    linger(Deletes.attempted(state, results))
  end

  # The try's process crashed before it could report: every pending delete failed.
  def handle_info(
        {:DOWN, monitor, :process, _, reason},
        %{reaping: %{worker: {_, monitor}}} = state
      ) do
    error = {:error, {:internal, "delete attempt crashed: #{inspect(reason, limit: 8)}"}}
    results = for {kind, name} <- state.reaping.pending, do: {kind, name, error}
    linger(Deletes.attempted(state, results))
  end

  # Once deleting, the Runner or the terminator going down changes nothing.
  def handle_info({:DOWN, _ref, :process, _pid, _reason}, %{reaping: %{}} = state),
    do: {:noreply, state}

  def handle_info(:retry, %{reaping: %{worker: nil}} = state),
    do: {:noreply, Deletes.attempt(state)}

  def handle_info(:answer_caller, state), do: {:noreply, Deletes.answer(state)}

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
      runner_down(state, "runner down: #{inspect(reason)}")
    end
  end

  # The runner's own deletes at shutdown (FLAMEK8sBackend.SelfDelete.report/3): their events
  # are emitted here, on the parent, and what it deleted is not deleted again.
  def handle_info({__MODULE__, :self_deleted, deletions}, state) when is_list(deletions) do
    state = Down.self_deleted(state, deletions)
    {:noreply, Enum.reduce(deletions, state, &runner_deleted/2)}
  end

  def handle_info({:nodedown, node}, state),
    do: runner_down(state, "runner node #{node} down")

  def handle_info(:runner_exit_grace_over, state) do
    why = "runner node still up #{@runner_exit_grace} ms after shutdown"
    runner_down(state, why)
  end

  # Anything else (a stray message, a late one of an earlier try) changes nothing. Only its
  # shape is logged: a message sent here by mistake may hold anything.
  def handle_info(message, state) do
    Logger.debug("flame_k8s_backend reaper ignored an unexpected message: #{shape(message)}")
    {:noreply, state}
  end

  # A crash loses nothing: a successor takes the runner on, unless this one is a successor
  # that crashed again and again (then the sweep is left).
  @impl true
  def terminate(reason, state) do
    _ =
      if abnormal?(reason) and state.generation < @max_generations do
        successor = %{state | generation: state.generation + 1, caller: nil}
        DynamicSupervisor.start_child(FLAMEK8sBackend.ReaperSupervisor, {__MODULE__, successor})
      end

    :ok
  catch
    # The application is stopping (its supervisor with it): nobody to hand on to.
    :exit, _ -> :ok
  end

  # The runner is gone: what the follow knows by now is the story (Down.runner_gone/1), then
  # its pod and secret are deleted.
  defp runner_down(state, why) do
    state
    |> Down.runner_gone()
    |> Deletes.start(:runner_down, why)
    |> linger()
  end

  # Done deleting, but the follow has not said yet why a runner that went without shutting
  # itself down went (a container's end reaches the watch a moment after the node's
  # connection drops): the reaper stays, at most @linger ms, so that it can.
  defp linger({:stop, :normal, state} = stop) do
    if Down.open?(state) do
      Process.send_after(self(), :linger_over, @linger)
      {:noreply, %{state | lingering?: true}}
    else
      stop
    end
  end

  defp linger(other), do: other

  # From when the pod runs (a boot that fails before costs no token request), so that the
  # token is there when the runner comes up, and handed over then. The handover ends with the
  # reaper that started it: a successor starts its own.
  defp hand_over_tokens(%{token_account: account, token_handover: nil} = state)
       when is_binary(account) do
    case state.objects do
      %{pod: %{name: pod}} ->
        {:ok, pid} =
          RunnerToken.start(%{
            kube: state.kube,
            namespace: state.namespace,
            service_account: account,
            pod: pod,
            reaper: self()
          })

        hand_over_tokens(%{state | token_handover: pid})

      _ ->
        state
    end
  end

  defp hand_over_tokens(%{token_handover: pid, booted?: true} = state) when is_pid(pid) do
    RunnerToken.runner_up(pid, state.runner_node)
    state
  end

  defp hand_over_tokens(state), do: state

  # A pod replaced during its boot gets a token of its own.
  defp stop_token_handover(%{token_handover: pid} = state) when is_pid(pid) do
    Process.exit(pid, :shutdown)
    %{state | token_handover: nil}
  end

  defp stop_token_handover(state), do: state

  defp abnormal?(reason),
    do: reason not in [:normal, :shutdown] and not match?({:shutdown, _}, reason)

  defp shape(message)
       when is_tuple(message) and tuple_size(message) > 0 and is_atom(elem(message, 0)),
       do: "a #{tuple_size(message)}-tuple tagged #{inspect(elem(message, 0))}"

  defp shape(message) when is_atom(message), do: inspect(message)
  defp shape(message) when is_tuple(message), do: "a #{tuple_size(message)}-tuple"
  defp shape(message) when is_list(message), do: "a list"
  defp shape(message) when is_map(message), do: "a map"
  defp shape(_message), do: "a term"

  defp register(state, kind, name) do
    # One registration per object and reaper: a name tracked again is still the one entry.
    key = {state.namespace, kind, name}

    _ =
      if Registry.values(@registry, key, self()) == [], do: Registry.register(@registry, key, nil)

    :ok
  end

  defp runner_deleted(
         %{kind: kind, name: name, result: result, duration_us: us} = deletion,
         state
       )
       when kind in [:pod, :secret] and is_binary(name) and is_integer(us) and us >= 0 do
    Telemetry.runner_cleanup(state.namespace, deletion)

    case state.objects do
      %{^kind => %{name: ^name}} when result == :ok ->
        %{state | objects: Map.delete(state.objects, kind)}

      _ ->
        state
    end
  end

  defp runner_deleted(_unknown, state), do: state

  defp runner_node_up?(%{booted?: true, runner_node: node}) when node != node(),
    do: node in Node.list(:connected)

  defp runner_node_up?(_state), do: false
end
