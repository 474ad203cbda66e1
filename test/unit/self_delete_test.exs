defmodule FLAMEK8sBackend.SelfDeleteTest do
  use ExUnit.Case, async: true

  @moduletag :unit

  alias FLAMEK8sBackend.{Reaper, SelfDelete}
  alias FLAMEK8sBackend.Test.CleanupEvents

  describe "report/3" do
    setup do
      name = "web-1-flame-#{System.unique_integer([:positive])}"
      CleanupEvents.forward!(&match?(%{name: ^name}, &1))

      deletions = [
        %{kind: :secret, name: name, result: :ok, duration_us: 700},
        %{kind: :pod, name: name, result: {:error, {:timeout, 1_000}}, duration_us: 1_000_000}
      ]

      %{name: name, deletions: deletions}
    end

    test "to the reaper encode_reaper/1 named: the deletions, no event here", %{
      deletions: deletions
    } do
      encoded = SelfDelete.encode_reaper(self())
      assert encoded =~ ~r/^[A-Za-z0-9_-]+$/

      assert SelfDelete.report(encoded, "prod", deletions) == :ok
      assert_received {Reaper, :self_deleted, ^deletions}
      refute_received {:cleanup, _, _}
    end

    test "nothing deleted: nothing sent" do
      assert SelfDelete.report(SelfDelete.encode_reaper(self()), "prod", []) == :ok
      refute_received {Reaper, :self_deleted, _}
    end

    test "without a reaper to tell: the events are emitted on this node", %{
      name: name,
      deletions: deletions
    } do
      not_a_pid = :erlang.term_to_binary({:not, :a, :pid}) |> Base.url_encode64(padding: false)
      # An atom this VM has never seen: :safe decoding refuses it rather than creating it.
      unknown_atom = <<131, 119, 12, "never_seen_x">> |> Base.url_encode64(padding: false)

      for encoded <- [nil, "", "%%%", not_a_pid, unknown_atom] do
        assert SelfDelete.report(encoded, "prod", deletions) == :ok
        refute_received {Reaper, :self_deleted, _}

        assert_received {:cleanup, %{duration: secret_duration, attempts: 1},
                         %{
                           deleter: :runner,
                           trigger: :system_shutdown,
                           kind: :secret,
                           namespace: "prod",
                           name: ^name,
                           result: :ok
                         }}

        assert_received {:cleanup, %{duration: pod_duration, attempts: 1},
                         %{kind: :pod, name: ^name, result: {:error, {:timeout, 1_000}}}}

        native = &System.convert_time_unit(&1, :microsecond, :native)
        assert {secret_duration, pod_duration} == {native.(700), native.(1_000_000)}
      end
    end
  end
end
