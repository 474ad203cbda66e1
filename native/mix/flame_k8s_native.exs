defmodule FLAMEK8sNative do
  @moduledoc """
  Building, packaging and fetching the flame_k8s_native NIF. Used by the NIF's Mix compiler
  (`compile.flame_k8s_native.exs`) and `mix flame_k8s.precompile`; loaded through `mix.exs`
  like them (the project has no hex dependencies, so nothing here may need one).

  A precompiled NIF is a gzipped tar holding one file, `libflame_k8s_native.so`, named

      libflame_k8s_native-v<version>-nif-<NIF version>-<target>.so.tar.gz

  and trusted only when its SHA-256 is listed in the checksum file committed with the package
  (`checksum-flame_k8s_native.sha256`, `sha256sum` format: `<hex>  <artifact name>` a line).
  """

  @crate "flame_k8s_native"
  @lib "lib#{@crate}.so"
  @lib_charlist String.to_charlist(@lib)
  @checksum_file "checksum-#{@crate}.sha256"
  @default_base_url "https://github.com/flame-k8s/flame_k8s_backend/releases/download/v{version}"

  def crate, do: @crate

  @doc "The project's root directory (this file sits in native/mix/)."
  def root, do: Path.expand("../..", __DIR__)

  def installed_path(root), do: Path.join([root, "priv", "native", @lib])

  def checksum_path(root), do: Path.join(root, @checksum_file)

  def default_base_url, do: @default_base_url

  @doc "The directory URL the artifacts of `version` are downloaded from; `{version}` is replaced."
  def base_url(template, version),
    do: template |> String.replace("{version}", version) |> String.trim_trailing("/")

  def artifact_name(version, nif_version, target),
    do: "lib#{@crate}-v#{version}-nif-#{nif_version}-#{target}.so.tar.gz"

  @doc "Splits an artifact name into `{version, nif_version, target}`; `:error` if it is not one."
  def parse_artifact_name(name) do
    case Regex.run(~r/\Alib#{@crate}-v(.+)-nif-(\d+\.\d+)-(.+)\.so\.tar\.gz\z/, name) do
      [_, version, nif_version, target] -> {:ok, {version, nif_version, target}}
      nil -> :error
    end
  end

  ## Targets

  @doc """
  The Rust target triple of the running VM: `FLAME_K8S_NIF_TARGET` when set (from `env`), else
  derived from `:erlang.system_info(:system_architecture)`.
  """
  def target(env \\ System.get_env()) do
    case env["FLAME_K8S_NIF_TARGET"] do
      target when target not in [nil, ""] ->
        target

      _ ->
        arch = to_string(:erlang.system_info(:system_architecture))
        target_from_arch(arch, :os.type(), &musl_libc?/0)
    end
  end

  @doc """
  Maps an Erlang system architecture (`x86_64-pc-linux-gnu`, `aarch64-alpine-linux-musl`,
  `aarch64-apple-darwin23.4.0`, ...) to a Rust target triple. On Linux the C library is the
  architecture string's ABI part when it names one (`gnu*`, `musl*`), else `musl_libc?` decides.
  """
  def target_from_arch(arch, os_type, musl_libc? \\ fn -> false end) do
    [cpu | rest] = String.split(arch, "-")
    cpu = normalize_cpu(cpu)

    case os_type do
      {:unix, :darwin} ->
        "#{cpu}-apple-darwin"

      {:unix, :linux} ->
        abi =
          Enum.find(rest, &String.starts_with?(&1, ["musl", "gnu"])) ||
            if(musl_libc?.(), do: "musl", else: "gnu")

        "#{cpu}-unknown-linux-#{abi}"

      {:win32, _} ->
        "#{cpu}-pc-windows-msvc"

      {_, os} ->
        "#{cpu}-unknown-#{os}"
    end
  end

  defp normalize_cpu("amd64"), do: "x86_64"
  defp normalize_cpu("arm64"), do: "aarch64"
  defp normalize_cpu("riscv64"), do: "riscv64gc"
  defp normalize_cpu(cpu), do: cpu

  # Only asked when the architecture string names no ABI: musl's dynamic loader and no glibc one.
  defp musl_libc? do
    Path.wildcard("/lib/ld-musl-*.so.1") != [] and Path.wildcard("/lib*/ld-linux*.so.*") == []
  end

  ## NIF versions

  def runtime_nif_version, do: to_string(:erlang.system_info(:nif_version))

  @doc """
  The NIF version the crate is built for: its rustler `nif_version_X_Y` feature (the library then
  loads on that NIF version and every later one of the same major), else the running VM's.
  """
  def crate_nif_version(root) do
    manifest = Path.join([root, "native", @crate, "Cargo.toml"])

    with {:ok, text} <- File.read(manifest),
         [_ | _] = versions <- Regex.scan(~r/"nif_version_(\d+)_(\d+)"/, text) do
      versions
      |> Enum.map(fn [_, major, minor] ->
        {String.to_integer(major), String.to_integer(minor)}
      end)
      |> Enum.max()
      |> then(fn {major, minor} -> "#{major}.#{minor}" end)
    else
      _ -> runtime_nif_version()
    end
  end

  defp parse_nif_version(version) do
    [major, minor] = String.split(version, ".")
    {String.to_integer(major), String.to_integer(minor)}
  end

  ## Checksum file

  @doc "Reads a checksum file into `%{artifact name => sha256 hex}`."
  def read_checksums(path) do
    with {:ok, text} <- File.read(path) do
      text
      |> String.split("\n", trim: true)
      |> Enum.reduce_while({:ok, %{}}, fn line, {:ok, acc} ->
        case Regex.run(~r/\A([0-9a-fA-F]{64}) [ *](\S+)\s*\z/, line) do
          [_, sha, name] -> {:cont, {:ok, Map.put(acc, name, String.downcase(sha))}}
          nil -> {:halt, {:error, {:malformed, line}}}
        end
      end)
    end
  end

  def format_checksums(checksums) do
    checksums
    |> Enum.sort()
    |> Enum.map_join(fn {name, sha} -> "#{sha}  #{name}\n" end)
  end

  @doc """
  The artifact to install for `version` on `target`: among those the checksum file lists, the one
  with the highest NIF version the VM can load (same major, minor not above the VM's).
  """
  def select_artifact(checksums, version, target, runtime_nif) do
    {major, minor} = parse_nif_version(runtime_nif)

    listed =
      for {name, sha} <- checksums,
          {:ok, {^version, nif, artifact_target}} <- [parse_artifact_name(name)],
          do: {name, sha, nif, artifact_target}

    loadable =
      for {name, sha, nif, ^target} <- listed,
          {^major, nif_minor} <- [parse_nif_version(nif)],
          nif_minor <= minor,
          do: {nif_minor, name, sha}

    case Enum.max(loadable, fn -> nil end) do
      {_, name, sha} -> {:ok, name, sha}
      nil -> {:error, {:no_artifact, listed |> Enum.map(&"#{elem(&1, 3)} (NIF #{elem(&1, 2)})")}}
    end
  end

  def sha256(bytes) do
    ensure_otp_app(:crypto)
    :crypto.hash(:sha256, bytes) |> Base.encode16(case: :lower)
  end

  @doc """
  Puts an OTP application on the code path of the Mix VM: Mix prunes the paths of applications a
  project does not list, and Mix tasks get one back with `Mix.ensure_application!/1`.
  """
  def ensure_otp_app(app) do
    Mix.ensure_application!(app)
    :ok
  end

  ## Packing

  @doc """
  Writes the gzipped tar of one `libflame_k8s_native.so` holding the library at `lib_path`.
  Reproducible: the same library always gives the same bytes (fixed time, owner and mode).
  """
  def pack!(lib_path, out_path) do
    File.mkdir_p!(Path.dirname(out_path))
    bytes = File.read!(lib_path)
    tmp = "#{out_path}.#{System.unique_integer([:positive])}.tmp"

    result =
      with {:ok, tar} <- :erl_tar.open(String.to_charlist(tmp), [:write, :compressed]) do
        added = :erl_tar.add(tar, bytes, @lib_charlist, [{:mtime, 0}, {:uid, 0}, {:gid, 0}])

        :ok = :erl_tar.close(tar)
        added
      end

    case result do
      :ok ->
        File.rename!(tmp, out_path)
        out_path

      {:error, reason} ->
        File.rm(tmp)
        Mix.raise("could not write #{out_path}: #{inspect(reason)}")
    end
  end

  @doc "The library inside an artifact's bytes (already verified)."
  def unpack(tar_gz) do
    case :erl_tar.extract({:binary, tar_gz}, [:memory, :compressed]) do
      {:ok, [{@lib_charlist, bytes}]} ->
        {:ok, bytes}

      {:ok, entries} ->
        {:error, "expected only #{@lib} in it, found #{inspect(Enum.map(entries, &elem(&1, 0)))}"}

      {:error, reason} ->
        {:error, "not a gzipped tar: #{inspect(reason)}"}
    end
  end

  ## Installing

  @doc """
  Writes `bytes` to a temporary name next to `dest`, then renames it: a VM that has the old
  library loaded keeps its mapping of the old inode instead of seeing a half-written file, and
  two installs at once (two Mix envs) never write the same temporary file.
  """
  def install_bytes!(bytes, dest) do
    File.mkdir_p!(Path.dirname(dest))
    tmp = "#{dest}.#{System.pid()}-#{System.unique_integer([:positive])}.tmp"
    File.write!(tmp, bytes)
    File.chmod!(tmp, 0o755)
    File.rename!(tmp, dest)
  end

  ## Cargo

  @doc "The cargo executable: `$CARGO`, `cargo` on `PATH`, `~/.cargo/bin/cargo`; nil if none."
  def cargo do
    candidates = [
      System.get_env("CARGO"),
      System.find_executable("cargo"),
      Path.expand("~/.cargo/bin/cargo")
    ]

    Enum.find(candidates, &(&1 && File.exists?(&1)))
  end

  def shared_lib_ext(target \\ nil) do
    cond do
      target && String.contains?(target, "-apple-darwin") -> ".dylib"
      target -> ".so"
      :os.type() == {:unix, :darwin} -> ".dylib"
      true -> ".so"
    end
  end

  @doc """
  Runs `cargo build -p flame_k8s_native` (`--release` for the release profile, `--target` when
  given) in `target_dir` and returns the path of the built library; raises with cargo's status.
  """
  def cargo_build!(root, cargo, target_dir, profile, target \\ nil) do
    profile_args = if profile == "release", do: ["--release"], else: []
    target_args = if target, do: ["--target", target], else: []

    args =
      ["build", "--manifest-path", Path.join(root, "Cargo.toml"), "-p", @crate] ++
        profile_args ++ target_args

    Mix.shell().info("Compiling NIF #{@crate} (cargo #{Enum.join(args, " ")})")

    {_, status} =
      System.cmd(cargo, args,
        cd: root,
        env: [{"CARGO_TARGET_DIR", target_dir}],
        into: IO.stream(:stdio, :line),
        stderr_to_stdout: true
      )

    built =
      Path.join([target_dir, target || "", profile, "lib#{@crate}#{shared_lib_ext(target)}"])

    cond do
      status != 0 ->
        Mix.raise("cargo failed to build #{@crate} (exit status #{status}); see its output above")

      not File.exists?(built) ->
        Mix.raise("cargo succeeded but #{built} does not exist")

      true ->
        built
    end
  end
end

defmodule FLAMEK8sNative.HTTP do
  @moduledoc """
  GET over OTP's `:httpc`, for downloading precompiled NIFs: TLS peer and hostname verification
  against the OS trust store, the `http_proxy`/`https_proxy`/`no_proxy` environment variables
  (either case), and up to 5 redirects (GitHub's release downloads redirect to a CDN host), each
  hop choosing its proxy anew.

  Trusted CA certificates: the file `SSL_CERT_FILE` names when set, else
  `:public_key.cacerts_get/0` (OTP 25+), else the first system bundle found among
  #{Enum.map_join(["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"], ", ", &"`#{&1}`")}.
  """

  @ca_bundles [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/usr/local/etc/openssl/cert.pem",
    "/opt/homebrew/etc/openssl@3/cert.pem"
  ]
  @max_redirects 5

  @doc """
  Downloads `url`. Returns `{:ok, body}` or `{:error, message}` (the message never contains
  the userinfo of a URL). `env` is the environment to read proxy and certificate settings from.
  """
  def get(url, env \\ System.get_env(), opts \\ []) do
    with :ok <- start_apps() do
      get(url, env, opts, @max_redirects)
    end
  end

  defp get(url, env, opts, redirects_left) do
    uri = URI.parse(url)

    with :ok <- check_scheme(uri),
         {:ok, ssl} <- ssl_options(uri, env, opts),
         {:ok, proxy_opts, proxy_auth} <- proxy(uri, env),
         {:ok, profile} <- start_httpc(proxy_opts) do
      http_opts =
        [ssl: ssl, autoredirect: false, connect_timeout: 15_000, timeout: 300_000] ++ proxy_auth

      request = {String.to_charlist(url), [{~c"user-agent", ~c"flame_k8s_backend"}]}

      try do
        case :httpc.request(:get, request, http_opts, [body_format: :binary], profile) do
          {:ok, {{_, status, _}, _headers, body}} when status in 200..299 ->
            {:ok, body}

          {:ok, {{_, status, _}, headers, _body}} when status in [301, 302, 303, 307, 308] ->
            redirect(uri, status, headers, env, opts, redirects_left)

          {:ok, {{_, status, reason}, _headers, _body}} ->
            {:error, "HTTP #{status} #{reason} from #{redact(uri)}"}

          {:error, reason} ->
            {:error, "could not reach #{redact(uri)}#{via(proxy_opts)}: #{describe(reason)}"}
        end
      after
        :inets.stop(:httpc, profile)
      end
    end
  end

  defp redirect(uri, status, headers, env, opts, redirects_left) do
    case List.keyfind(headers, ~c"location", 0) do
      _ when redirects_left == 0 ->
        {:error, "too many redirects (last from #{redact(uri)})"}

      {_, location} ->
        next = uri |> URI.merge(to_string(location)) |> URI.to_string()
        get(next, env, opts, redirects_left - 1)

      nil ->
        {:error, "HTTP #{status} without a location from #{redact(uri)}"}
    end
  end

  defp check_scheme(%URI{scheme: scheme, host: host})
       when scheme in ["http", "https"] and host not in [nil, ""],
       do: :ok

  defp check_scheme(uri), do: {:error, "not an http(s) URL: #{redact(uri)}"}

  defp start_apps do
    Enum.reduce_while([:crypto, :public_key, :inets, :ssl], :ok, fn app, :ok ->
      FLAMEK8sNative.ensure_otp_app(app)

      case Application.ensure_all_started(app) do
        {:ok, _} ->
          {:cont, :ok}

        {:error, reason} ->
          {:halt,
           {:error,
            "OTP's #{app} application cannot start (#{inspect(reason)}); on Debian/Ubuntu, " <>
              "install erlang-inets and erlang-ssl"}}
      end
    end)
  end

  # An httpc profile of its own per request: its proxy settings are this request's alone, and
  # nothing of the default profile (which the app or other Mix tasks may use) changes.
  defp start_httpc(proxy_opts) do
    profile = :"flame_k8s_native_download_#{System.unique_integer([:positive])}"

    case :inets.start(:httpc, profile: profile) do
      {:ok, _pid} ->
        :ok = :httpc.set_options(proxy_opts, profile)
        {:ok, profile}

      {:error, reason} ->
        {:error, "could not start :httpc: #{inspect(reason)}"}
    end
  end

  ## TLS

  defp ssl_options(%URI{scheme: "http"}, _env, _opts), do: {:ok, []}

  defp ssl_options(%URI{scheme: "https"}, env, opts) do
    with {:ok, cacerts} <- cacerts(env, opts) do
      {:ok,
       [
         verify: :verify_peer,
         depth: 10,
         customize_hostname_check: [
           match_fun: :public_key.pkix_verify_hostname_match_fun(:https)
         ]
       ] ++ cacerts}
    end
  end

  defp cacerts(env, opts) do
    cond do
      opts[:cacerts] ->
        {:ok, [cacerts: opts[:cacerts]]}

      env["SSL_CERT_FILE"] not in [nil, ""] ->
        file = env["SSL_CERT_FILE"]

        if File.regular?(file),
          do: {:ok, [cacertfile: String.to_charlist(file)]},
          else: {:error, "SSL_CERT_FILE names #{file}, which is not a file"}

      (certs = os_cacerts()) != [] ->
        {:ok, [cacerts: certs]}

      bundle = Enum.find(@ca_bundles, &File.regular?/1) ->
        {:ok, [cacertfile: String.to_charlist(bundle)]}

      true ->
        {:error,
         "no trusted CA certificates to verify the server with: " <>
           ":public_key.cacerts_get/0 found none (it needs OTP 25+ and the OS trust store) " <>
           "and none of #{Enum.join(@ca_bundles, ", ")} exists; install the ca-certificates " <>
           "package or set SSL_CERT_FILE to a PEM bundle"}
    end
  end

  defp os_cacerts do
    if Code.ensure_loaded?(:public_key) and function_exported?(:public_key, :cacerts_get, 0) do
      try do
        :public_key.cacerts_get()
      rescue
        _ -> []
      catch
        _, _ -> []
      end
    else
      []
    end
  end

  ## Proxies

  # [proxy: ...] / [https_proxy: ...] for httpc, and [proxy_auth: {user, password}] when the
  # proxy URL has userinfo.
  defp proxy(%URI{scheme: scheme, host: host}, env) do
    var = if scheme == "https", do: "https_proxy", else: "http_proxy"
    value = first_env(env, [var, String.upcase(var)])

    cond do
      value in [nil, ""] or no_proxy?(host, first_env(env, ["no_proxy", "NO_PROXY"])) ->
        {:ok, [], []}

      true ->
        proxy_uri = URI.parse(if value =~ "://", do: value, else: "http://" <> value)

        if proxy_uri.host in [nil, ""] do
          {:error, "#{var} is not a proxy URL: #{inspect(redact(proxy_uri))}"}
        else
          option = if scheme == "https", do: :https_proxy, else: :proxy
          setting = {{String.to_charlist(proxy_uri.host), proxy_uri.port || 80}, []}
          {:ok, [{option, setting}], proxy_auth(proxy_uri)}
        end
    end
  end

  defp via([{_option, {{host, port}, _}}]), do: " through the proxy #{host}:#{port}"
  defp via(_no_proxy), do: ""

  defp proxy_auth(%URI{userinfo: nil}), do: []

  defp proxy_auth(%URI{userinfo: userinfo}) do
    [user | password] = String.split(userinfo, ":", parts: 2)

    [
      proxy_auth:
        {String.to_charlist(URI.decode(user)),
         String.to_charlist(URI.decode(Enum.join(password)))}
    ]
  end

  defp first_env(env, names), do: Enum.find_value(names, &(env[&1] not in [nil, ""] && env[&1]))

  @doc """
  Whether `host` bypasses the proxy by `no_proxy` (comma-separated): `*` matches every host; an
  entry matches the host itself and its subdomains (a leading `.` or `*.` is ignored); a `:port`
  suffix on an entry is ignored.
  """
  def no_proxy?(_host, nil), do: false

  def no_proxy?(host, no_proxy) do
    host = host |> String.downcase() |> String.trim_leading("[") |> String.trim_trailing("]")

    no_proxy
    |> String.split(",", trim: true)
    |> Enum.map(&(&1 |> String.trim() |> String.downcase()))
    |> Enum.any?(fn
      "*" ->
        true

      "" ->
        false

      entry ->
        entry =
          entry
          |> String.replace(~r/\A\*?\./, "")
          |> String.replace(~r/:\d+\z/, "")
          |> String.trim_leading("[")
          |> String.trim_trailing("]")

        host == entry or String.ends_with?(host, "." <> entry)
    end)
  end

  ## Messages

  def redact(%URI{} = uri), do: URI.to_string(%URI{uri | userinfo: nil})
  def redact(url) when is_binary(url), do: redact(URI.parse(url))

  defp describe({:failed_connect, details}) do
    case for({:inet, _, reason} <- details, do: reason) do
      [reason | _] -> describe_reason(reason)
      [] -> inspect(details)
    end
  end

  defp describe(reason), do: describe_reason(reason)

  defp describe_reason(:econnrefused), do: "connection refused"
  defp describe_reason(:nxdomain), do: "host not found (DNS)"
  defp describe_reason(:timeout), do: "timed out"
  defp describe_reason(:ehostunreach), do: "host unreachable"
  defp describe_reason(:enetunreach), do: "network unreachable"

  defp describe_reason({:tls_alert, {alert, text}}),
    do: "TLS verification failed (#{alert}): #{text}"

  defp describe_reason(reason), do: inspect(reason)
end
