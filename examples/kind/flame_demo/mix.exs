defmodule FlameDemo.MixProject do
  use Mix.Project

  # A minimal app using FLAMEK8sBackend, built into an image by ../Dockerfile and deployed to
  # kind by ../kind.sh, or by tools/realnode/image.sh for the real-node tests. Its functions are
  # called from outside the cluster by test/e2e/kind_test.exs.
  #
  # FLAME_DEMO_OFFLINE=1 builds it without hex.pm (tools/realnode/image.sh does): FLAME from this
  # repository's stand-in of FLAME's API (test/flame_standin), :telemetry's stand-in
  # (test/telemetry_standin), and FlameDemo.DNSPoller instead of dns_cluster. FLAME_PATH, set to
  # a FLAME checkout, compiles that FLAME instead (through test/flame_checkout), with or without
  # FLAME_DEMO_OFFLINE.
  def project do
    [
      app: :flame_demo,
      version: "0.1.0",
      elixir: "~> 1.15",
      start_permanent: Mix.env() == :prod,
      deps: deps(),
      releases: [
        flame_demo: [include_executables_for: [:unix]]
      ]
    ]
  end

  def application do
    [
      mod: {FlameDemo.Application, []},
      extra_applications: [:logger]
    ]
  end

  defp deps do
    [
      # This repository; a real app would use {:flame_k8s_backend, "~> 0.1"}.
      {:flame_k8s_backend, path: "../../.."},
      flame_dep()
    ] ++
      if offline?(),
        do: [{:telemetry, path: "../../../test/telemetry_standin"}],
        # Joins all nodes behind the headless Service (DNS_CLUSTER_QUERY) into one BEAM cluster;
        # :telemetry, which the backend reports through when the app has it.
        else: [{:dns_cluster, "~> 0.1"}, {:telemetry, "~> 1.0"}]
  end

  defp flame_dep do
    cond do
      System.get_env("FLAME_PATH") -> {:flame, path: "../../../test/flame_checkout"}
      offline?() -> {:flame, path: "../../../test/flame_standin"}
      true -> {:flame, "~> 0.5"}
    end
  end

  defp offline?, do: System.get_env("FLAME_DEMO_OFFLINE") in ["1", "true"]
end
