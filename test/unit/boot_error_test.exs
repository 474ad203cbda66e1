defmodule FLAMEK8sBackend.BootErrorTest do
  use ExUnit.Case, async: true

  @moduletag :unit
  doctest FLAMEK8sBackend.BootError

  alias FLAMEK8sBackend.BootError

  @base %BootError{
    phase: :scheduling,
    pod: "prod/web-1-flame-x7k2p",
    reason: {:timeout, %{waited_ms: 30_000, detail: "0/3 nodes are available"}}
  }

  test "without Kubernetes' story the message is one line, as before" do
    refute Exception.message(@base) =~ "\n"
  end

  test "events are listed oldest first, with type, reason, repeat count and message" do
    events = [
      %{
        type: "Warning",
        reason: "FailedScheduling",
        count: 3,
        message: "0/3 nodes are available"
      },
      %{type: "Normal", reason: "TriggeredScaleUp", count: 1, message: "pod triggered scale-up"}
    ]

    assert [_, "  events (oldest first):", first, second] =
             String.split(Exception.message(%{@base | events: events}), "\n")

    assert first == "    Warning FailedScheduling (x3): 0/3 nodes are available"
    assert second == "    Normal TriggeredScaleUp: pod triggered scale-up"
  end

  test "no events, unreadable events and an empty log each say so" do
    assert Exception.message(%{@base | events: []}) =~ "\n  events: none"

    assert Exception.message(%{@base | events: {:unreadable, "forbidden, no RBAC"}}) =~
             "\n  events: not readable (forbidden, no RBAC)"

    assert Exception.message(%{@base | log: %{container: "web", lines: []}}) =~
             ~s(\n  log of container "web": empty)

    assert Exception.message(%{@base | log: {:unreadable, "timeout"}}) =~
             "\n  log: not readable (timeout)"
  end

  test "no scale-up: the autoscaler's own message, and the scheduler's" do
    reason =
      {:no_scale_up,
       %{
         source: "karpenter",
         message: ~s(Failed to schedule pod, incompatible with nodepool "default"),
         scheduler: "0/3 nodes are available: 3 Insufficient cpu."
       }}

    assert Exception.message(%{@base | reason: reason}) ==
             "runner pod prod/web-1-flame-x7k2p failed while scheduling: unschedulable, and " <>
               "karpenter cannot add a node that would fit: Failed to schedule pod, incompatible " <>
               ~s(with nodepool "default" (scheduler: 0/3 nodes are available: 3 Insufficient cpu.\))
  end

  test "a 401 says the credentials were rejected, expired or revoked" do
    error = %{@base | phase: :create_secret, reason: {:api, 401, "Unauthorized", "Unauthorized"}}
    message = Exception.message(error)
    assert message =~ "API error 401 Unauthorized"
    assert message =~ "rejected the credentials"
    assert message =~ "expired, revoked"

    assert BootError.describe({:api, 403, "Forbidden", "pods is forbidden"}) ==
             "API error 403 Forbidden: pods is forbidden"
  end

  test "a create whose answer was lost says so, with why, and that it is cleaned up" do
    reason = {:outcome_unknown, %{reason: {:timeout, 15_000}, settled_at: 0}}
    message = Exception.message(%{@base | phase: :create_pod, reason: reason})
    assert message =~ "the create was sent but its answer was lost"
    assert message =~ BootError.describe({:timeout, 15_000})
    refute message =~ "settled_at"
  end
end
