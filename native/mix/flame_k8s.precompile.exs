defmodule Mix.Tasks.FlameK8s.Precompile do
  @shortdoc "Builds the release NIF and writes its precompiled artifact and checksum"
  @moduledoc """
  Builds `native/flame_k8s_native` with `cargo build --release` and packages the library as the
  precompiled artifact the NIF's Mix compiler downloads:

      mix flame_k8s.precompile [--target TRIPLE] [--lib PATH] [--out-dir DIR]
                               [--checksum-file PATH | --no-checksum-file]

  Writes, in `--out-dir` (default `_build/precompiled`):

    * `libflame_k8s_native-v<version>-nif-<NIF version>-<target>.so.tar.gz`
    * the same name plus `.sha256` (one `sha256sum` line)

  and adds (or replaces) the artifact's line in the checksum file (default: the project's
  `checksum-flame_k8s_native.sha256`, which is committed and shipped with the package).

  Options:

    * `--target TRIPLE` - cross-compile for a Rust target (`cargo build --target`; the
      toolchain, linker and target must be set up, see the README); default: this machine's
    * `--lib PATH` - package this already built library instead of running cargo (for a
      library built by other tooling, such as `cross` or `cargo zigbuild`)
    * `--nif-version X.Y` - the NIF version in the name; default: the crate's rustler
      `nif_version_X_Y` feature (the library loads on that NIF version and later ones)

  Cargo's target directory is `$CARGO_TARGET_DIR` when set, else `_build/cargo`.
  """
  use Mix.Task

  @switches [
    target: :string,
    lib: :string,
    out_dir: :string,
    checksum_file: :string,
    nif_version: :string
  ]

  @impl true
  def run(args) do
    {opts, rest} = OptionParser.parse!(args, strict: [{:no_checksum_file, :boolean} | @switches])
    if rest != [], do: Mix.raise("unexpected arguments: #{Enum.join(rest, " ")}")

    root = FLAMEK8sNative.root()
    version = Mix.Project.config()[:version]
    target = opts[:target] || FLAMEK8sNative.target()
    nif_version = opts[:nif_version] || FLAMEK8sNative.crate_nif_version(root)
    out_dir = Path.expand(opts[:out_dir] || Path.join(root, "_build/precompiled"))

    lib =
      case opts[:lib] do
        nil ->
          cargo =
            FLAMEK8sNative.cargo() ||
              Mix.raise("cargo was not found (looked at $CARGO, PATH and ~/.cargo/bin)")

          target_dir = System.get_env("CARGO_TARGET_DIR") || Path.join(root, "_build/cargo")
          FLAMEK8sNative.cargo_build!(root, cargo, target_dir, "release", opts[:target])

        path ->
          if File.regular?(path), do: path, else: Mix.raise("--lib #{path}: no such file")
      end

    artifact = FLAMEK8sNative.artifact_name(version, nif_version, target)
    path = FLAMEK8sNative.pack!(lib, Path.join(out_dir, artifact))
    sha = path |> File.read!() |> FLAMEK8sNative.sha256()
    line = FLAMEK8sNative.format_checksums(%{artifact => sha})
    File.write!(path <> ".sha256", line)

    unless opts[:no_checksum_file] do
      checksum_file = Path.expand(opts[:checksum_file] || FLAMEK8sNative.checksum_path(root))

      checksums =
        case FLAMEK8sNative.read_checksums(checksum_file) do
          {:ok, checksums} -> checksums
          {:error, :enoent} -> %{}
          {:error, reason} -> Mix.raise("#{checksum_file}: #{inspect(reason)}")
        end

      File.write!(
        checksum_file,
        FLAMEK8sNative.format_checksums(Map.put(checksums, artifact, sha))
      )

      Mix.shell().info("Updated #{checksum_file}")
    end

    Mix.shell().info("""
    Wrote #{path}
      target      #{target} (NIF #{nif_version})
      size        #{File.stat!(path).size} bytes (library: #{File.stat!(lib).size} bytes)
      sha256      #{sha}\
    """)

    path
  end
end
