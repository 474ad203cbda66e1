defmodule FLAMEK8sBackend.Test.KubeletLogFormatter do
  @moduledoc """
  An ExUnit formatter that, when a test fails, prints what the simulated kubelet logged about
  that test's namespace.
  """
  use GenServer

  alias FLAMEK8sBackend.Test.LocalCluster

  def init(_opts), do: {:ok, nil}

  def handle_cast({:test_finished, %ExUnit.Test{state: {:failed, _}} = test}, state) do
    if LocalCluster.running?() do
      namespace = LocalCluster.namespace_name(test.module, test.name)

      case LocalCluster.kubelet_log(namespace) do
        [] ->
          :ok

        lines ->
          IO.puts(
            "\nkubelet log for #{namespace} (#{test.name}):\n  " <> Enum.join(lines, "\n  ")
          )
      end
    end

    {:noreply, state}
  end

  def handle_cast(_event, state), do: {:noreply, state}
end
