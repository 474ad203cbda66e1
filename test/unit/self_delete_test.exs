defmodule FLAMEK8sBackend.SelfDeleteTest do
  use ExUnit.Case, async: true

  @moduletag :unit

  alias FLAMEK8sBackend.{Reaper, SelfDelete}

  test "notify_reaper/2 sends what was deleted to the pid encode_reaper/1 wrote" do
    encoded = SelfDelete.encode_reaper(self())
    assert encoded =~ ~r/^[A-Za-z0-9_-]+$/

    assert SelfDelete.notify_reaper(encoded, [:pod, :secret]) == :ok
    assert_received {Reaper, :self_deleted, [:pod, :secret]}
  end

  test "notify_reaper/2 sends nothing for nothing deleted, and ignores what is not a pid" do
    not_a_pid = :erlang.term_to_binary({:not, :a, :pid}) |> Base.url_encode64(padding: false)
    # An atom this VM has never seen: :safe decoding refuses it rather than creating it.
    unknown_atom = <<131, 119, 12, "never_seen_x">> |> Base.url_encode64(padding: false)

    for encoded <- [nil, "", "%%%", not_a_pid, unknown_atom] do
      assert SelfDelete.notify_reaper(encoded, [:pod]) == :ok
    end

    assert SelfDelete.notify_reaper(SelfDelete.encode_reaper(self()), []) == :ok
    refute_received {Reaper, :self_deleted, _}
  end
end
