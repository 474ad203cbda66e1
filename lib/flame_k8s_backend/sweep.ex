defmodule FLAMEK8sBackend.Sweep do
  @moduledoc false
  # The safety net under the reapers: deletes this parent's runner pods and Secrets that no
  # reaper looks after any more, whatever their phase. What it finds there: a parent VM killed
  # in a burst (Secrets whose pod create was still queued, pods Pending, in ImagePullBackOff
  # or CreateContainerConfigError), objects a reaper gave up on (an API server down for ten
  # minutes, a 403), a reaper that crashed for good.
  #
  # Never what a live reaper of this VM tracks (a boot in flight, a booted runner, a create
  # still being followed up), whatever its age. Of the rest, an object is swept once it is
  # older than the boot timeout it was created with (its annotation, so pools with other boot
  # timeouts never cut each other's boots short) plus a margin, whatever its phase; a finished
  # pod (its phase, or its app container terminated while a sidecar runs on) already once it
  # is older than this pool's boot timeout, with its own Secret: nothing needs it any more.
  # At most once a minute per parent, so a burst of boots does not list pods and Secrets once
  # each. One try per object and sweep: the next sweep tries again. Never fails a boot. Each
  # delete is a cleanup telemetry event (trigger :orphaned).
  #
  # Listing Secrets needs `list` on `secrets`; without it, a swept pod's own Secret is still
  # deleted, but a Secret whose pod was never created is not found.

  require Logger

  alias FLAMEK8sBackend.{Kube, Options, Reaper, RunnerPod, Telemetry}

  @interval_ms 60_000
  # Over an object's own boot timeout: clock skew between this VM and the API server (which
  # sets creationTimestamp), and a boot's last cleanup.
  @margin_ms 30_000

  @doc """
  Sweeps the runner pods and Secrets of `parent_pod` in `namespace` that no reaper looks
  after, when due. Always `:ok`.
  """
  @spec run(Kube.t(), String.t(), Kube.pod(), Options.t()) :: :ok
  def run(kube, namespace, parent_pod, %Options{} = opts) do
    if due?(parent_pod) do
      selector = RunnerPod.selector(parent_pod)

      case Kube.list_pods(kube, namespace, label_selector: selector) do
        {:ok, pods} ->
          sweep(kube, namespace, pods, list_secrets(kube, namespace, selector), opts)

        # The sweep is housekeeping: the next one, a minute on, tries again.
        {:error, _reason} ->
          :ok
      end
    end

    :ok
  end

  defp sweep(kube, namespace, pods, secrets, opts) do
    now = DateTime.utc_now()
    swept? = &swept?(namespace, &1, &2, opts.boot_timeout, now)
    pods = Enum.filter(pods, &swept?.(:pod, &1))
    # The Secrets of the pods swept go with them, however young.
    of_pods = for pod <- pods, own_secret?(pod, name(pod)), do: name(pod)

    secret_names =
      case secrets do
        {:ok, secrets} ->
          listed = MapSet.new(secrets, &name/1)
          aged = for secret <- secrets, swept?.(:secret, secret), do: name(secret)
          Enum.uniq(aged ++ Enum.filter(of_pods, &MapSet.member?(listed, &1)))

        # Not listable: at least the Secrets of the pods swept.
        :error ->
          of_pods
      end

    Enum.each(pods, &delete(kube, namespace, :pod, name(&1), opts.log))
    Enum.each(secret_names, &delete(kube, namespace, :secret, &1, opts.log))
  end

  defp swept?(namespace, kind, object, boot_timeout, now) do
    name = name(object)

    is_binary(name) and leftover?(object, boot_timeout, now) and
      not Reaper.tracked?(namespace, kind, name)
  end

  defp name(object), do: get_in(object, ["metadata", "name"])

  @doc """
  Whether runner `object` (a pod or a Secret) is old enough to sweep at `now`: created more
  than its own boot timeout (its `flame-k8s-backend.io/boot-timeout-ms` annotation; without
  it, `boot_timeout` ms) plus 30 s ago, whatever its phase; a finished pod (its phase, or its
  app container terminated while a sidecar runs on) once it is older than `boot_timeout`. The
  sweep also spares what a live reaper tracks.

      iex> pod = %{"metadata" => %{"creationTimestamp" => "2025-01-01T12:00:00Z"},
      ...>   "status" => %{"phase" => "Pending"}}
      iex> FLAMEK8sBackend.Sweep.leftover?(pod, 30_000, ~U[2025-01-01 12:01:01Z])
      true
      iex> FLAMEK8sBackend.Sweep.leftover?(pod, 30_000, ~U[2025-01-01 12:00:59Z])
      false
      iex> FLAMEK8sBackend.Sweep.leftover?(put_in(pod["status"]["phase"], "Failed"), 30_000,
      ...>   ~U[2025-01-01 12:00:31Z])
      true
  """
  @spec leftover?(map(), pos_integer(), DateTime.t()) :: boolean()
  def leftover?(object, boot_timeout, now) do
    (finished?(object) and older_than?(object, boot_timeout, now)) or
      older_than?(object, (RunnerPod.boot_timeout(object) || boot_timeout) + @margin_ms, now)
  end

  defp finished?(object) do
    get_in(object, ["status", "phase"]) in ["Succeeded", "Failed"] or
      app_container_terminated?(object)
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

  defp older_than?(object, ms, now) do
    with created when is_binary(created) <- get_in(object, ["metadata", "creationTimestamp"]),
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

  # The runner Secrets' metadata, or :error (no `list` on secrets, the server did not answer).
  # The list holds their values too: it is read in a process of its own, which keeps only
  # names, creation times and annotations, so that no value reaches the caller (a FLAME
  # Runner, whose state and crash reports must never show one).
  defp list_secrets(kube, namespace, selector) do
    caller = self()
    ref = make_ref()
    path = "/api/v1/namespaces/#{namespace}/secrets?" <> URI.encode_query(labelSelector: selector)

    {pid, monitor} =
      spawn_monitor(fn ->
        send(caller, {ref, secrets_metadata(Kube.request(kube, "GET", path))})
      end)

    receive do
      {^ref, result} ->
        Process.demonitor(monitor, [:flush])
        result

      {:DOWN, ^monitor, :process, ^pid, _reason} ->
        :error
    end
  end

  defp secrets_metadata({:ok, %{"items" => items}}) when is_list(items) do
    {:ok,
     for %{"metadata" => %{} = metadata} <- items do
       %{"metadata" => Map.take(metadata, ["name", "creationTimestamp", "annotations"])}
     end}
  end

  defp secrets_metadata(_other), do: :error

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

  defp delete(kube, namespace, kind, name, log) do
    meta = %{deleter: :sweep, trigger: :orphaned, kind: kind, namespace: namespace, name: name}

    _ =
      Telemetry.cleanup(meta, fn ->
        result =
          case kind do
            :pod -> Kube.delete_pod(kube, namespace, name, grace_period: 0)
            :secret -> Kube.delete_secret(kube, namespace, name)
          end

        {result, 1}
      end)

    if log, do: Logger.log(log, "swept runner #{kind} #{namespace}/#{name}")
  end
end
