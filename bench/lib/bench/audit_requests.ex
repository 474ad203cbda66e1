defmodule Bench.AuditRequests do
  @moduledoc """
  The backend's API requests on the real node, counted by the API server in its audit log
  (`RealNode.audit_events/1`; the real node's policy records pod and secret writes by anyone
  and reads by ServiceAccounts): the requests of the parent's ServiceAccount in the bench's
  namespace since a point in time, as `Bench.ApiRequests` counts (`{verb, resource,
  subresource, code}`, code `""` for 2xx). The metrics that count on the local control plane
  cannot tell the backend from the real kubelet, which reads every pod it runs too.
  """

  alias FLAMEK8sBackend.Test.RealNode

  @verbs %{
    "create" => "POST",
    "delete" => "DELETE",
    "get" => "GET",
    "list" => "LIST",
    "watch" => "WATCH",
    "patch" => "PATCH",
    "update" => "PUT"
  }

  @doc "Requests by `user` in `namespace` received at or after `since_us` (µs since the epoch)."
  @spec counts(String.t(), String.t(), integer()) :: Bench.ApiRequests.counts()
  def counts(user, namespace, since_us) do
    %{"user" => user, "namespace" => namespace}
    |> RealNode.audit_events()
    |> Enum.filter(&(received_us(&1) >= since_us))
    # A WATCH is logged when its response starts and again when it ends.
    |> Enum.uniq_by(& &1["audit_id"])
    |> Enum.frequencies_by(&key/1)
  end

  defp key(event) do
    code = event["code"]
    code = if code in 200..299 or code == nil, do: "", else: to_string(code)

    {Map.get(@verbs, event["verb"], event["verb"]), event["resource"], event["subresource"] || "",
     code}
  end

  defp received_us(%{"time" => time}) do
    {:ok, dt, 0} = DateTime.from_iso8601(time)
    DateTime.to_unix(dt, :microsecond)
  end
end
