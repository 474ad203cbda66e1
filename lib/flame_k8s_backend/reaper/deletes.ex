defmodule FLAMEK8sBackend.Reaper.Deletes do
  @moduledoc false
  # The deletes of FLAMEK8sBackend.Reaper, run in the reaper's process on its state. Failed
  # deletes are retried with a doubling back-off (@backoff up to @max_backoff) for up to
  # @give_up_after, so an API server that is down for a while still gets them, except when
  # RBAC forbids them (that does not heal by itself). Each try runs in a process of its own,
  # so reap_now/2 can answer by its deadline while the deletes go on. Each delete is a
  # [:flame_k8s_backend, :cleanup, :delete] event (deleter: :reaper).

  require Logger

  alias FLAMEK8sBackend.{Kube, Reaper, Telemetry}

  @backoff 250
  @max_backoff 30_000
  @give_up_after 600_000
  @answer_after_attempts 3

  @doc "Starts deleting what `state` tracks: `trigger` and `why` go into the events and logs."
  @spec start(Reaper.t(), :boot_failed | :runner_down, String.t()) ::
          {:noreply, Reaper.t()} | {:stop, :normal, Reaper.t()}
  def start(state, trigger, why) do
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
  @doc false
  @spec attempt(Reaper.t()) :: Reaper.t()
  def attempt(%{reaping: reaping} = state) do
    reaper = self()

    worker =
      spawn_monitor(fn ->
        results = for {kind, name} <- reaping.pending, do: {kind, name, delete(state, kind, name)}
        send(reaper, {:attempted, self(), results})
      end)

    %{state | reaping: %{reaping | worker: worker}}
  end

  @doc "Takes the results of a try: `[{kind, name, :ok | {:error, reason}}]`."
  @spec attempted(Reaper.t(), [{atom(), String.t(), term()}]) ::
          {:noreply, Reaper.t()} | {:stop, :normal, Reaper.t()}
  def attempted(%{reaping: reaping} = state, results) do
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

  @doc "Answers a waiting `reap_now/2` caller, if any."
  @spec answer(Reaper.t()) :: Reaper.t()
  def answer(%{caller: nil} = state), do: state

  def answer(state) do
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
