defmodule FLAME.Checkout.MixProject do
  use Mix.Project

  # Compiles a real FLAME checkout ($FLAME_PATH) as the :flame application. Its own mix.exs
  # cannot be used here: it names optional hex dependencies (jason, castore), and hex.pm is
  # unreachable, so mix refuses to resolve it even though FLAME runs without them.
  @flame_path Path.expand(System.get_env("FLAME_PATH") || raise("FLAME_PATH is not set"))

  def project do
    [
      app: :flame,
      version: flame_version(),
      elixir: "~> 1.15",
      elixirc_paths: [Path.join(@flame_path, "lib")],
      deps: []
    ]
  end

  def application do
    [
      mod: {FLAME.Application, []},
      extra_applications: [:logger, inets: :optional, ssl: :optional]
    ]
  end

  defp flame_version do
    mix_exs = File.read!(Path.join(@flame_path, "mix.exs"))

    case Regex.run(~r/version: "([^"]+)"/, mix_exs) do
      [_, version] -> version
      nil -> raise "cannot read FLAME's version from #{@flame_path}/mix.exs"
    end
  end
end
