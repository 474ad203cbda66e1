defmodule Telemetry.StandIn.MixProject do
  use Mix.Project

  # A stand-in for the `:telemetry` library's handler API (hex.pm is unreachable here), used only
  # by this project's tests: `attach/4`, `attach_many/4`, `detach/1`, `list_handlers/1` and
  # `execute/3`, with telemetry 1.x's semantics (handlers run synchronously in the process that
  # emits; a handler that raises is detached). FLAMEK8sBackend does not depend on :telemetry:
  # it emits only when the module is there.
  def project do
    [app: :telemetry, version: "1.3.0", elixir: "~> 1.15", deps: []]
  end

  def application do
    [mod: {Telemetry.StandIn.Application, []}, extra_applications: [:logger]]
  end
end
