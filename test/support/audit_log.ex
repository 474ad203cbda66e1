defmodule FLAMEK8sBackend.Test.AuditLog do
  @moduledoc """
  Reads a kube-apiserver audit log (`--audit-log-format json`): who sent which request, per
  namespace and user, which the API server's metrics cannot split. Both test control planes
  write one: `FLAMEK8sBackend.Test.LocalCluster` and `FLAMEK8sBackend.Test.RealNode`.
  """

  @doc """
  The events of the audit log at `path` matching `filter`, oldest first, each a map with the
  keys `"verb"`, `"audit_id"`, `"stage"`, `"user"` (username), `"user_agent"`, `"resource"`, `"subresource"`,
  `"namespace"`, `"name"`, `"code"` (the response status, an integer), `"time"` (when the
  request came), `"pod_name"` (the pod whose ServiceAccount token made the request, else nil)
  and `"source_ips"`. `filter` is a map of some of those keys and their values.
  """
  def events(path, filter \\ %{}) do
    case File.read(path) do
      {:ok, text} ->
        text
        |> String.split("\n", trim: true)
        |> Enum.map(&event/1)
        |> Enum.filter(fn event -> Enum.all?(filter, fn {k, v} -> event[k] == v end) end)

      {:error, :enoent} ->
        []
    end
  end

  @doc """
  The requests among `events`, one per audit ID (a WATCH has two events, ResponseStarted and
  ResponseComplete), counted as `%{{verb, resource, subresource} => n}` (subresource `""`
  when there is none).
  """
  def count_requests(events) do
    events
    |> Enum.uniq_by(& &1["audit_id"])
    |> Enum.frequencies_by(&{&1["verb"], &1["resource"], &1["subresource"] || ""})
  end

  # Audit lines are JSON as Go's encoding/json writes it (no spaces, fixed field order), and
  # these fields are plain strings: a regex each needs no JSON decoder on any supported OTP.
  defp event(line) do
    object = capture(~r/"objectRef":\{([^}]*)\}/, line) || ""

    %{
      "verb" => capture(~r/"verb":"([^"]*)"/, line),
      "audit_id" => capture(~r/"auditID":"([^"]*)"/, line),
      "stage" => capture(~r/"stage":"([^"]*)"/, line),
      "time" => capture(~r/"requestReceivedTimestamp":"([^"]*)"/, line),
      "user" => capture(~r/"user":\{"username":"([^"]*)"/, line),
      "user_agent" => capture(~r/"userAgent":"([^"]*)"/, line),
      "resource" => capture(~r/"resource":"([^"]*)"/, object),
      "subresource" => capture(~r/"subresource":"([^"]*)"/, object),
      "namespace" => capture(~r/"namespace":"([^"]*)"/, object),
      "name" => capture(~r/"name":"([^"]*)"/, object),
      # A pod's ServiceAccount token names the pod it was mounted into.
      "pod_name" => capture(~r/"authentication.kubernetes.io\/pod-name":\["([^"]*)"/, line),
      "source_ips" =>
        case capture(~r/"sourceIPs":\[([^\]]*)\]/, line) do
          nil -> []
          ips -> ips |> String.split(",") |> Enum.map(&String.trim(&1, "\""))
        end,
      "code" =>
        case capture(~r/"responseStatus":\{.*?"code":(\d+)/, line) do
          nil -> nil
          code -> String.to_integer(code)
        end
    }
  end

  defp capture(regex, text) do
    case Regex.run(regex, text, capture: :all_but_first) do
      [value] -> value
      nil -> nil
    end
  end
end
