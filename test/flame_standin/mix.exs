defmodule FLAME.StandIn.MixProject do
  use Mix.Project

  # A stand-in for FLAME 0.5.3 (hex.pm is unreachable here): see FLAME's moduledoc for what it
  # mirrors and how that was checked. Set FLAME_PATH to a real FLAME checkout to run the same
  # suite against the real thing (test/flame_checkout).
  def project do
    [app: :flame, version: "0.5.3", elixir: "~> 1.15", deps: []]
  end

  def application do
    [mod: {FLAME.Application, []}, extra_applications: [:logger]]
  end
end
