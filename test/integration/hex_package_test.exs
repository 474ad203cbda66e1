defmodule FLAMEK8sBackend.HexPackageTest do
  # What the package's requirements are: mix.exs evaluated as `mix hex.build` evaluates it, in
  # a VM of its own (a project is pushed onto Mix's stack once per VM). Hex is not installed
  # here (hex.pm is unreachable): mix.exs only asks whether the Hex module loads, so a
  # stand-in module plays it.
  use ExUnit.Case, async: true

  @moduletag :integration

  @root Path.expand("../..", __DIR__)

  defp project_config(env, hex?) do
    script = """
    Mix.start()
    hex? = #{hex?}

    if hex? and not Code.ensure_loaded?(Hex) do
      defmodule Hex, do: nil
    end

    Mix.env(#{inspect(env)})

    Mix.Project.in_project(:flame_k8s_backend, #{inspect(@root)}, fn project ->
      config = Mix.Project.config()
      envs = if function_exported?(project, :cli, 0), do: project.cli()[:preferred_envs], else: []
      legacy = config[:preferred_cli_env] || []
      IO.puts(:erlang.term_to_binary({config[:deps], envs, legacy}) |> Base.encode64())
    end)
    """

    {output, 0} =
      System.cmd("elixir", ["-e", script], env: [{"MIX_ENV", nil}], stderr_to_stdout: true)

    output
    |> String.split("\n", trim: true)
    |> List.last()
    |> Base.decode64!()
    |> :erlang.binary_to_term()
  end

  test "a hex build (prod, with Hex) declares FLAME as an optional hex dependency" do
    {deps, _envs, _legacy} = project_config(:prod, true)
    assert {:flame, "~> 0.4.0 or ~> 0.5.0", optional: true} in deps
  end

  test "mix hex.build and hex.publish run in prod, whichever Elixir reads the setting" do
    {_deps, envs, legacy} = project_config(:dev, false)

    for task <- [:"hex.build", :"hex.publish"] do
      assert envs[task] == :prod

      if Version.match?(System.version(), "< 1.15.0"),
        do: assert(legacy[task] == :prod)
    end
  end

  test "without Hex (a path dependency) nothing asks Mix for a hex package" do
    {deps, _envs, _legacy} = project_config(:prod, false)
    refute Enum.any?(deps, &(elem(&1, 0) == :flame))

    # In dev and test, FLAME is the stand-in (or FLAME_PATH's checkout) by path.
    {deps, _envs, _legacy} = project_config(:test, false)
    assert {:flame, path: _, only: [:dev, :test]} = List.keyfind(deps, :flame, 0)
  end
end
