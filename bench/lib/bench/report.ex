defmodule Bench.Report do
  @moduledoc """
  The report writer: a header, then each section as it finishes, printed at once and kept, so
  that a run stopped by the time cap still writes what it has. Written as Markdown, by default
  to `bench/results/boot-<UTC date and time>.md`.
  """

  alias Bench.Machine

  def default_path(%DateTime{} = now, prefix \\ "boot") do
    stamp = Calendar.strftime(now, "%Y-%m-%dT%H%MZ")
    Path.join([File.cwd!(), "bench", "results", "#{prefix}-#{stamp}.md"])
  end

  def start(path, header) do
    {:ok, _} =
      Agent.start(fn -> %{path: path, header: header, sections: []} end, name: __MODULE__)

    IO.puts(header)
  end

  @doc "Prints and keeps a section; the load average at its end goes with it."
  def section(text) do
    text =
      String.trim_trailing(text) <>
        "\n\n_Load average (1 / 5 / 15 min) at the end of this section: #{Machine.load()}._"

    IO.puts("\n" <> text)
    Agent.update(__MODULE__, fn s -> %{s | sections: s.sections ++ [text]} end)
  end

  @doc "Progress on stderr, not part of the report."
  def note(text), do: IO.puts(:stderr, "[bench] " <> text)

  @doc "Writes the header, the sections so far and `footer`; returns the path."
  def write(footer \\ "") do
    %{path: path, header: header, sections: sections} = Agent.get(__MODULE__, & &1)
    File.mkdir_p!(Path.dirname(path))
    File.write!(path, Enum.join([header | sections] ++ [footer], "\n\n") <> "\n")
    path
  end

  def table(head, rows) do
    line = fn cells -> "| " <> Enum.join(Enum.map(cells, &to_string/1), " | ") <> " |" end
    sep = "|" <> Enum.map_join(head, "|", fn _ -> "---" end) <> "|"
    Enum.join([line.(head), sep | Enum.map(rows, line)], "\n")
  end
end
