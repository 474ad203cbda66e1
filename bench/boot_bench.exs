# Boot benchmark of FLAMEK8sBackend on the local control plane: run it with `bench/run [options]`
# (options: Bench.Options, in bench/lib/bench/options.ex).
#
# The bench's modules are compiled here, not by mix: they are no part of the library, and use
# only its public API (plus the test harness that runs the control plane).
{:ok, _modules, _warnings} =
  Path.join(__DIR__, "lib/**/*.ex")
  |> Path.wildcard()
  |> Kernel.ParallelCompiler.compile()

Bench.Main.run(System.argv())
