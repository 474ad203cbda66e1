defmodule FLAME.CodeSync.PackagedStream do
  @moduledoc false
  # What crosses to the runner: `stream` is a File.Stream of the parent's archive (read from
  # the parent's node when the runner enumerates it), or nil when no file changed.
  defstruct stream: nil,
            id: nil,
            extract_dir: nil,
            tmp_dir: nil,
            apps_to_start: [],
            changed_paths: [],
            sync_beam_hashes: %{},
            deleted_paths: [],
            purge_modules: [],
            verbose: false,
            compress: false,
            chunk_size: 64_000
end

defmodule FLAME.CodeSync do
  @moduledoc """
  `FLAME.Pool`'s `:code_sync`, as FLAME 0.5.3 does it:

    * `:start_apps` (default `true`: the parent's started applications), `false` or a list:
      the applications the runner starts once the code is there.
    * `:copy_apps` (default: the value of `:start_apps`; a list there, without `copy_apps`,
      raises `CaseClauseError` when the pool starts): the
      files of every application directory in the code path outside OTP's lib directory and
      FLAME's, Elixir's, EEx's, ExUnit's, IEx's, Logger's and Mix's (`priv` included).
    * `:copy_paths` (default `false`): files, or directories whose files are all copied.
    * `:sync_beams` (default `[]`): directories whose `.beam` files are sent when a runner
      boots and again, those that changed, at every checkout.
    * `:tmp_dir` and `:extract_dir` (`{module, function, args}`, defaults
      `{System, :tmp_dir!, []}` and `"/"`), `:get_path`, `:verbose`, `:compress` (default
      `true`), `:chunk_size`.

  The pool packages `:copy_apps` and `:copy_paths` once, when it starts. **When those select no
  file, there is no archive, and the pool's start raises** (`KeyError` for `:path` in `nil`):
  `:sync_beams` alone is not enough (FLAME 0.5.3 has the pool's cleaner watch the archive's
  path unconditionally). Each runner's boot packages `:sync_beams` anew; a package with no
  changed file carries no archive and extracts nothing (its applications are still started).

  The archive (a tar, gzipped unless `compress: false`) is written under the parent's
  `:tmp_dir`; the runner streams it from the parent into its own `:tmp_dir`, extracts it under
  `:extract_dir` (evaluated there; a failed extraction raises) and puts the extracted
  directories first in its code path. The extraction directory is then watched by the
  terminator.
  """
  require Logger

  alias FLAME.CodeSync.PackagedStream

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

  @not_copied [:flame, :eex, :elixir, :ex_unit, :iex, :logger, :mix]

  defstruct id: nil,
            get_path: nil,
            sync_beam_hashes: %{},
            copy_apps: nil,
            copy_paths: nil,
            sync_beams: nil,
            extract_dir: nil,
            tmp_dir: nil,
            start_apps: true,
            apps_to_start: [],
            changed_paths: [],
            deleted_paths: [],
            purge_modules: [],
            verbose: false,
            compress: false,
            chunk_size: 64_000

  @doc false
  def validate!(opts), do: Keyword.validate!(opts, @keys)

  def new(opts \\ []) do
    opts = validate!(opts)
    start_apps = Keyword.get(opts, :start_apps, true)

    with_apps_to_start(%__MODULE__{
      id: System.unique_integer([:positive]),
      get_path: Keyword.get(opts, :get_path, &:code.get_path/0),
      start_apps: start_apps,
      copy_apps: Keyword.get(opts, :copy_apps, start_apps),
      copy_paths: Keyword.get(opts, :copy_paths, false),
      sync_beams: Keyword.get(opts, :sync_beams, []),
      tmp_dir: Keyword.get(opts, :tmp_dir, {System, :tmp_dir!, []}),
      extract_dir: Keyword.get(opts, :extract_dir, {Function, :identity, ["/"]}),
      verbose: Keyword.get(opts, :verbose, false),
      compress: Keyword.get(opts, :compress, true),
      chunk_size: Keyword.get(opts, :chunk_size, 64_000)
    })
  end

  defp with_apps_to_start(code) do
    apps =
      case code.start_apps do
        true -> for {app, _description, _vsn} <- Application.started_applications(), do: app
        false -> []
        apps when is_list(apps) -> apps
      end

    %{code | apps_to_start: apps}
  end

  @doc "Adds the `:sync_beams` files (and their hashes) to the changed paths."
  def compute_sync_beams(code) do
    files = beam_files(code.sync_beams)
    hashes = Map.new(files, &{&1, :erlang.md5(File.read!(&1))})
    %{code | sync_beam_hashes: hashes, changed_paths: Enum.uniq(code.changed_paths ++ files)}
  end

  @doc "Adds the `:copy_apps` and `:copy_paths` files to the changed paths."
  def compute_changed_paths(code) do
    # Only a boolean: `start_apps: [...]` without `:copy_apps` raises, as in FLAME 0.5.3.
    apps =
      case code.copy_apps do
        true -> app_files(code.get_path)
        false -> []
      end

    paths =
      case code.copy_paths do
        false -> apps
        true -> app_files(code.get_path)
        paths when is_list(paths) -> Enum.uniq(copied_files(paths) ++ apps)
      end

    %{code | changed_paths: Enum.uniq(code.changed_paths ++ paths)}
  end

  def changed?(code),
    do: code.changed_paths != [] or code.deleted_paths != [] or code.purge_modules != []

  @doc "The `:sync_beams` files changed or deleted since `previous` (apps are not restarted)."
  def diff(previous) do
    current = previous |> with_apps_to_start() |> compute_sync_beams()
    old = previous.sync_beam_hashes

    changed = for {path, hash} <- current.sync_beam_hashes, hash != old[path], do: path
    deleted = for {path, _} <- old, not Map.has_key?(current.sync_beam_hashes, path), do: path

    %{
      current
      | changed_paths: changed,
        deleted_paths: deleted,
        purge_modules: Enum.map(deleted, &String.to_atom(Path.basename(&1, ".beam"))),
        apps_to_start: []
    }
  end

  def package_to_stream(code) do
    stream =
      if code.changed_paths != [] do
        if code.verbose, do: verbose("packaging #{inspect(code.changed_paths)}")
        archive = Path.join(eval(code.tmp_dir), "flame_parent_code_sync_#{code.id}.tar.gz")
        compressed = if code.compress, do: [:compressed], else: []
        {:ok, tar} = :erl_tar.open(String.to_charlist(archive), [:write | compressed])

        for path <- Enum.uniq(code.changed_paths) do
          name = String.trim_leading(path, "/")

          :ok =
            :erl_tar.add(tar, String.to_charlist(path), String.to_charlist(name), [:dereference])
        end

        :ok = :erl_tar.close(tar)
        File.stream!(archive, [], code.chunk_size)
      end

    %PackagedStream{
      stream: stream,
      id: code.id,
      tmp_dir: code.tmp_dir,
      extract_dir: code.extract_dir,
      apps_to_start: code.apps_to_start,
      changed_paths: code.changed_paths,
      sync_beam_hashes: code.sync_beam_hashes,
      deleted_paths: code.deleted_paths,
      purge_modules: code.purge_modules,
      verbose: code.verbose,
      compress: code.compress,
      chunk_size: code.chunk_size
    }
  end

  @doc "On the runner: extracts `package`; returns the extraction directory, or `nil`."
  def extract_packaged_stream(%PackagedStream{} = package) do
    dir = if package.stream, do: extract(package)

    if package.apps_to_start != [] do
      {:ok, started} = Application.ensure_all_started(package.apps_to_start)
      if package.verbose, do: verbose("started #{inspect(started)}")
    end

    dir
  end

  defp extract(package) do
    dir = eval(package.extract_dir)
    local = Path.join(eval(package.tmp_dir), "flame_child_code_sync_#{package.id}.tar.gz")
    Enum.into(package.stream, File.stream!(local))
    compressed = if package.compress, do: [:compressed], else: []

    :ok =
      :erl_tar.extract(String.to_charlist(local), [{:cwd, String.to_charlist(dir)} | compressed])

    add_code_paths(package, dir)
    File.rm(local)

    for module <- package.purge_modules do
      :code.purge(module)
      :code.delete(module)
    end

    for path <- package.deleted_paths do
      File.rm(path)
      ebin = Path.dirname(path)

      if File.ls!(ebin) == [] do
        File.rm_rf(ebin)
        :code.del_path(String.to_charlist(ebin))
      end
    end

    dir
  end

  # Extracted directories go first in the code path: consolidated protocols (reloaded now),
  # then the :sync_beams directories (uncached), after the other ones.
  defp add_code_paths(package, dir) do
    {consolidated, beams, regular, reload} =
      package.changed_paths
      |> Enum.uniq()
      |> Enum.reduce({[], [], [], []}, fn path, {cons, beams, regular, reload} ->
        parent = Path.dirname(Path.join(dir, path))

        module =
          if Path.extname(path) == ".beam", do: Module.concat([Path.basename(path, ".beam")])

        if module, do: :code.purge(module) && :code.delete(module)

        cond do
          Path.basename(parent) == "consolidated" ->
            {[parent | cons], beams, regular, if(module, do: [module | reload], else: reload)}

          Map.has_key?(package.sync_beam_hashes, path) ->
            {cons, [parent | beams], regular, reload}

          true ->
            {cons, beams, [parent | regular], reload}
        end
      end)

    Code.prepend_paths(Enum.uniq(regular), cache: true)
    Code.prepend_paths(Enum.uniq(consolidated), cache: true)
    Code.prepend_paths(Enum.uniq(beams))
    Enum.each(reload, &:code.load_file/1)
  end

  def rm_packaged_stream(%PackagedStream{stream: nil}), do: :ok

  def rm_packaged_stream(%PackagedStream{stream: stream}) do
    File.rm(stream.path)
    :ok
  end

  defp beam_files(dirs),
    do: dirs |> Enum.flat_map(&Path.wildcard(Path.join(&1, "**/*.beam"))) |> Enum.uniq()

  defp app_files(get_path) do
    otp_lib = to_string(:code.lib_dir())

    skipped =
      for app <- @not_copied,
          lib = :code.lib_dir(app),
          is_list(lib),
          do: to_string(:filename.join(lib, ~c"ebin"))

    get_path.()
    |> Enum.map(&to_string/1)
    |> Kernel.--(["." | skipped])
    |> Enum.reject(&String.starts_with?(&1, otp_lib))
    |> Enum.map(fn path ->
      if Path.basename(path) == "ebin",
        do: Path.join(Path.dirname(path), "**/*"),
        else: Path.join(path, "*")
    end)
    |> Enum.uniq()
    |> Enum.flat_map(&Path.wildcard/1)
    |> Enum.uniq()
    |> Enum.filter(&File.regular?(&1, [:raw]))
  end

  defp copied_files(paths) do
    paths
    |> Enum.flat_map(fn path ->
      if File.regular?(path, [:raw]),
        do: [path],
        else: Path.wildcard(Path.join(path, "**"), match_dot: true)
    end)
    |> Enum.uniq()
    |> Enum.filter(&File.regular?(&1, [:raw]))
  end

  defp verbose(message), do: Logger.info("[CodeSync #{inspect(node())}] #{message}")

  defp eval({module, function, args}), do: apply(module, function, args)
end
