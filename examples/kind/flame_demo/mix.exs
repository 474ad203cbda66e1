defmodule FlameDemo.MixProject do
  use Mix.Project

  # A minimal app using FLAMEK8sBackend, built into an image by ../Dockerfile and deployed to
  # kind by ../kind.sh. Its functions are called from outside the cluster by test/e2e/kind_test.exs.
  def project do
    [
      app: :flame_demo,
      version: "0.1.0",
      # FLAME itself needs Elixir ~> 1.15.
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
      {:flame, "~> 0.5"},
      # Joins all nodes behind the headless Service (DNS_CLUSTER_QUERY) into one BEAM cluster.
      {:dns_cluster, "~> 0.1"}
    ]
  end
end
