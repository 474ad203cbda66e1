defmodule FLAMEK8sBackend.BootDiagnostics do
  @moduledoc false
  # Kubernetes' own story of a failed boot, added to its `FLAMEK8sBackend.BootError`: the runner
  # pod's latest Events (`FailedScheduling`, `FailedMount`, `BackOff`, `Killing`, ...) and, for a
  # container that exited (or a runner VM that ran but never connected), the last lines of its
  # log.
  #
  # Best effort, and it never changes the boot's result. What RBAC does not let the parent read
  # (`list` on `events`, `get` on `pods/log`) is `:forbidden` in the error, which then says
  # nothing of it: a warning says so once per VM and namespace, naming the missing verb. What
  # could not be read for another reason (an API server that does not answer in time) is said so
  # in the error (`{:unreadable, why}`). Both requests run at once, within a budget of a
  # few seconds, before the pod is deleted (its log goes with it). Known secret values (the
  # cookie, `:secret_env`) are replaced by `[redacted]` in everything read, and in the error's
  # own `:reason` (a container's termination message, the waiting detail, the API server's
  # message), whether or not the pod may exist.
  #
  #     error = FLAMEK8sBackend.BootDiagnostics.add(kube, error,
  #       namespace: "prod", pod: "web-1-flame-x7k2p", app_container: "web", redact: [cookie])
  #     error.events
  #     #=> [%{type: "Warning", reason: "FailedScheduling", count: 3, message: "0/3 nodes ...", ...}]

  alias FLAMEK8sBackend.{BootError, Kube, WarnOnce}

  @max_events 10
  @tail_lines 20
  @limit_bytes 16_384
  @budget_ms 3_000
  # Shorter values cannot be told apart from ordinary text; a cookie is far longer.
  @min_redacted 4

  @typedoc "One Event of the pod, summarised."
  @type event :: %{
          type: String.t() | nil,
          reason: String.t() | nil,
          message: String.t() | nil,
          count: pos_integer(),
          last_seen: String.t() | nil,
          source: String.t() | nil
        }

  @doc """
  Redacts `error`'s reason and adds `:events` and (when a container log tells more) `:log` to
  it, if the pod may exist. Options: `:namespace`, `:pod` (its name), `:app_container`,
  `:redact` (strings never to show), `:budget` (ms, default #{@budget_ms}).
  """
  @spec add(Kube.t(), BootError.t(), keyword()) :: BootError.t()
  def add(kube, %BootError{} = error, opts) do
    redact = opts |> Keyword.get(:redact, []) |> Enum.filter(&(byte_size(&1) >= @min_redacted))
    error = %{error | reason: redact_term(error.reason, redact)}

    if pod_may_exist?(error) do
      container = log_container(error, opts[:app_container])
      budget = Keyword.get(opts, :budget, @budget_ms)

      reads =
        [events: fn -> events(kube, opts[:namespace], opts[:pod]) end] ++
          if(container,
            do: [log: fn -> log(kube, opts[:namespace], opts[:pod], container) end],
            else: []
          )

      reads
      |> run_within(budget)
      |> Enum.reduce(error, fn {field, value}, acc ->
        Map.put(acc, field, redact(value, redact))
      end)
    else
      error
    end
  end

  @doc """
  Whether the pod of a failed boot may exist, so that Kubernetes may have something to say.

      iex> FLAMEK8sBackend.BootDiagnostics.pod_may_exist?(%FLAMEK8sBackend.BootError{phase: :scheduling, reason: {:unschedulable, "0/1"}})
      true
      iex> FLAMEK8sBackend.BootDiagnostics.pod_may_exist?(%FLAMEK8sBackend.BootError{phase: :scaling_up, reason: {:timeout, %{waited_ms: 1, detail: nil}}})
      true
      iex> FLAMEK8sBackend.BootDiagnostics.pod_may_exist?(%FLAMEK8sBackend.BootError{phase: :create_pod, reason: {:api, 403, "Forbidden", "no"}})
      false
  """
  @spec pod_may_exist?(BootError.t()) :: boolean()
  def pod_may_exist?(%BootError{phase: phase})
      when phase in [:scheduling, :scaling_up, :container_start, :remote_up],
      do: true

  # A create whose answer did not come in time may well have created the pod.
  def pod_may_exist?(%BootError{phase: :create_pod, reason: {:timeout, _}}), do: true
  def pod_may_exist?(%BootError{phase: :create_pod, reason: {:outcome_unknown, _}}), do: true
  def pod_may_exist?(%BootError{}), do: false

  # Whose log tells more: a container that exited, or the runner VM that ran but never said
  # remote_up (why it could not connect is in its log).
  defp log_container(%BootError{reason: {:container_exited, %{container: name}}}, _app)
       when is_binary(name),
       do: name

  defp log_container(%BootError{reason: {:pod_phase, "Failed", _}}, app), do: app
  defp log_container(%BootError{phase: :remote_up, reason: {:timeout, _}}, app), do: app
  defp log_container(%BootError{}, _app), do: nil

  # Both reads at once, each in a task of its own: a task that outlives the budget is killed,
  # and with it its request (the NIF cancels a request whose caller exits).
  defp run_within(reads, budget) do
    tasks = Enum.map(reads, fn {field, fun} -> {field, Task.async(fun)} end)
    results = Task.yield_many(Enum.map(tasks, &elem(&1, 1)), budget)

    Enum.zip_with(tasks, results, fn {field, task}, {task, result} ->
      case result do
        {:ok, value} ->
          {field, value}

        _ ->
          _ = Task.shutdown(task, :brutal_kill)
          {field, {:unreadable, "no answer within #{budget} ms"}}
      end
    end)
  end

  ## Events

  @doc false
  @spec events(Kube.t(), String.t(), String.t()) ::
          [event()] | :forbidden | {:unreadable, String.t()}
  def events(kube, namespace, pod) do
    path =
      "/api/v1/namespaces/#{namespace}/events" <>
        "?fieldSelector=involvedObject.kind=Pod,involvedObject.name=#{pod}"

    case Kube.request(kube, "GET", path) do
      {:ok, %{"items" => items}} when is_list(items) ->
        items
        |> Enum.filter(&is_map/1)
        |> Enum.sort_by(&seen_at/1)
        |> Enum.take(-@max_events)
        |> Enum.map(&summarise/1)

      {:ok, _other} ->
        {:unreadable, "the API server's answer is not an event list"}

      {:error, reason} ->
        unreadable(reason, namespace, ~s(the RBAC verb "list" on "events"), "Kubernetes' events")
    end
  rescue
    error -> {:unreadable, Exception.message(error)}
  end

  # Events written through events.k8s.io (the scheduler, newer kubelets) carry eventTime and
  # series instead of lastTimestamp and count.
  defp seen_at(event) do
    event["lastTimestamp"] || get_in(event, ["series", "lastObservedTime"]) ||
      event["eventTime"] || event["firstTimestamp"] ||
      get_in(event, ["metadata", "creationTimestamp"]) || ""
  end

  defp summarise(event) do
    count =
      case event["count"] || get_in(event, ["series", "count"]) do
        n when is_integer(n) and n > 0 -> n
        _ -> 1
      end

    %{
      type: event["type"],
      reason: event["reason"],
      message: event["message"],
      count: count,
      last_seen: if(seen_at(event) != "", do: seen_at(event)),
      source: get_in(event, ["source", "component"]) || event["reportingComponent"]
    }
  end

  ## Log

  @doc false
  @spec log(Kube.t(), String.t(), String.t(), String.t()) ::
          %{container: String.t(), lines: [String.t()]} | :forbidden | {:unreadable, String.t()}
  def log(kube, namespace, pod, container) do
    path =
      "/api/v1/namespaces/#{namespace}/pods/#{pod}/log" <>
        "?container=#{container}&tailLines=#{@tail_lines}&limitBytes=#{@limit_bytes}"

    case Kube.request(kube, "GET", path) do
      {:ok, text} when is_binary(text) ->
        %{container: container, lines: lines(text)}

      {:ok, nil} ->
        %{container: container, lines: []}

      {:error, reason} ->
        unreadable(reason, namespace, ~s(the RBAC verb "get" on "pods/log"), "container logs")
    end
  rescue
    error -> {:unreadable, Exception.message(error)}
  end

  defp lines(text) do
    text
    |> String.split(["\r\n", "\n"])
    |> Enum.drop_while(&(&1 == ""))
    |> Enum.reverse()
    |> Enum.drop_while(&(&1 == ""))
    |> Enum.reverse()
    |> Enum.take(-@tail_lines)
  end

  # Forbidden stays forbidden until someone changes the Role: said once, not in every error.
  defp unreadable({:api, 403, _, message}, namespace, rbac, what) do
    :ok =
      WarnOnce.warn({__MODULE__, namespace, rbac}, fn ->
        "flame_k8s_backend: boot errors in namespace #{namespace} will not show #{what}: " <>
          "#{rbac} is missing from the parent's Role (examples/kubernetes/rbac.yaml grants " <>
          "it); the API server said: #{message}"
      end)

    :forbidden
  end

  defp unreadable(reason, _namespace, _rbac, _what), do: {:unreadable, BootError.describe(reason)}

  ## Redaction

  defp redact(value, []), do: value
  defp redact(:forbidden, _secrets), do: :forbidden
  defp redact({:unreadable, why}, secrets), do: {:unreadable, scrub(why, secrets)}

  defp redact(%{lines: lines} = log, secrets),
    do: %{log | lines: Enum.map(lines, &scrub(&1, secrets))}

  defp redact(events, secrets) when is_list(events) do
    Enum.map(events, fn event -> Map.update!(event, :message, &scrub(&1, secrets)) end)
  end

  # Every text in a reason, however deep (a map's keys are atoms of ours).
  defp redact_term(term, []), do: term
  defp redact_term(text, secrets) when is_binary(text), do: scrub(text, secrets)

  defp redact_term([head | tail], secrets),
    do: [redact_term(head, secrets) | redact_term(tail, secrets)]

  defp redact_term(tuple, secrets) when is_tuple(tuple),
    do: tuple |> Tuple.to_list() |> redact_term(secrets) |> List.to_tuple()

  defp redact_term(map, secrets) when is_map(map) and not is_struct(map),
    do: Map.new(map, fn {key, value} -> {key, redact_term(value, secrets)} end)

  defp redact_term(other, _secrets), do: other

  defp scrub(text, secrets) when is_binary(text), do: String.replace(text, secrets, "[redacted]")
  defp scrub(other, _secrets), do: other
end
