defmodule FLAMEK8sBackend.Sweep do
  @moduledoc false
  # Deletes this parent's finished runner pods (and their own secrets) left behind when an earlier
  # reaper could not delete them: the parent VM was killed, the API server was unreachable.
  # Finished means the pod's phase, or its app container having terminated: a sidecar (a
  # service mesh's proxy) keeps a pod Running after the runner VM is gone.
  # Only pods older than a boot timeout, so a sibling boot that just failed keeps its pod for
  # its own report; and at most once a minute per parent, so a burst of boots does not list
  # pods once each. Never fails a boot. Each delete is a cleanup telemetry event.

  require Logger

  alias FLAMEK8sBackend.{Kube, Options, RunnerPod, Telemetry}

  @interval_ms 60_000

  @doc "Sweeps the finished runner pods of `parent_pod` in `namespace`, when due. Always `:ok`."
  @spec run(Kube.t(), String.t(), Kube.pod(), Options.t()) :: :ok
  def run(kube, namespace, parent_pod, %Options{} = opts) do
    if due?(parent_pod) do
      selector = RunnerPod.selector(parent_pod)

      case Kube.list_pods(kube, namespace, label_selector: selector) do
        {:ok, pods} ->
          now = DateTime.utc_now()

          pods
          |> Enum.filter(&leftover?(&1, opts.boot_timeout, now))
          |> Enum.each(&delete(kube, namespace, &1, opts.log))

        # The sweep is housekeeping: the next one, a minute on, tries again.
        {:error, _reason} ->
          :ok
      end
    end

    :ok
  end

  @doc """
  Whether `pod` is a runner to sweep at `now`: finished (its phase, or its app container
  terminated while a sidecar runs on), and created more than `boot_timeout` ms ago.

      iex> pod = %{"metadata" => %{"creationTimestamp" => "2025-01-01T12:00:00Z"},
      ...>   "status" => %{"phase" => "Failed"}}
      iex> FLAMEK8sBackend.Sweep.leftover?(pod, 30_000, ~U[2025-01-01 12:01:00Z])
      true
      iex> FLAMEK8sBackend.Sweep.leftover?(pod, 90_000, ~U[2025-01-01 12:01:00Z])
      false
  """
  @spec leftover?(Kube.pod(), pos_integer(), DateTime.t()) :: boolean()
  def leftover?(pod, boot_timeout, now) do
    finished?(pod) and older_than?(pod, boot_timeout, now)
  end

  defp finished?(pod) do
    get_in(pod, ["status", "phase"]) in ["Succeeded", "Failed"] or app_container_terminated?(pod)
  end

  defp app_container_terminated?(pod) do
    name = RunnerPod.app_container_name(pod)
    statuses = get_in(pod, ["status", "containerStatuses"])

    is_binary(name) and is_list(statuses) and
      Enum.any?(
        statuses,
        &(is_map(&1) and &1["name"] == name and is_map(&1["state"]) and
            is_map(&1["state"]["terminated"]))
      )
  end

  defp older_than?(pod, ms, now) do
    with created when is_binary(created) <- get_in(pod, ["metadata", "creationTimestamp"]),
         {:ok, created, _offset} <- DateTime.from_iso8601(created) do
      DateTime.diff(now, created, :millisecond) > ms
    else
      _ -> false
    end
  end

  @doc """
  Whether runner `pod` has a secret of its own, named `name` like the pod: one its containers
  take env from (`envFrom`). A runner whose cookie comes from the parent's Secret has none, and
  the parent's Secret, which it references by `secretKeyRef`, is never the sweep's to delete.

      iex> pod = %{"spec" => %{"containers" => [%{"envFrom" => [%{"secretRef" => %{"name" => "r1"}}]}]}}
      iex> FLAMEK8sBackend.Sweep.own_secret?(pod, "r1")
      true
      iex> FLAMEK8sBackend.Sweep.own_secret?(%{"spec" => %{"containers" => [%{}]}}, "r1")
      false
  """
  @spec own_secret?(Kube.pod(), String.t()) :: boolean()
  def own_secret?(pod, name) do
    containers = get_in(pod, ["spec", "containers"])

    is_list(containers) and
      Enum.any?(containers, fn container ->
        is_map(container) and is_list(container["envFrom"]) and
          Enum.any?(container["envFrom"], &match?(%{"secretRef" => %{"name" => ^name}}, &1))
      end)
  end

  # Marks the sweep as done now when it is due, so that concurrent boots mostly skip it.
  defp due?(parent_pod) do
    key = {__MODULE__, get_in(parent_pod, ["metadata", "uid"])}
    now = System.monotonic_time(:millisecond)
    last = :persistent_term.get(key, nil)

    if is_nil(last) or now - last > @interval_ms do
      :persistent_term.put(key, now)
      true
    else
      false
    end
  end

  defp delete(kube, namespace, pod, log) do
    name = get_in(pod, ["metadata", "name"])
    meta = %{deleter: :sweep, trigger: :finished, namespace: namespace, name: name}

    _ =
      Telemetry.cleanup(Map.put(meta, :kind, :pod), fn ->
        {Kube.delete_pod(kube, namespace, name, grace_period: 0), 1}
      end)

    _ =
      if own_secret?(pod, name) do
        Telemetry.cleanup(Map.put(meta, :kind, :secret), fn ->
          {Kube.delete_secret(kube, namespace, name), 1}
        end)
      end

    if log, do: Logger.log(log, "swept finished runner pod #{namespace}/#{name}")
  end
end
