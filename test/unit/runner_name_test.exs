defmodule FLAMEK8sBackend.RunnerNameTest do
  use ExUnit.Case, async: true

  @moduletag :unit
  doctest FLAMEK8sBackend.RunnerName

  alias FLAMEK8sBackend.RunnerName

  defp parent(name), do: %{"metadata" => %{"name" => name}}

  test "every runner of a parent gets a name of its own" do
    names = for _ <- 1..50, do: RunnerName.new(parent("web-1"))
    assert length(Enum.uniq(names)) == 50
  end

  test "a long parent name is cut so the runner name stays a valid DNS label" do
    name = RunnerName.new(parent(String.duplicate("a", 39) <> "-bcdefgh-ijklmnopqrstuvwxyz"))

    assert String.length(name) <= 63
    assert name =~ ~r/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/
    # Cut at 40 characters, just after a dash: that dash goes too, never doubled.
    assert name =~ ~r/^a{39}-flame-[a-z2-7]{8}$/
    refute name =~ "--"
  end
end
