# The NIF's Mix compiler is kept in its own file; mix evaluates this one before compiling
# anything, also when the project is a path or git dependency, so the compiler is defined first.
Code.require_file("native/mix/compile.flame_k8s_native.exs", __DIR__)

defmodule FLAMEK8sBackend.MixProject do
  use Mix.Project

  @version "0.1.0"

  # `mix hex.build` and `mix hex.publish` run in :prod, the only env whose deps/0 declares FLAME
  # as a hex dependency (in :dev it is a path dependency Hex would leave out of the package).
  @preferred_envs ["hex.build": :prod, "hex.publish": :prod]

  def project do
    [
      app: :flame_k8s_backend,
      version: @version,
      elixir: "~> 1.15",
      # The NIF first: the Elixir compiler loads FLAMEK8sBackend.Native, whose @on_load keeps the
      # result of a load that found no library, and `mix test` runs in that same VM.
      compilers: [:flame_k8s_native | Mix.compilers()],
      # A real FLAME checkout gets a build tree of its own, so switching back and forth between
      # it and the stand-in never mixes their compiled code.
      build_path: if(System.get_env("FLAME_PATH"), do: "_build/flame_checkout", else: "_build"),
      elixirc_paths: elixirc_paths(Mix.env()),
      start_permanent: Mix.env() == :prod,
      deps: deps(),
      test_paths: ["test"],
      description: "A Kubernetes backend for FLAME with a Rust (kube-rs) core",
      package: [
        licenses: ["Apache-2.0"],
        # Without these the package could not build its NIF; priv/native stays out so a locally
        # built library never ships.
        files: ~w(lib native Cargo.toml Cargo.lock checksum-flame_k8s_native.sha256 mix.exs
             .formatter.exs README.md LICENSE CHANGELOG.md)
      ],
      docs: [
        main: "FLAMEK8sBackend",
        extras: [
          "README.md",
          "guides/installation.md",
          "guides/kubernetes-setup.md",
          "guides/runner-pods.md",
          "guides/failures-and-cleanup.md",
          "guides/code-sync-and-networking.md",
          "guides/telemetry.md",
          "guides/migrating-from-0.7.md",
          "guides/troubleshooting.md",
          "CHANGELOG.md",
          "CONTRIBUTING.md"
        ],
        groups_for_extras: [
          Guides: ~r{^guides/},
          About: ["CHANGELOG.md", "CONTRIBUTING.md"]
        ],
        groups_for_modules: [
          Backend: [FLAMEK8sBackend],
          "Errors and events": [FLAMEK8sBackend.BootError, FLAMEK8sBackend.Telemetry]
        ]
      ]
    ]
  end

  def cli, do: [preferred_envs: @preferred_envs]

  def application do
    [
      mod: {FLAMEK8sBackend.Application, []},
      extra_applications: [:logger, :crypto]
    ]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]

  defp deps, do: Enum.reject([flame(Mix.env()), telemetry(Mix.env())], &is_nil/1)

  # The backend emits :telemetry events only when the :telemetry application is there: it is
  # the app's dependency, never this library's (nothing is declared outside the tests). The
  # tests use a stand-in of its handler API (test/telemetry_standin), as they do for FLAME.
  defp telemetry(:test), do: {:telemetry, path: "test/telemetry_standin", only: :test}
  defp telemetry(_env), do: nil

  # FLAMEK8sBackend implements FLAME.Backend, so FLAME must compile first: it is a dependency.
  #
  # This project's own dev and test use the stand-in of FLAME's public API under test/ (see
  # CONTRIBUTING.md), or the real FLAME checkout FLAME_PATH points at (compiled through
  # test/flame_checkout).
  #
  # In an app that depends on this library (mix evaluates this file there with MIX_ENV=prod),
  # and in the package `mix hex.build` makes (in :prod, see @preferred_envs), FLAME is the
  # app's own hex dependency, declared here as optional: the app chooses its version, and
  # the Kubernetes client stays usable without FLAME. Mix cannot load a hex dependency at all
  # without Hex, not even an optional one ("could not find an SCM for dependency :flame"), so
  # where Hex is not installed (an app that takes this library by path, as
  # test/integration/as_dependency_test.exs does) nothing is declared; a hex build always has
  # Hex. test/integration/hex_package_test.exs evaluates this in :prod with and without Hex.
  defp flame(env) when env in [:dev, :test], do: {:flame, path: flame_path(), only: [:dev, :test]}

  defp flame(_env) do
    if Code.ensure_loaded?(Hex), do: {:flame, "~> 0.4.0 or ~> 0.5.0", optional: true}
  end

  defp flame_path,
    do: if(System.get_env("FLAME_PATH"), do: "test/flame_checkout", else: "test/flame_standin")
end
