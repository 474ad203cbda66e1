defmodule Bench.Section.BootRequests do
  @moduledoc """
  Section 3: every API request the server counted during the backend's sequential boots, by
  request and sender (`Bench.ApiRequests.Attribution`), per boot.
  """

  alias Bench.Report
  alias Bench.ApiRequests.Attribution
  alias Bench.Format, as: F

  def render(counted, n) do
    rows =
      counted
      |> Enum.sort_by(fn {key, count} -> {Attribution.sender(key), -count, key} end)
      |> Enum.map(fn {key, count} ->
        [Attribution.label(key), Attribution.sender(key), count, F.num(count / n)]
      end)

    per_boot = fn sender -> F.num(Attribution.total(counted, sender) / n) end

    Report.section("""
    ## 3. API requests per boot (#{n} sequential boots, full lifecycle: init, boot, reaper's deletes)

    `apiserver_request_total` summed by verb/resource/subresource, before and after the boots of
    section 2, divided by #{n}. Non-resource requests (the bench's own `GET /metrics`) are left
    out; the bench sends no other request during these boots (it waits on the kubelet's log and
    on the API server's count of secret deletes). "kubelet" rows are the simulated kubelet's work for the pod
    (binding, status, reading the secret, and the DELETE that ends a graceful deletion, counted
    from its log: the metrics cannot tell it from the backend's DELETE), "background" its node
    and lease upkeep and the API server's own reconcilers, independent of the boots. Sweeps of finished runner pods (`init/1`'s LIST)
    happen at most once a minute per parent in this version, so they show up in some runs.

    **backend: #{per_boot.(:backend)} requests per boot**; simulated kubelet: #{per_boot.(:kubelet)}; background: #{per_boot.(:background)}.

    #{Report.table(["request", "sent by", "total", "per boot"], rows)}
    """)
  end
end
