defmodule Bench.Plot do
  @moduledoc """
  The scaling figures as CSV next to the report, drawn by `bench/plot.py` (matplotlib) into a
  PNG next to it, which the report links. Without matplotlib (Debian: `apt-get install
  python3-matplotlib`) the report says so and keeps the CSV.
  """

  alias Bench.Report
  alias Bench.Section.Scaling

  @doc """
  Writes `<report>.csv` and `<report>.png` for `{bursts, idle}`
  (`Bench.Section.Scaling.run/3`), and a report section linking them; `where` names the
  cluster in the plot's title.
  """
  def write(result, report_path, where \\ "the local control plane")
  def write({[], _idle}, _report_path, _where), do: :ok

  def write({bursts, idle}, report_path, where) do
    csv = Path.rootname(report_path) <> ".csv"
    png = Path.rootname(report_path) <> ".png"
    Scaling.write_csv(bursts, idle, csv)
    script = Path.join(File.cwd!(), "bench/plot.py")
    figures = "Figures: [#{Path.basename(csv)}](#{Path.basename(csv)})"

    case python() do
      nil ->
        Report.section("#{figures}; no plot: no python3 with matplotlib found.")

      python ->
        case System.cmd(python, [script, csv, png, where], stderr_to_stdout: true) do
          {_, 0} ->
            Report.section("""
            ![per-boot cost and probe lateness against N](#{Path.basename(png)})

            #{figures}; drawn by `bench/plot.py #{Path.basename(csv)} #{Path.basename(png)} #{inspect(where)}`.
            """)

          {out, status} ->
            Report.section(
              "#{figures}; no plot: bench/plot.py exited #{status}: #{String.slice(out, -300, 300)}"
            )
        end
    end
  end

  # The first python3 that has matplotlib: a pyenv shim may come before the system's.
  defp python do
    ["python3", "/usr/bin/python3"]
    |> Enum.map(&System.find_executable/1)
    |> Enum.reject(&is_nil/1)
    |> Enum.find(fn py ->
      match?({_, 0}, System.cmd(py, ["-c", "import matplotlib"], stderr_to_stdout: true))
    end)
  end
end
