defmodule FLAME.CodeSync do
  @moduledoc """
  The stand-in's implementation of `FLAME.Pool`'s `:code_sync` option, with FLAME 0.5's
  options and defaults:

    * `:copy_paths` - files, or directories whose files are all copied (default `false`)
    * `:sync_beams` - directories whose `.beam` files are copied (default `[]`)
    * `:start_apps` - `true` (the parent's started applications), `false` or a list of
      applications to start on the runner (default `true`)
    * `:copy_apps` - copy the code of the parent's applications, those outside OTP and
      Elixir (default: as `:start_apps`)
    * `:get_path` - the code path to read them from (default `&:code.get_path/0`)
    * `:tmp_dir` - `{module, function, args}` naming a writable directory, evaluated on the
      parent (to pack) and on the runner (to unpack) (default `{System, :tmp_dir!, []}`)
    * `:extract_dir` - `{module, function, args}` evaluated on the runner: where the files
      go, under their absolute paths (default `"/"`)
    * `:compress`, `:verbose`, `:chunk_size` - accepted (`:compress` defaults to `true`)

  The parent packs the files into a tar (under their paths without the leading `/`), the
  runner writes it under its `:tmp_dir`, extracts it under `:extract_dir`, puts each extracted
  ebin directory first in its code path, reloads the modules there, and starts the apps. An
  extraction that fails (a read-only `"/"`) raises: the boot fails.
  """

  @keys [
    :get_path,
    :tmp_dir,
    :extract_dir,
    :copy_apps,
    :copy_paths,
    :sync_beams,
    :start_apps,
    :verbose,
    :compress,
    :chunk_size
  ]

  @doc "Validates the options like FLAME's pool (unknown keys raise)."
  def validate!(opts), do: Keyword.validate!(opts, @keys)

  @doc "Packs the files of `opts` on the parent."
  def package(opts) do
    opts = validate!(opts)
    start_apps = Keyword.get(opts, :start_apps, true)
    copy_apps = Keyword.get(opts, :copy_apps, start_apps != false)
    get_path = Keyword.get(opts, :get_path, &:code.get_path/0)
    tmp_dir = Keyword.get(opts, :tmp_dir, {System, :tmp_dir!, []})
    compress? = Keyword.get(opts, :compress, true)

    files =
      Enum.uniq(
        if(copy_apps, do: app_files(get_path), else: []) ++
          copy_path_files(Keyword.get(opts, :copy_paths, false)) ++
          beam_files(Keyword.get(opts, :sync_beams, []))
      )

    apps =
      case start_apps do
        true -> Enum.map(Application.started_applications(), &elem(&1, 0))
        false -> []
        apps when is_list(apps) -> apps
      end

    id = System.unique_integer([:positive])

    %{
      id: id,
      archive: if(files != [], do: archive(files, apply_mfa(tmp_dir), id, compress?)),
      compressed?: compress?,
      tmp_dir: tmp_dir,
      extract_dir: Keyword.get(opts, :extract_dir, {Function, :identity, ["/"]}),
      apps: apps
    }
  end

  @doc "Unpacks `package` on the runner; returns the extraction directory, or `nil`."
  def extract(%{archive: nil} = package) do
    start_apps(package.apps)
    nil
  end

  def extract(package) do
    dir = apply_mfa(package.extract_dir)
    tar = Path.join(apply_mfa(package.tmp_dir), "flame_child_code_sync_#{package.id}.tar")
    File.write!(tar, package.archive)
    compressed = if package.compressed?, do: [:compressed], else: []

    try do
      case :erl_tar.extract(
             String.to_charlist(tar),
             [{:cwd, String.to_charlist(dir)}] ++ compressed
           ) do
        :ok -> :ok
        {:error, reason} -> raise "code sync: cannot extract into #{dir}: #{inspect(reason)}"
      end

      {:ok, entries} = :erl_tar.table(String.to_charlist(tar), compressed)
      load(dir, Enum.map(entries, &to_string/1))
    after
      File.rm(tar)
    end

    start_apps(package.apps)
    dir
  end

  defp load(dir, entries) do
    beams = Enum.filter(entries, &String.ends_with?(&1, ".beam"))

    for ebin <- Enum.uniq(Enum.map(beams, &Path.dirname/1)) do
      true = :code.add_patha(String.to_charlist(Path.join(dir, ebin)))
    end

    for beam <- beams do
      module = String.to_atom(Path.basename(beam, ".beam"))
      _ = :code.purge(module)
      {:module, ^module} = :code.load_file(module)
    end
  end

  defp start_apps(apps), do: Enum.each(apps, &({:ok, _} = Application.ensure_all_started(&1)))

  defp archive(files, tmp_dir, id, compress?) do
    path = Path.join(tmp_dir, "flame_parent_code_sync_#{id}.tar")

    entries =
      Enum.map(files, &{String.to_charlist(String.trim_leading(&1, "/")), String.to_charlist(&1)})

    :ok =
      :erl_tar.create(
        String.to_charlist(path),
        entries,
        if(compress?, do: [:compressed], else: [])
      )

    try do
      File.read!(path)
    after
      File.rm(path)
    end
  end

  # Application code outside OTP and Elixir: each ebin's whole application directory (priv too).
  defp app_files(get_path) do
    otp = to_string(:code.root_dir())
    elixir = Path.dirname(to_string(:code.lib_dir(:elixir)))

    get_path.()
    |> Enum.map(&to_string/1)
    |> Enum.reject(
      &(&1 == "." or String.starts_with?(&1, otp) or String.starts_with?(&1, elixir))
    )
    |> Enum.flat_map(fn path ->
      if Path.basename(path) == "ebin",
        do: Path.wildcard(Path.join(Path.dirname(path), "**/*")),
        else: Path.wildcard(Path.join(path, "*"))
    end)
    |> Enum.filter(&File.regular?/1)
  end

  defp copy_path_files(false), do: []

  defp copy_path_files(paths) when is_list(paths) do
    Enum.flat_map(paths, fn path ->
      if File.regular?(path),
        do: [path],
        else: Enum.filter(Path.wildcard(Path.join(path, "**"), match_dot: true), &File.regular?/1)
    end)
  end

  defp beam_files(dirs), do: Enum.flat_map(dirs, &Path.wildcard(Path.join(&1, "**/*.beam")))

  defp apply_mfa({module, function, args}), do: apply(module, function, args)
end
