defmodule FLAMEK8sBackend.Test.Soak.Report do
  @moduledoc "The soak's report in Markdown: totals, outcomes by kind and reason, leaks."

  alias FLAMEK8sBackend.BootError
  alias FLAMEK8sBackend.Test.Soak

  @doc "The report: totals, outcomes by kind and reason, leaks."
  def report(outcomes, leaks, restarts, meta) do
    by_kind = Enum.group_by(outcomes, & &1.kind)

    rows =
      outcomes
      |> Enum.group_by(&{&1.kind, &1.outcome, row_reason(&1)})
      |> Enum.sort()
      |> Enum.map(fn {{kind, outcome, reason}, list} ->
        "| #{kind} | #{outcome} | #{length(list)} | #{String.replace(reason, "|", "\\|")} |"
      end)

    failures = Enum.filter(outcomes, &(&1.outcome == :boot_error))

    """
    # Soak: #{length(outcomes)} boots

    #{Enum.map_join(meta, "\n", fn {k, v} -> "- #{k}: #{v}" end)}
    - boots per kind: #{Enum.map_join(Soak.kinds(), ", ", &"#{&1} #{length(by_kind[&1] || [])}")}
    - boots with the expected outcome: #{Enum.count(outcomes, &Soak.expected?/1)} of #{length(outcomes)}
    - boot failures: #{length(failures)}, each with a phase and a reason: #{Enum.count(failures, &Soak.described_failure?/1)}
    - kube-apiserver SIGKILLed and restarted under the boots: #{length(restarts)} times#{restart_text(restarts)}
    - left at the end: #{leak_text(leaks)}

    | kind | outcome | boots | reason as returned |
    |---|---|---|---|
    #{Enum.join(rows, "\n")}
    """
  end

  # Pod names, IPs and scheduler counts differ per boot: group by what does not.
  defp row_reason(%{error: %BootError{phase: phase, reason: reason}}) do
    reason =
      case reason do
        {:unschedulable, message} -> {:unschedulable, String.replace(message, ~r/\d+/, "N")}
        {:image_pull, m} -> {:image_pull, Map.take(m, [:image, :reason])}
        {:container_exited, m} -> {:container_exited, Map.take(m, [:exit_code, :reason])}
        {:timeout, m} -> {:timeout, Map.take(m, [:detail])}
        other -> other
      end

    "phase #{inspect(phase)}, reason #{inspect(reason, printable_limit: 200)}"
  end

  defp row_reason(%{reason: reason}),
    do: reason |> String.replace(~r/@[\d.]+|flame-\w+/, "*") |> String.replace(~r/\s+/, " ")

  defp restart_text([]), do: ""
  defp restart_text(ms), do: " (back after #{Enum.map_join(ms, ", ", &"#{&1}")} ms)"

  defp leak_text(:ok), do: "0 runner pods, 0 runner secrets"

  defp leak_text({:leaked, %{pods: pods, secrets: secrets}}),
    do:
      "#{length(pods)} runner pods #{inspect(pods)}, #{length(secrets)} runner secrets #{inspect(secrets)}"
end
