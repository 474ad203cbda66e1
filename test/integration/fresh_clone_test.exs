defmodule FLAMEK8sBackend.FreshCloneTest do
  # A new user's first command on a fresh clone is `mix test` (or bin/test, which runs it): the
  # NIF must be built and installed before any module that loads it is compiled, or the failed
  # load sticks in that VM and every NIF call says :not_loaded.
  use ExUnit.Case, async: true

  @moduletag :integration

  @moduletag :tmp_dir
  @moduletag timeout: 600_000

  test "the first mix test of a fresh copy of the repository loads the NIF", %{tmp_dir: dir} do
    root = Path.expand("../..", __DIR__)
    copy_tracked_files(root, dir)
    refute File.exists?(Path.join(dir, "priv/native"))

    env = [
      {"MIX_ENV", "test"},
      {"FLAME_PATH", nil},
      {"CARGO_TARGET_DIR", System.get_env("CARGO_TARGET_DIR") || Path.join(root, "_build/cargo")}
    ]

    {output, status} =
      System.cmd("mix", ["test", "test/unit/kube_test.exs"],
        cd: dir,
        env: env,
        stderr_to_stdout: true
      )

    assert status == 0, output
    assert output =~ ~r/\d+ tests, 0 failures/
    refute output =~ "not_loaded"
  end

  # The working tree's tracked files, as a clone of it would have them (without its build
  # output, which is what makes the first run different).
  defp copy_tracked_files(root, dir) do
    {files, 0} = System.cmd("git", ["ls-files", "-z"], cd: root)

    for file <- String.split(files, <<0>>, trim: true),
        source = Path.join(root, file),
        File.regular?(source) do
      target = Path.join(dir, file)
      File.mkdir_p!(Path.dirname(target))
      File.cp!(source, target)
      File.chmod!(target, File.stat!(source).mode)
    end
  end
end
