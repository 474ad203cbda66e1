Code.require_file("flame_k8s_native.exs", __DIR__)
Code.require_file("flame_k8s.precompile.exs", __DIR__)

defmodule Mix.Tasks.Compile.FlameK8sNative do
  @shortdoc "Installs the flame_k8s_native NIF in priv/native: precompiled, or built with cargo"
  @moduledoc """
  Installs the Rust NIF (`native/flame_k8s_native`) as `priv/native/libflame_k8s_native.so`,
  either a **precompiled** library downloaded from the project's releases and verified against
  the SHA-256 in `checksum-flame_k8s_native.sha256`, or one **built from source** with
  `cargo build --release`. Loaded by `mix.exs` (not compiled from `lib/`) because the project
  has no hex dependencies (no rustler hex package, no rustler_precompiled, no elixir_make): mix
  evaluates this file before it compiles anything, also when the project is a dependency.

  ## Which one

  1. `FLAME_K8S_BUILD=1` (or `config :flame_k8s_backend, build_from_source: true` in the app's
     config), or `FLAME_K8S_NIF_PROFILE=debug`: build from source.
  2. `FLAME_K8S_BUILD=0` (or `build_from_source: false`): precompiled only, never cargo.
  3. Otherwise, when this project is compiled as a dependency of an app (path, git or hex): the
     precompiled library when the checksum file lists one for this version and target, else
     from source when cargo is found, else an error naming the target.
  4. Otherwise (this repository's own checkout, compiled as the top-level project): from source.

  A checksum mismatch, a target the checksum file does not list, or a URL that cannot be
  downloaded fails the compilation with a message naming the target and how to build from
  source; an unverified file is never installed.

  A precompiled library is downloaded again only when the wanted artifact changes (another
  version, target or checksum); a source build happens when a Rust source, `Cargo.toml`,
  `Cargo.lock` or `build.rs` is newer than the installed library, when the cargo profile
  changes, or when the installed library was a precompiled one. Cargo's target directory is
  `$CARGO_TARGET_DIR` when set, else `_build/cargo` (shared by every Mix env).

  Environment (each variable wins over the config key next to it):

    * `FLAME_K8S_BUILD` - `1`: build from source; `0`: precompiled only (`:build_from_source`)
    * `FLAME_K8S_NIF_BASE_URL` - where the artifacts of this version are; `{version}` in it
      is replaced by the version (`:nif_base_url`; default
      `#{FLAMEK8sNative.default_base_url()}`)
    * `FLAME_K8S_NIF_TARGET` - the Rust target triple to download for, instead of the one
      derived from `:erlang.system_info(:system_architecture)`
    * `http_proxy`, `https_proxy`, `no_proxy` (either case), `SSL_CERT_FILE` - see
      `FLAMEK8sNative.HTTP`
    * `CARGO` - the cargo executable (default: `cargo` on `PATH`, then `~/.cargo/bin/cargo`)
    * `CARGO_TARGET_DIR` - where cargo builds
    * `FLAME_K8S_NIF_PROFILE` - `release` (default) or `debug` (source builds only)

  The config keys are read from the app's configuration (`config/config.exs`), which Mix loads
  before it compiles dependencies: a dependency's own config files are never read.

  Next to the library, `libflame_k8s_native.so.profile` records the cargo profile (`release`
  for a precompiled one) and `libflame_k8s_native.so.precompiled` the artifact and checksum of
  a precompiled install.
  """
  use Mix.Task.Compiler

  alias FLAMEK8sNative.HTTP

  @impl true
  def run(_args) do
    root = FLAMEK8sNative.root()
    installed = FLAMEK8sNative.installed_path(root)
    profile = System.get_env("FLAME_K8S_NIF_PROFILE", "release")
    config = Mix.Project.config()

    case plan(root, profile, config) do
      :source ->
        source(root, installed, profile, nil)

      {:precompiled, artifact, sha, target} ->
        precompiled(root, installed, artifact, sha, target, config[:version])

      {:no_artifact, target, listed, :precompiled} ->
        Mix.raise(
          no_artifact_message(
            root,
            config[:version],
            target,
            listed,
            "FLAME_K8S_BUILD=0 (or build_from_source: false) rules out building it with cargo"
          )
        )

      {:no_artifact, target, listed, :auto} ->
        why =
          "No precompiled NIF for #{target} in flame_k8s_backend #{config[:version]}: " <>
            "building it from source"

        source(root, installed, profile, {why, target, listed})
    end
  end

  @impl true
  def manifests, do: []

  @impl true
  def clean do
    File.rm_rf(Path.join(FLAMEK8sNative.root(), "priv/native"))
    :ok
  end

  ## Deciding

  @doc false
  def plan(root, profile, config) do
    mode = build_setting()

    cond do
      profile != "release" and mode == :precompiled ->
        Mix.raise(
          "FLAME_K8S_NIF_PROFILE=#{profile} needs a source build, but FLAME_K8S_BUILD=0 " <>
            "(or build_from_source: false) allows only a precompiled NIF"
        )

      profile != "release" or mode == :source ->
        :source

      mode == :auto and not dependency?(config) ->
        :source

      true ->
        target = FLAMEK8sNative.target()
        nif = FLAMEK8sNative.runtime_nif_version()

        checksums =
          case FLAMEK8sNative.read_checksums(FLAMEK8sNative.checksum_path(root)) do
            {:ok, checksums} ->
              checksums

            {:error, :enoent} ->
              %{}

            {:error, reason} ->
              Mix.raise("#{FLAMEK8sNative.checksum_path(root)} is unreadable: #{inspect(reason)}")
          end

        case FLAMEK8sNative.select_artifact(checksums, config[:version], target, nif) do
          {:ok, artifact, sha} -> {:precompiled, artifact, sha, target}
          {:error, {:no_artifact, listed}} -> {:no_artifact, target, listed, mode}
        end
    end
  end

  defp build_setting do
    case System.get_env("FLAME_K8S_BUILD") do
      value when value in [nil, ""] ->
        case Application.get_env(:flame_k8s_backend, :build_from_source) do
          nil -> :auto
          true -> :source
          false -> :precompiled
          other -> Mix.raise("build_from_source must be true or false, got: #{inspect(other)}")
        end

      value when value in ["1", "true"] ->
        :source

      value when value in ["0", "false"] ->
        :precompiled

      other ->
        Mix.raise(
          "FLAME_K8S_BUILD must be 1 (build the NIF from source) or 0 (precompiled NIF " <>
            "only), got: #{inspect(other)}"
        )
    end
  end

  # Mix compiles a dependency inside Mix.Dep.in_dependency/3, which puts the app's
  # _build/<env>/lib/<dep> into the dependency's config: as :deps_app_path (Elixir 1.18), as
  # :app_path before. The top-level project never has either.
  defp dependency?(config), do: config[:deps_app_path] != nil or config[:app_path] != nil

  ## Precompiled

  defp precompiled(root, installed, artifact, sha, target, version) do
    marker = "#{sha}  #{artifact}"

    if File.exists?(installed) and File.read(precompiled_marker(installed)) == {:ok, marker} do
      {:noop, []}
    else
      base = FLAMEK8sNative.base_url(base_url_template(), version)
      url = "#{base}/#{artifact}"
      Mix.shell().info("Downloading precompiled NIF #{artifact} from #{HTTP.redact(url)}")

      lib =
        with {:ok, body} <- HTTP.get(url),
             :ok <- verify(body, sha, artifact, target, url, root),
             {:ok, lib} <- FLAMEK8sNative.unpack(body) do
          lib
        else
          {:error, message} -> Mix.raise(download_failed_message(target, message))
        end

      FLAMEK8sNative.install_bytes!(lib, installed)
      File.write!(profile_marker(installed), "release")
      File.write!(precompiled_marker(installed), marker)
      install_into_build(lib)

      Mix.shell().info(
        "Installed #{Path.relative_to(installed, root)} (#{target}, sha256 #{sha} verified)"
      )

      {:ok, []}
    end
  end

  defp verify(body, sha, artifact, target, url, root) do
    case FLAMEK8sNative.sha256(body) do
      ^sha ->
        :ok

      actual ->
        Mix.raise("""
        checksum mismatch for the precompiled NIF #{artifact} (target #{target}) downloaded \
        from #{HTTP.redact(url)}: expected sha256 #{sha} (from #{FLAMEK8sNative.checksum_path(root)}), \
        got #{actual}. Nothing was installed: that file is not the one this version of \
        flame_k8s_backend was released with. #{build_from_source_hint()}\
        """)
    end
  end

  defp base_url_template do
    case System.get_env("FLAME_K8S_NIF_BASE_URL") do
      url when url not in [nil, ""] ->
        url

      _ ->
        Application.get_env(:flame_k8s_backend, :nif_base_url) ||
          FLAMEK8sNative.default_base_url()
    end
  end

  defp download_failed_message(target, message) do
    """
    could not install the precompiled NIF for target #{target}: #{message}. Nothing was \
    installed. The URL comes from FLAME_K8S_NIF_BASE_URL, else `config :flame_k8s_backend, \
    nif_base_url: ...`, else #{FLAMEK8sNative.default_base_url()}; proxies from \
    https_proxy/http_proxy/no_proxy. #{build_from_source_hint()}\
    """
  end

  defp no_artifact_message(root, version, target, listed, why_not_cargo) do
    listed = if listed == [], do: "none", else: listed |> Enum.sort() |> Enum.join(", ")

    """
    flame_k8s_backend #{version} has no precompiled NIF for target #{target} (NIF version \
    #{FLAMEK8sNative.runtime_nif_version()}); #{Path.basename(FLAMEK8sNative.checksum_path(root))} \
    lists for this version: #{listed}. #{why_not_cargo}. #{build_from_source_hint()} \
    (FLAME_K8S_NIF_TARGET overrides the detected target.)\
    """
  end

  defp build_from_source_hint do
    "To build it from source instead, install Rust (https://rustup.rs; cargo on PATH, $CARGO " <>
      "or ~/.cargo/bin) and set FLAME_K8S_BUILD=1."
  end

  ## From source

  defp source(root, installed, profile, no_artifact) do
    if stale?(root, installed) or installed_profile(installed) != profile or
         File.exists?(precompiled_marker(installed)) do
      cargo =
        case {FLAMEK8sNative.cargo(), no_artifact} do
          {nil, nil} ->
            Mix.raise("""
            flame_k8s_backend needs a Rust toolchain to build its NIF, but cargo was not found \
            (looked at $CARGO, PATH and ~/.cargo/bin). Install Rust (https://rustup.rs), or set \
            CARGO.
            """)

          {nil, {_why, target, listed}} ->
            version = Mix.Project.config()[:version]

            Mix.raise(
              no_artifact_message(root, version, target, listed, "And cargo was not found either")
            )

          {cargo, nil} ->
            cargo

          {cargo, {why, _target, _listed}} ->
            Mix.shell().info(why)
            cargo
        end

      target_dir = System.get_env("CARGO_TARGET_DIR") || default_target_dir()
      built = FLAMEK8sNative.cargo_build!(root, cargo, target_dir, profile)
      lib = File.read!(built)
      FLAMEK8sNative.install_bytes!(lib, installed)
      File.write!(profile_marker(installed), profile)
      File.rm(precompiled_marker(installed))
      install_into_build(lib)
      {:ok, []}
    else
      {:noop, []}
    end
  end

  # Which cargo profile built the installed library: switching FLAME_K8S_NIF_PROFILE must
  # rebuild even when no source changed.
  defp profile_marker(installed), do: installed <> ".profile"

  # Present only when the installed library is a precompiled one: "<sha256>  <artifact>".
  defp precompiled_marker(installed), do: installed <> ".precompiled"

  defp installed_profile(installed) do
    case File.read(profile_marker(installed)) do
      {:ok, profile} -> String.trim(profile)
      {:error, _} -> "release"
    end
  end

  defp stale?(root, installed) do
    crate = FLAMEK8sNative.crate()

    # fuzz/ is its own crate (cargo fuzz), not part of the NIF.
    sources =
      Path.wildcard(Path.join(root, "native/#{crate}/**/*.{rs,toml}"))
      |> Enum.reject(&String.contains?(&1, "/native/#{crate}/fuzz/"))
      |> Kernel.++(
        Enum.filter(
          [Path.join(root, "Cargo.toml"), Path.join(root, "Cargo.lock")],
          &File.exists?/1
        )
      )

    case File.stat(installed, time: :posix) do
      {:ok, %{mtime: built}} ->
        Enum.any?(sources, fn source -> File.stat!(source, time: :posix).mtime > built end)

      {:error, _} ->
        true
    end
  end

  # _build/<env>/lib/flame_k8s_backend/priv is a symlink to priv/ in a normal build, but a copy
  # made before this compiler ran with build_embedded: true.
  defp install_into_build(lib) do
    app_priv = Path.join(Mix.Project.app_path(), "priv")

    case File.read_link(app_priv) do
      {:ok, _symlink} ->
        :ok

      {:error, _} ->
        FLAMEK8sNative.install_bytes!(
          lib,
          Path.join([app_priv, "native", "libflame_k8s_native.so"])
        )
    end
  end

  defp default_target_dir do
    Path.join(Path.dirname(Mix.Project.build_path()), "cargo")
  end
end
