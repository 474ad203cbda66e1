defmodule Bench.Options do
  @moduledoc """
  The bench's command line, `bench/run [options]`:

      --pods N         sleeper pods per readiness series (sequential watch / sequential poll; default 100)
      --batch N        pods per concurrent readiness batch (default 50)
      --boots N        sequential runner boots for overhead and API requests (default 10)
      --storm N        concurrent boots / pods in the storms (default 50)
      --rounds N       storm rounds, each runs watch and poll, alternating which goes first (default 2)
      --max-seconds S  hard cap on the whole run (default 600); sections that would not fit are skipped
      --quick          --pods 10 --batch 10 --boots 3 --storm 10 --rounds 1
      --out PATH       results file (default bench/results/boot-<UTC date and time>.md)

  `bench/run` reads `--max-seconds` too, for its outer timeout.
  """

  @switches [
    pods: :integer,
    batch: :integer,
    boots: :integer,
    storm: :integer,
    rounds: :integer,
    max_seconds: :integer,
    quick: :boolean,
    out: :string
  ]
  @full [pods: 100, batch: 50, boots: 10, storm: 50, rounds: 2, max_seconds: 600]
  @quick [pods: 10, batch: 10, boots: 3, storm: 10, rounds: 1, max_seconds: 600]

  @doc "Every option with its value (`:out` may be nil); raises on an unknown option."
  @spec parse!([String.t()]) :: keyword()
  def parse!(argv) do
    {args, _rest, invalid} = OptionParser.parse(argv, strict: @switches)
    if invalid != [], do: raise(ArgumentError, "unknown options: #{inspect(invalid)}")
    defaults = if args[:quick], do: @quick, else: @full
    Keyword.merge(defaults, args)
  end
end
