defmodule Bench.NoopBoot do
  @moduledoc """
  A boot of a pod that only needs to run, so that a runner VM's own start does not drown the
  backend's cost: the backend's own `init/1` builds the runner's pod and secret (with the app
  container's image replaced by `sleeper:test` through the `:manifest` option), then the bench
  sends the requests `remote_boot/1` sends, on the backend's own client: the secret (when the
  backend has one for this runner), the pod, and the wait. No remote_up can come from
  `/bin/sleep`, so the boot ends when the pod runs:

    * `:watch` - `Kube.await_pod/4` with the parent's runner selector, as `remote_boot/1`
      waits (the one watch shared by every boot of the parent; interim `{:running, pod}`,
      then the await is cancelled, as on remote_up);
    * `:poll` - `Kube.get_pod/3` at once and every second until it runs (`Bench.PodPoll`,
      as the pure-Elixir backend waits).

  A result is `%{key:, kube:, secret:, t_init:, t_created:, t_seen:}` (wall µs; `kube` is the
  backend's client, for the teardown; `secret` whether one was created) or
  `%{key:, kube:, secret:, error:}`. `teardown/1` deletes what the boots created, as the
  backend's reaper does for a runner that ends.
  """

  alias Bench.{Clock, Concurrent, Incidents, KubeletLog, PodPoll}
  alias FLAMEK8sBackend.Kube

  # The app container (a container without a name is the app container) runs /bin/sleep.
  @noop %{"spec" => %{"containers" => [%{"image" => "sleeper:test", "args" => ["3600"]}]}}

  @doc "The backend options for a no-op runner, from the bench's usual ones."
  def backend_opts(opts), do: Keyword.put(opts, :manifest, @noop)

  @doc """
  One boot with `strategy`; `opts` from `backend_opts/1`. `counters` (a `:counters` ref of
  two) counts, for the sampler, the boots waiting for their pod (1) and the boots in flight,
  from their start until their result (2).
  """
  def run(strategy, opts, counters) do
    counted(counters, 2, fn ->
      t_init = Clock.wall()

      case FLAMEK8sBackend.init(opts) do
        {:ok, state} -> boot(strategy, state, t_init, counters)
        {:error, error} -> %{error: {:init, Exception.message(error)}}
      end
    end)
  end

  defp boot(strategy, state, t_init, counters) do
    %FLAMEK8sBackend{kube: kube, namespace: ns, runner_name: name} = state
    %{pod: pod, secret: secret} = FLAMEK8sBackend.runner_manifests(state)
    base = %{key: "#{ns}/#{name}", kube: kube, secret: secret != nil}

    # As remote_boot/1 does: a create may wait for a create slot for the whole boot.
    queue = [queue_timeout: state.boot_timeout]

    with :ok <- create_secret(kube, ns, secret, queue),
         {:ok, _} <- Kube.create_pod(kube, ns, pod, queue),
         t_created = Clock.wall(),
         {:ok, t_seen} <- counted(counters, 1, fn -> wait(strategy, state) end) do
      Map.merge(base, %{t_init: t_init, t_created: t_created, t_seen: t_seen})
    else
      {:error, reason} -> Map.put(base, :error, reason)
    end
  end

  defp counted(counters, ix, fun) do
    :counters.add(counters, ix, 1)

    try do
      fun.()
    after
      :counters.sub(counters, ix, 1)
    end
  end

  # The backend leaves the secret out when the runner needs none of its own.
  defp create_secret(_kube, _ns, nil, _opts), do: :ok

  defp create_secret(kube, ns, secret, opts) do
    with {:ok, _} <- Kube.create_secret(kube, ns, secret, opts), do: :ok
  end

  defp wait(:watch, state) do
    %FLAMEK8sBackend{kube: kube, namespace: ns, runner_name: name} = state

    with {:ok, %{ref: ref} = await} <-
           Kube.await_pod(kube, ns, name,
             timeout: state.boot_timeout,
             unschedulable: state.unschedulable,
             report_ready: false,
             label_selector: state.runner_selector
           ) do
      receive do
        {:flame_k8s, ^ref, {:running, _pod}} ->
          seen = Clock.wall()
          Kube.cancel_await(await)
          {:ok, seen}

        {:flame_k8s, ^ref, other} ->
          {:error, other}
      after
        state.boot_timeout + 5_000 ->
          Kube.cancel_await(await)
          {:error, :no_answer_from_the_watch}
      end
    end
  end

  defp wait(:poll, state) do
    deadline = System.monotonic_time(:millisecond) + state.boot_timeout

    case PodPoll.until_ready(state.kube, state.namespace, state.runner_name, deadline) do
      %{seen: seen} -> {:ok, seen}
      %{error: reason} -> {:error, reason}
    end
  end

  @doc """
  Deletes every pod and secret the boots created, all at once, as the backend's reaper does
  for a runner that booted (the pod with its grace period: the kubelet stops `/bin/sleep`
  and ends the deletion with a DELETE of its own); returns the keys of the pods the kubelet has not logged gone by the
  timeout.
  """
  def teardown(results, timeout_ms \\ 120_000) do
    created = for %{key: _} = r <- results, do: r

    Concurrent.map(
      created,
      fn %{key: key, kube: kube} = r ->
        [ns, name] = String.split(key, "/", parts: 2)
        report(key, "pod", Kube.delete_pod(kube, ns, name))
        if r.secret, do: report(key, "secret", Kube.delete_secret(kube, ns, name))
      end,
      timeout_ms
    )

    # A pod whose create failed never shows up at the kubelet.
    KubeletLog.sync()

    on_node =
      for r <- created, Map.has_key?(r, :t_created) or KubeletLog.ts(r.key, :bound), do: r.key

    KubeletLog.await_all(on_node, :gone, timeout_ms)
  end

  defp report(_key, _kind, :ok), do: :ok
  # A boot whose create failed has nothing to delete.
  defp report(_key, _kind, {:error, {:api, 404, _, _}}), do: :ok

  defp report(key, kind, {:error, reason}),
    do: Incidents.record("bench could not delete #{kind} #{key}: #{inspect(reason)}")
end
