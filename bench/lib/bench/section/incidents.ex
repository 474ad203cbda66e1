defmodule Bench.Section.Incidents do
  @moduledoc """
  The report's last section, only when something happened: the incidents of the run
  (`Bench.Incidents`) and the kubelet's last lines about each pod left over.
  """

  alias Bench.{Incidents, KubeletLog, Report}

  def render do
    case Incidents.all() do
      [] ->
        :ok

      incidents ->
        traces =
          for key <- Incidents.left_over_pods() do
            "Kubelet log of `#{key}`:\n\n```\n#{Enum.join(KubeletLog.lines_about(key, 8), "\n")}\n```"
          end

        Report.section(
          "## Incidents\n\n" <>
            Enum.map_join(incidents, "\n", &("- " <> &1)) <>
            Enum.map_join(traces, "", &("\n\n" <> &1))
        )
    end
  end
end
