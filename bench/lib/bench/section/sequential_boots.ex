defmodule Bench.Section.SequentialBoots do
  @moduledoc """
  Sections 2, 3 and 2b: sequential boots by the backend (its overhead per boot and its API
  requests per boot), then the same boots with the polling variant, and the two compared.
  """

  alias Bench.{BootSeries, Budget, ControlPlane, Report}
  alias Bench.Section.{BootOverhead, BootRequests, WaitComparison}

  def run(%ControlPlane{} = cp, n) do
    if Budget.fits?("Sequential boots", n * 4 + 20) do
      Report.note("sequential boots: #{n}, watch (the backend)")
      watch = BootSeries.run(cp, :watch, n)
      BootOverhead.render(watch.results)
      BootRequests.render(watch.counted, n)

      poll =
        if Budget.fits?("Sequential boots, polling variant", n * 3 + 10) do
          Report.note("sequential boots: #{n}, polling variant")
          BootSeries.run(cp, :poll, n)
        end

      WaitComparison.render(watch, poll, n)
    end
  end
end
