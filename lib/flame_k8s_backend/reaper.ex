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

  ## A create whose outcome is unknown

  A create whose answer never came (the request timed out, the connection broke, the FLAME
  Runner was killed while it waited) may still be committed by the API server afterwards, up
  to the server's own deadline for the request (kube-apiserver's `--request-timeout`, the
  `:api_server_request_timeout` option). A DELETE that finds nothing before then proves
  nothing: the reaper deletes such an object again once that deadline (counted from when the
  create's caller stopped waiting, the latest the request can have been sent) and a margin
  have passed, and only a delete after it ends its tries. A create the API server refused
  (a 4xx other than 409) created nothing, and is not deleted; a 409 on the name the backend
  chose means it exists.

  ## Its own crash, and the sweep

  An unexpected message is ignored. Should the reaper crash all the same, it hands what it
  tracks on to a successor that carries on (a few times at most). Each reaper registers the
  names it tracks (`tracked?/3`): the sweep at `FLAMEK8sBackend.init/1` never deletes what a
  live reaper of this VM looks after.

  `FLAMEK8sBackend.remote_boot/1` uses it like this:

      {:ok, reaper} = Reaper.start(kube, namespace, self(), log, 60_000)
      # Before each create (the secret only for a runner with a secret of its own, never the
      # parent's Secret it may reference); the create's result right after it.
      :ok = Reaper.track(reaper, :secret, runner_name)
      :ok = Reaper.created(reaper, :secret, Kube.create_secret(kube, namespace, secret))
      :ok = Reaper.track(reaper, :pod, runner_name)
      :ok = Reaper.created(reaper, :pod, Kube.create_pod(kube, namespace, pod))
      # ... await the runner's remote_up, then either
      :ok = Reaper.monitor(reaper, remote_terminator)
      # or, when the boot failed (answers once done, or after 5 s with the deletes still going)
      :ok = Reaper.reap_now(reaper, 5_000)
  """
  use GenServer, restart: :temporary

  require Logger

  alias FLAMEK8sBackend.{Kube, Telemetry}

  @registry FLAMEK8sBackend.ReaperRegistry

  defstruct [
    :kube,
    :namespace,
    :log,
    :owner,
    # ms during which a create whose answer was lost may still be committed (see moduledoc).
    :follow_up_ms,
    # By kind (:pod, :secret): %{name:, create:, until:}. `create` is :pending (sent, no answer
    # yet), :created, :rejected (nothing was created) or :unknown; `until` is the monotonic ms
    # before which a DELETE that finds nothing does not prove that nothing will be created.
    objects: %{},
    booted?: false,
    terminator: nil,
    runner_node: nil,
    waiting_for_node?: false,
    # How many reapers crashed before this one and handed their runner on.
    generation: 0,
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
  # Past its deadline for a request, an API server may still be finishing the storage write it
  # had started for it.
  @commit_margin 5_000
  # A reaper whose state makes it crash again and again stops handing it on: the sweep is left.
  @max_generations 3

  @doc """
  Starts a reaper that watches `owner` (the FLAME Runner process). `api_server_request_timeout`
  is the API server's own deadline for a request, in ms (see "A create whose outcome is
  unknown" above).
  """
  @spec start(Kube.t(), String.t(), pid(), false | Logger.level(), pos_integer()) ::
          DynamicSupervisor.on_start_child()
  def start(kube, namespace, owner, log, api_server_request_timeout) do
    state = %__MODULE__{
      kube: kube,
      namespace: namespace,
      owner: owner,
      log: log,
      follow_up_ms: api_server_request_timeout + @commit_margin
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

  @doc "Also reaps when `pid` (the runner's remote terminator) goes down."
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
    _ = if state.terminator, do: Process.monitor(state.terminator)
    Enum.each(state.objects, fn {kind, object} -> register(state, kind, object.name) end)

    cond do
      state.reaping ->
        {:ok, %{state | reaping: %{state.reaping | worker: nil}}, {:continue, :attempt}}

      state.waiting_for_node? ->
        :erlang.monitor_node(state.runner_node, true)
        Process.send_after(self(), :runner_exit_grace_over, @runner_exit_grace)
        {:ok, state}

      true ->
        {:ok, state}
    end
  end

  @impl true
  def handle_continue(:attempt, state), do: {:noreply, attempt(state)}

  @impl true
  def handle_call({:track, kind, name}, _from, state) when kind in [:pod, :secret] do
    register(state, kind, name)
    object = %{name: name, create: :pending, until: nil}
    {:reply, :ok, %{state | objects: Map.put(state.objects, kind, object)}}
  end

  def handle_call({:created, kind, outcome}, _from, state) do
    objects =
      Map.update!(state.objects, kind, fn object ->
        until = if outcome == :unknown, do: now() + state.follow_up_ms
        %{object | create: outcome, until: until}
      end)

    {:reply, :ok, %{state | objects: objects}}
  end

  def handle_call({:monitor, pid}, _from, state) do
    Process.monitor(pid)
    {:reply, :ok, %{state | booted?: true, terminator: pid, runner_node: node(pid)}}
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

  def handle_info(:retry, %{reaping: %{worker: nil}} = state), do: {:noreply, attempt(state)}

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

  defp start_reaping(state, trigger, why) do
    now = now()

    # A create still waiting for its answer when the reaping starts (the Runner went down
    # mid-request) was sent by now at the latest.
    objects =
      Map.new(state.objects, fn
        {kind, %{create: :pending} = object} ->
          {kind, %{object | create: :unknown, until: now + state.follow_up_ms}}

        other ->
          other
      end)

    pending =
      for kind <- [:pod, :secret],
          object = objects[kind],
          object && object.create != :rejected,
          do: {kind, object.name}

    reaping = %{
      trigger: trigger,
      why: why,
      attempt: 1,
      pending: pending,
      started: System.monotonic_time(),
      give_up_at: now + @give_up_after,
      worker: nil
    }

    continue(%{state | objects: objects, reaping: reaping})
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
    now = now()
    giving_up? = now >= reaping.give_up_at

    outcomes =
      for {kind, name, result} <- results,
          do: {kind, name, outcome(state, kind, name, result, now, giving_up?)}

    pending = for {kind, name, outcome} <- outcomes, outcome != :settled, do: {kind, name}
    retry? = Enum.any?(outcomes, &match?({_, _, :retry}, &1))
    reaping = %{reaping | pending: pending, worker: nil}

    cond do
      pending == [] ->
        continue(%{state | reaping: reaping})

      retry? ->
        # A back-off before the next try, not a wait for an event: nothing announces that an
        # API server is answering again.
        Process.send_after(self(), :retry, backoff(reaping.attempt))
        state = %{state | reaping: %{reaping | attempt: reaping.attempt + 1}}
        # A failed boot's error need not wait for an API server that is down: after a few
        # tries the caller has its answer and the deletes go on in the background.
        {:noreply, if(reaping.attempt >= @answer_after_attempts, do: answer(state), else: state)}

      true ->
        # Only follow-ups are left: each deleted once, maybe created after. The next try comes
        # once the first of them can no longer be.
        until = pending |> Enum.map(fn {kind, _} -> state.objects[kind].until end) |> Enum.min()
        Process.send_after(self(), :retry, max(until - now, 0))
        state = %{state | reaping: %{reaping | attempt: reaping.attempt + 1}}
        {:noreply, answer(state)}
    end
  end

  defp answer(%{caller: nil} = state), do: state

  defp answer(state) do
    GenServer.reply(state.caller, :ok)
    %{state | caller: nil}
  end

  defp continue(%{reaping: %{pending: []}} = state), do: {:stop, :normal, answer(state)}

  defp continue(state), do: {:noreply, attempt(state)}

  # What a delete's result means for its tries: `:settled` when they are over (reported), it
  # worked (a pod already gone counts) and no create can still land, RBAC forbids it
  # (retrying will not change that) or the retries are over; `:follow_up` when it worked but a
  # create whose outcome is unknown may still be committed; `:retry` when it failed.
  defp outcome(state, kind, name, result, now, giving_up?) do
    until = state.objects[kind][:until]

    case result do
      :ok when is_integer(until) and now < until ->
        :follow_up

      :ok ->
        settle(state, kind, name, result)

      {:error, {:api, status, _, _}} when status in [401, 403] ->
        settle(state, kind, name, result)

      {:error, _} when giving_up? ->
        settle(state, kind, name, result)

      {:error, _} ->
        :retry
    end
  end

  defp settle(state, kind, name, result) do
    report(state, kind, name, result)
    :settled
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
