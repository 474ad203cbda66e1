defmodule FLAMEK8sBackend.Test.RunnerApp do
  @moduledoc """
  What the `flame-runner:test` image runs: the runner side of an app using FLAME, i.e. the
  project's applications plus FLAME's, whose terminator connects back to the parent.
  """

  def start do
    {:ok, _} = Application.ensure_all_started(:flame_k8s_backend)
    {:ok, _} = Application.ensure_all_started(:flame)
    :ok
  end
end
