defmodule Mix.Tasks.Compile.FlameK8sNative do
  @shortdoc "Builds the flame_k8s_native NIF with cargo and installs it in priv/native"
  @moduledoc """
  Builds the Rust NIF (`native/flame_k8s_native`) with `cargo build --release` and copies the
  library to `priv/native/`. Loaded by `mix.exs` (not compiled from `lib/`) because the project has no hex
  dependencies (no rustler hex package, no elixir_make): mix evaluates this file before it
  compiles anything, also when the project is a path or git dependency.

  It rebuilds only when a Rust source, `Cargo.toml`, `Cargo.lock` or `build.rs` is newer than
  the installed library. Cargo's target directory is `$CARGO_TARGET_DIR` when set, else
  `_build/cargo` (shared by every Mix env so `dev` and `test` build once).

  Environment:

    * `CARGO` - the cargo executable (default: `cargo` on `PATH`, then `~/.cargo/bin/cargo`)
    * `CARGO_TARGET_DIR` - where cargo builds
    * `FLAME_K8S_NIF_PROFILE` - `release` (default) or `debug`
  """
  use Mix.Task.Compiler

  @crate "flame_k8s_native"

  @impl true
  def run(_args) do
    root = project_root()
    installed = installed_path(root)
    profile = System.get_env("FLAME_K8S_NIF_PROFILE", "release")

    if stale?(root, installed) or installed_profile(installed) != profile do
      build(root, installed, profile)
    else
      {:noop, []}
    end
  end

  @impl true
  def manifests, do: []

  @impl true
  def clean do
    File.rm_rf(Path.join(project_root(), "priv/native"))
    :ok
  end

  # This file sits in tools/mix/ of the project.
  defp project_root, do: Path.expand("../..", __DIR__)

  defp installed_path(root), do: Path.join([root, "priv", "native", "lib#{@crate}.so"])

  # Which cargo profile built the installed library: switching FLAME_K8S_NIF_PROFILE must
  # rebuild even when no source changed.
  defp profile_marker(installed), do: installed <> ".profile"

  defp installed_profile(installed) do
    case File.read(profile_marker(installed)) do
      {:ok, profile} -> String.trim(profile)
      {:error, _} -> "release"
    end
  end

  defp stale?(root, installed) do
    sources =
      Path.wildcard(Path.join(root, "native/#{@crate}/**/*.{rs,toml}")) ++
        Enum.filter(
          [Path.join(root, "Cargo.toml"), Path.join(root, "Cargo.lock")],
          &File.exists?/1
        )

    case File.stat(installed, time: :posix) do
      {:ok, %{mtime: built}} ->
        Enum.any?(sources, fn source -> File.stat!(source, time: :posix).mtime > built end)

      {:error, _} ->
        true
    end
  end

  defp build(root, installed, profile) do
    cargo = cargo!()
    target_dir = System.get_env("CARGO_TARGET_DIR") || default_target_dir()
    profile_args = if profile == "release", do: ["--release"], else: []

    args =
      ["build", "--manifest-path", Path.join(root, "Cargo.toml"), "-p", @crate] ++ profile_args

    Mix.shell().info("Compiling NIF #{@crate} (cargo #{Enum.join(args, " ")})")

    {_, status} =
      System.cmd(cargo, args,
        cd: root,
        env: [{"CARGO_TARGET_DIR", target_dir}],
        into: IO.stream(:stdio, :line),
        stderr_to_stdout: true
      )

    built = Path.join([target_dir, profile, "lib#{@crate}#{shared_lib_ext()}"])

    cond do
      status != 0 ->
        Mix.raise("cargo failed to build #{@crate} (exit status #{status}); see its output above")

      not File.exists?(built) ->
        Mix.raise("cargo succeeded but #{built} does not exist")

      true ->
        install(built, installed)
        File.write!(profile_marker(installed), profile)
        install_into_build(built)
        {:ok, []}
    end
  end

  # Copy to a temporary name, then rename: a VM that has the old library loaded keeps its
  # mapping of the old inode instead of seeing a half-written file, and two builds at once
  # (two Mix envs) never write the same temporary file.
  defp install(built, installed) do
    File.mkdir_p!(Path.dirname(installed))
    tmp = "#{installed}.#{System.pid()}-#{System.unique_integer([:positive])}.tmp"
    File.cp!(built, tmp)
    File.rename!(tmp, installed)
  end

  # _build/<env>/lib/flame_k8s_backend/priv is a symlink to priv/ in a normal build, but a copy
  # made before this compiler ran with build_embedded: true.
  defp install_into_build(built) do
    app_priv = Path.join(Mix.Project.app_path(), "priv")

    case File.read_link(app_priv) do
      {:ok, _symlink} -> :ok
      {:error, _} -> install(built, Path.join([app_priv, "native", Path.basename(built)]))
    end
  end

  defp default_target_dir do
    Path.join(Path.dirname(Mix.Project.build_path()), "cargo")
  end

  defp shared_lib_ext do
    case :os.type() do
      {:unix, :darwin} -> ".dylib"
      _ -> ".so"
    end
  end

  defp cargo! do
    candidates = [
      System.get_env("CARGO"),
      System.find_executable("cargo"),
      Path.expand("~/.cargo/bin/cargo")
    ]

    Enum.find(candidates, &(&1 && File.exists?(&1))) ||
      Mix.raise("""
      flame_k8s_backend needs a Rust toolchain to build its NIF, but cargo was not found \
      (looked at $CARGO, PATH and ~/.cargo/bin). Install Rust (https://rustup.rs), or set CARGO.
      """)
  end
end
