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
      --out PATH       results file (default bench/results/boot-<UTC date and time>.md, or
                       scaling-<...>.md with --scaling)
      --scaling        only the scaling sections (5, 6): bursts of N boots at once, shared watch
                       vs 1 s polling, with a CSV of the figures and its plot next to the report
      --scaling-n LIST N of the no-op pod bursts (default 1,10,100,1000)
      --runner-n LIST  N of the runner VM bursts (default 10,50,100; "" for none)
      --real-node      only the scaling section on the real node (`tools/realnode`, root):
                       N real runner pods at once, shared watch vs 1 s polling (needs the
                       machine to itself: one real node per machine)
      --real-n LIST    N of the real-node bursts (default 10,50)
      --budget         only the cold boot budget (`Bench.Section.Budget`): sequential boots,
                       variants of the backend's options interleaved round-robin, each boot
                       broken down (create, scheduling, sandbox, container, VM start, connect);
                       on the real node with --real-node
      --budget-boots N boots per variant for --budget (default 15)

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
    out: :string,
    scaling: :boolean,
    scaling_n: :string,
    runner_n: :string,
    real_node: :boolean,
    real_n: :string,
    budget: :boolean,
    budget_boots: :integer
  ]
  @scaling [
    scaling_n: "1,10,100,1000",
    runner_n: "10,50,100",
    real_n: "10,50",
    budget_boots: 15
  ]
  @full [pods: 100, batch: 50, boots: 10, storm: 50, rounds: 2, max_seconds: 600] ++ @scaling
  @quick [pods: 10, batch: 10, boots: 3, storm: 10, rounds: 1, max_seconds: 600] ++ @scaling

  @doc "Every option with its value (`:out` may be nil); raises on an unknown option."
  @spec parse!([String.t()]) :: keyword()
  def parse!(argv) do
    {args, _rest, invalid} = OptionParser.parse(argv, strict: @switches)
    if invalid != [], do: raise(ArgumentError, "unknown options: #{inspect(invalid)}")
    defaults = if args[:quick], do: @quick, else: @full

    defaults
    |> Keyword.merge(args)
    |> Keyword.update!(:scaling_n, &ns!/1)
    |> Keyword.update!(:runner_n, &ns!/1)
    |> Keyword.update!(:real_n, &ns!/1)
  end

  # "1,10,100" -> [1, 10, 100]
  defp ns!(list) do
    list
    |> String.split(",", trim: true)
    |> Enum.map(fn n ->
      case Integer.parse(String.trim(n)) do
        {n, ""} when n > 0 -> n
        _ -> raise ArgumentError, "not a list of positive integers: #{inspect(list)}"
      end
    end)
  end
end
