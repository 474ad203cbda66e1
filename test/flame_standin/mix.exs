defmodule FLAME.StandIn.MixProject do
  use Mix.Project

  # A stand-in for FLAME's public API (hex.pm is unreachable here). It follows the FLAME 0.4/0.5
  # contract described in ../../../shared/DESIGN.md §3 and nothing more; set FLAME_PATH to a
  # real FLAME checkout to run the same suite against the real thing.
  def project do
    [app: :flame, version: "0.5.3", elixir: "~> 1.15", deps: []]
  end

  def application do
    [mod: {FLAME.Application, []}, extra_applications: [:logger]]
  end
end
