defmodule FLAMEK8sBackend.PrecompiledNifTest.ArtifactServer do
  # Kept in this .exs (not test/support) so the app's compile does not reference :ssl.
  @moduledoc """
  A minimal HTTP/1.1 server on 127.0.0.1 for the precompiled-NIF tests (no dependencies: hex is
  unreachable here). Routes are set per test; every request is recorded. Requests in absolute
  form (`GET http://host/path`) are routed by their path, so the server doubles as an HTTP
  proxy; with `tls:` server options it speaks HTTPS.

  Responses: `{:ok, body}`, `{:redirect, location}` (302), `{:status, code}`; unknown paths get
  404.
  """
  use GenServer

  defstruct [:pid, :port, :url]

  def start!(opts \\ []) do
    {:ok, pid} = GenServer.start(__MODULE__, opts)
    port = GenServer.call(pid, :port)
    scheme = if opts[:tls], do: "https", else: "http"
    %__MODULE__{pid: pid, port: port, url: "#{scheme}://127.0.0.1:#{port}"}
  end

  def stop(%__MODULE__{pid: pid}), do: GenServer.stop(pid)

  def put(%__MODULE__{pid: pid}, path, response), do: GenServer.call(pid, {:put, path, response})

  @doc "The requests so far, oldest first: `%{method: ..., target: ..., path: ..., headers: ...}`."
  def requests(%__MODULE__{pid: pid}), do: GenServer.call(pid, :requests)

  @impl true
  def init(opts) do
    base = [:binary, active: false, ip: {127, 0, 0, 1}, reuseaddr: true, packet: :http_bin]

    {transport, listen} =
      case opts[:tls] do
        nil ->
          {:ok, listen} = :gen_tcp.listen(0, base)
          {:gen_tcp, listen}

        tls ->
          {:ok, _} = Application.ensure_all_started(:ssl)
          {:ok, listen} = :ssl.listen(0, tls ++ base)
          {:ssl, listen}
      end

    server = self()
    spawn_link(fn -> accept_loop(transport, listen, server) end)
    {:ok, %{transport: transport, listen: listen, routes: %{}, requests: []}}
  end

  @impl true
  def handle_call(:port, _from, %{transport: :gen_tcp} = state),
    do: {:reply, elem(:inet.port(state.listen), 1), state}

  def handle_call(:port, _from, %{transport: :ssl} = state),
    do: {:reply, state.listen |> :ssl.sockname() |> elem(1) |> elem(1), state}

  def handle_call({:put, path, response}, _from, state),
    do: {:reply, :ok, put_in(state.routes[path], response)}

  def handle_call(:requests, _from, state), do: {:reply, Enum.reverse(state.requests), state}

  def handle_call({:request, request}, _from, state) do
    response = Map.get(state.routes, request.path, {:status, 404})
    {:reply, response, %{state | requests: [request | state.requests]}}
  end

  defp accept_loop(:gen_tcp, listen, server) do
    {:ok, socket} = :gen_tcp.accept(listen)
    pid = spawn(fn -> serve(:gen_tcp, socket, server) end)
    :ok = :gen_tcp.controlling_process(socket, pid)
    send(pid, :go)
    accept_loop(:gen_tcp, listen, server)
  end

  defp accept_loop(:ssl, listen, server) do
    {:ok, socket} = :ssl.transport_accept(listen)

    spawn(fn ->
      # A client that rejects the certificate ends the handshake; nothing to serve then.
      with {:ok, socket} <- :ssl.handshake(socket, 10_000), do: serve(:ssl, socket, server)
    end)

    accept_loop(:ssl, listen, server)
  end

  defp serve(transport, socket, server) do
    if transport == :gen_tcp, do: receive(do: (:go -> :ok))

    with {:ok, {:http_request, method, target, _version}} <- transport.recv(socket, 0, 10_000),
         {:ok, headers} <- read_headers(transport, socket, []) do
      {target, path} =
        case target do
          {:abs_path, path} -> {path, path}
          {:absoluteURI, scheme, host, port, path} -> {"#{scheme}://#{host}:#{port}#{path}", path}
        end

      request = %{method: method, target: target, path: path, headers: headers}
      response = GenServer.call(server, {:request, request})
      :ok = setopts(transport, socket, packet: :raw)
      transport.send(socket, encode(response))
    end

    transport.close(socket)
  end

  defp read_headers(transport, socket, acc) do
    case transport.recv(socket, 0, 10_000) do
      {:ok, {:http_header, _, name, _, value}} ->
        read_headers(transport, socket, [{String.downcase(to_string(name)), value} | acc])

      {:ok, :http_eoh} ->
        {:ok, Enum.reverse(acc)}

      other ->
        {:error, other}
    end
  end

  defp setopts(:gen_tcp, socket, opts), do: :inet.setopts(socket, opts)
  defp setopts(:ssl, socket, opts), do: :ssl.setopts(socket, opts)

  defp encode({:ok, body}), do: response(200, "OK", [], body)
  defp encode({:redirect, location}), do: response(302, "Found", [{"location", location}], "")
  defp encode({:status, 404}), do: response(404, "Not Found", [], "not found\n")
  defp encode({:status, code}), do: response(code, "Status", [], "")

  defp response(status, reason, headers, body) do
    headers = [{"content-length", byte_size(body)}, {"connection", "close"} | headers]
    head = Enum.map(headers, fn {name, value} -> "#{name}: #{value}\r\n" end)
    ["HTTP/1.1 #{status} #{reason}\r\n", head, "\r\n", body]
  end
end

defmodule FLAMEK8sBackend.PrecompiledNifTest do
  # Installing without a Rust toolchain: `mix flame_k8s.precompile` packages the release NIF and
  # records its SHA-256; an app that depends on the library compiles with no cargo anywhere by
  # downloading that artifact (here from a server on 127.0.0.1: nothing leaves this machine)
  # and verifying it. Tampered artifacts, targets without one and unreachable URLs fail clearly;
  # FLAME_K8S_BUILD=1 builds from source, and so does an app with cargo when the checksum file
  # lists nothing for its target (FLAME_K8S_BUILD=0 forbids that).
  #
  # The issue's figures (artifact size, download + verify time on loopback, a fresh app's
  # compile time with and without cargo) are printed, one "precompiled NIF: ..." line each,
  # with the machine's load and whether cargo's target directory was warm; never asserted.
  use ExUnit.Case, async: true

  alias FLAMEK8sBackend.PrecompiledNifTest.ArtifactServer

  @moduletag :integration
  @moduletag :tmp_dir
  @moduletag timeout: 900_000

  @root Path.expand("../..", __DIR__)
  @version Mix.Project.config()[:version]
  # This machine's: the precompile step builds for it (x86_64-unknown-linux-gnu in CI).
  @target FLAMEK8sNative.target(%{})

  # The package under test: a copy of the working tree (what a release of it would hold),
  # precompiled once. File times are kept, so the shared cargo cache stays fresh (cargo keys a
  # workspace member by its path inside the workspace, not by where the workspace is): the crate
  # is rebuilt only when its sources changed. A directory per run, so runs never share one.
  setup_all do
    base = Path.join(@root, "tmp/#{inspect(__MODULE__)}-package-#{System.pid()}")
    package = Path.join(base, "flame_k8s_backend")
    dist = Path.join(base, "dist")
    File.rm_rf!(base)
    on_exit(fn -> File.rm_rf!(base) end)
    copy_working_tree(@root, package)
    refute File.exists?(Path.join(package, "priv/native"))

    {{output, status}, ms} =
      timed(fn ->
        System.cmd("mix", ["flame_k8s.precompile", "--out-dir", dist],
          cd: package,
          env: [{"MIX_ENV", "prod"}, {"CARGO_TARGET_DIR", cargo_target_dir()}],
          stderr_to_stdout: true
        )
      end)

    if status != 0, do: raise("mix flame_k8s.precompile failed:\n#{output}")

    nif = FLAMEK8sNative.crate_nif_version(package)
    artifact = "libflame_k8s_native-v#{@version}-nif-#{nif}-#{@target}.so.tar.gz"
    bytes = File.read!(Path.join(dist, artifact))
    {:ok, lib} = FLAMEK8sNative.unpack(bytes)

    IO.puts(
      "precompiled NIF: mix flame_k8s.precompile #{seconds(ms)} (#{cargo_work(output)}; " <>
        "#{load()}); artifact #{@target}: #{mib(byte_size(bytes))} " <>
        "(#{byte_size(bytes)} bytes; the library inside: #{mib(byte_size(lib))})"
    )

    %{
      package: package,
      dist: dist,
      artifact: artifact,
      artifact_bytes: bytes,
      lib: lib,
      precompile_output: output
    }
  end

  setup %{package: package} do
    # Every test starts from a package with no library installed.
    File.rm_rf!(Path.join(package, "priv/native"))
    :ok
  end

  describe "mix flame_k8s.precompile" do
    test "writes the artifact, its .sha256 and the package's checksum file", ctx do
      sha = FLAMEK8sNative.sha256(ctx.artifact_bytes)
      assert ctx.precompile_output =~ "sha256      #{sha}"

      assert File.read!(Path.join(ctx.dist, ctx.artifact <> ".sha256")) ==
               "#{sha}  #{ctx.artifact}\n"

      {:ok, checksums} =
        FLAMEK8sNative.read_checksums(Path.join(ctx.package, "checksum-flame_k8s_native.sha256"))

      assert checksums[ctx.artifact] == sha
      # Reproducible: the same library packs to the same bytes.
      lib = Path.join(ctx.tmp_dir, "lib.so")
      File.write!(lib, ctx.lib)
      assert File.read!(FLAMEK8sNative.pack!(lib, lib <> ".tar.gz")) == ctx.artifact_bytes

      # The library inside is a shared object that exports the NIF entry point.
      if @target =~ "-linux-", do: assert(<<0x7F, "ELF", _::binary>> = ctx.lib)
      assert ctx.lib =~ "nif_init"

      # The checksum lines are sha256sum's own format.
      if sha256sum = System.find_executable("sha256sum") do
        File.cp!(
          Path.join(ctx.package, "checksum-flame_k8s_native.sha256"),
          Path.join(ctx.dist, "SUMS")
        )

        assert {out, 0} = System.cmd(sha256sum, ["-c", "--ignore-missing", "SUMS"], cd: ctx.dist)
        assert out =~ "#{ctx.artifact}: OK"
      end
    end
  end

  describe "an app depending on the library, with no Rust toolchain" do
    test "downloads, verifies and loads the precompiled NIF", ctx do
      server = ArtifactServer.start!()
      # GitHub's release downloads redirect to another host; so does this one, to another path.
      ArtifactServer.put(
        server,
        "/releases/v#{@version}/#{ctx.artifact}",
        {:redirect, "/cdn/blob"}
      )

      ArtifactServer.put(server, "/cdn/blob", {:ok, ctx.artifact_bytes})

      # The base URL from the app's config (with the {version} placeholder), not the env.
      app =
        new_app(ctx.tmp_dir, ctx.package,
          config:
            "config :flame_k8s_backend, nif_base_url: \"#{server.url}/releases/v{version}\"\n"
        )

      env = no_cargo_env(ctx.tmp_dir, [{"FLAME_K8S_NIF_BASE_URL", nil}])
      assert {"none\n", 0} = System.cmd("sh", ["-c", "command -v cargo || echo none"], env: env)

      {output, status, ms} = compile_app(app, env)
      assert status == 0, output
      assert output =~ "Downloading precompiled NIF #{ctx.artifact} from #{server.url}/releases"
      assert output =~ "sha256 #{FLAMEK8sNative.sha256(ctx.artifact_bytes)} verified"
      refute output =~ "Compiling NIF"

      IO.puts(
        "precompiled NIF: fresh app's mix compile without cargo (download over loopback, " <>
          "verify, install, and the library's Elixir code) #{seconds(ms)} (#{load()})"
      )

      {output, status} = run_app(app, env)
      assert status == 0, output
      assert output =~ "NIF OK from #{app}/_build/prod/lib/flame_k8s_backend/priv/native/"

      installed = Path.join(ctx.package, "priv/native/libflame_k8s_native.so")
      assert File.read!(installed) == ctx.lib
      assert File.read!(installed <> ".profile") == "release"
      assert paths(server) == ["/releases/v#{@version}/#{ctx.artifact}", "/cdn/blob"]

      # In place and current: the next build downloads nothing.
      {output, status, _ms} = compile_app(app, env)
      assert status == 0, output
      assert length(ArtifactServer.requests(server)) == 2

      # Download + verify alone, in this VM, as the compiler does it (redirect included).
      url = "#{server.url}/releases/v#{@version}/#{ctx.artifact}"
      sha = FLAMEK8sNative.sha256(ctx.artifact_bytes)

      times =
        for _ <- 1..5 do
          {body, ms} =
            timed(fn ->
              {:ok, body} = FLAMEK8sNative.HTTP.get(url, %{})
              ^sha = FLAMEK8sNative.sha256(body)
              body
            end)

          assert body == ctx.artifact_bytes
          ms
        end

      IO.puts(
        "precompiled NIF: download + verify of #{mib(byte_size(ctx.artifact_bytes))} over " <>
          "loopback (one redirect) #{describe_times(times)} (#{load()})"
      )
    end

    test "rejects a tampered artifact and installs nothing", ctx do
      # A well-formed artifact holding another library: only the checksum tells them apart.
      tampered = Path.join(ctx.tmp_dir, "tampered.so")
      File.write!(tampered, ctx.lib <> "evil")
      tampered_tar = FLAMEK8sNative.pack!(tampered, Path.join(ctx.tmp_dir, ctx.artifact))

      server = ArtifactServer.start!()
      ArtifactServer.put(server, "/v#{@version}/#{ctx.artifact}", {:ok, File.read!(tampered_tar)})
      app = new_app(ctx.tmp_dir, ctx.package)
      env = no_cargo_env(ctx.tmp_dir, [{"FLAME_K8S_NIF_BASE_URL", "#{server.url}/v{version}"}])

      {output, status} = run_app(app, env)
      assert status != 0

      assert output =~
               "checksum mismatch for the precompiled NIF #{ctx.artifact} (target #{@target})"

      assert output =~ "expected sha256 #{FLAMEK8sNative.sha256(ctx.artifact_bytes)}"
      assert output =~ "got #{FLAMEK8sNative.sha256(File.read!(tampered_tar))}"
      assert output =~ "Nothing was installed"
      assert output =~ "FLAME_K8S_BUILD=1"
      assert File.ls(Path.join(ctx.package, "priv/native")) in [{:ok, []}, {:error, :enoent}]
    end

    test "says when its target has no precompiled NIF", ctx do
      server = ArtifactServer.start!()
      app = new_app(ctx.tmp_dir, ctx.package)

      env =
        no_cargo_env(ctx.tmp_dir, [
          {"FLAME_K8S_NIF_BASE_URL", server.url},
          {"FLAME_K8S_NIF_TARGET", "riscv64gc-unknown-linux-gnu"}
        ])

      {output, status} = run_app(app, env)
      assert status != 0

      assert output =~
               "flame_k8s_backend #{@version} has no precompiled NIF for target riscv64gc-unknown-linux-gnu"

      assert output =~ "lists for this version: "
      assert output =~ "#{@target} (NIF #{FLAMEK8sNative.crate_nif_version(ctx.package)})"
      assert output =~ "cargo was not found either"
      assert output =~ "install Rust (https://rustup.rs"
      assert output =~ "FLAME_K8S_BUILD=1"
      assert ArtifactServer.requests(server) == []
      refute File.exists?(Path.join(ctx.package, "priv/native/libflame_k8s_native.so"))
    end

    test "fails clearly when the artifact cannot be downloaded", ctx do
      app = new_app(ctx.tmp_dir, ctx.package)
      closed = closed_port()

      env =
        no_cargo_env(ctx.tmp_dir, [
          {"FLAME_K8S_NIF_BASE_URL", "http://127.0.0.1:#{closed}/v{version}"}
        ])

      {output, status} = run_app(app, env)
      assert status != 0

      assert output =~
               "could not install the precompiled NIF for target #{@target}: could not reach " <>
                 "http://127.0.0.1:#{closed}/v#{@version}/#{ctx.artifact}: connection refused"

      assert output =~ "Nothing was installed"
      assert output =~ "FLAME_K8S_BUILD=1"

      # A server without the file.
      server = ArtifactServer.start!()
      env = no_cargo_env(ctx.tmp_dir, [{"FLAME_K8S_NIF_BASE_URL", server.url}])
      {output, status} = run_app(app, env)
      assert status != 0
      assert output =~ "HTTP 404 Not Found from #{server.url}/#{ctx.artifact}"
      refute File.exists?(Path.join(ctx.package, "priv/native/libflame_k8s_native.so"))
    end
  end

  test "FLAME_K8S_BUILD=1 builds from source though a precompiled NIF is listed", ctx do
    server = ArtifactServer.start!()
    app = new_app(ctx.tmp_dir, ctx.package)
    env = cargo_env([{"FLAME_K8S_BUILD", "1"}, {"FLAME_K8S_NIF_BASE_URL", server.url}])

    {output, status, ms} = compile_app(app, env)
    assert status == 0, output
    assert output =~ "Compiling NIF flame_k8s_native (cargo build"
    refute output =~ "Downloading"

    IO.puts(
      "precompiled NIF: fresh app's mix compile with cargo, FLAME_K8S_BUILD=1 (cargo build " <>
        "--release, and the library's Elixir code) #{seconds(ms)} (#{cargo_work(output)}; " <>
        "#{load()})"
    )

    {output, status} = run_app(app, env)
    assert status == 0, output
    assert output =~ "NIF OK from #{app}/_build/prod/lib/flame_k8s_backend/priv/native/"
    assert ArtifactServer.requests(server) == []
    installed = Path.join(ctx.package, "priv/native/libflame_k8s_native.so")
    refute File.exists?(installed <> ".precompiled")
  end

  describe "no precompiled NIF listed (the committed checksum file until a release is published)" do
    setup %{package: package} do
      checksums = Path.join(package, "checksum-flame_k8s_native.sha256")
      listed = File.read!(checksums)
      File.write!(checksums, "")
      on_exit(fn -> File.write!(checksums, listed) end)
    end

    test "with cargo, an app depending on the library builds it from source and says so", ctx do
      server = ArtifactServer.start!()
      app = new_app(ctx.tmp_dir, ctx.package)

      {output, status} = run_app(app, cargo_env([{"FLAME_K8S_NIF_BASE_URL", server.url}]))

      assert status == 0, output

      assert output =~
               "No precompiled NIF for #{@target} in flame_k8s_backend #{@version}: " <>
                 "building it from source"

      assert output =~ "Compiling NIF flame_k8s_native (cargo build"
      refute output =~ "Downloading"
      assert output =~ "NIF OK from #{app}/_build/prod/lib/flame_k8s_backend/priv/native/"
      assert ArtifactServer.requests(server) == []
      installed = Path.join(ctx.package, "priv/native/libflame_k8s_native.so")
      assert File.read!(installed <> ".profile") == "release"
      refute File.exists?(installed <> ".precompiled")
    end

    test "without cargo, the compile stops, naming the target and how to build it", ctx do
      app = new_app(ctx.tmp_dir, ctx.package)
      {output, status} = run_app(app, no_cargo_env(ctx.tmp_dir, []))
      assert status != 0

      assert output =~
               "flame_k8s_backend #{@version} has no precompiled NIF for target #{@target}"

      assert output =~ "checksum-flame_k8s_native.sha256 lists for this version: none"
      assert output =~ "cargo was not found either"
      assert output =~ "install Rust (https://rustup.rs"
      refute File.exists?(Path.join(ctx.package, "priv/native/libflame_k8s_native.so"))
    end

    test "FLAME_K8S_BUILD=0 or build_from_source: false fails without running cargo", ctx do
      server = ArtifactServer.start!()
      config = "config :flame_k8s_backend, build_from_source: false\n"

      for {overrides, app_opts} <- [{[{"FLAME_K8S_BUILD", "0"}], []}, {[], [config: config]}] do
        app = new_app(ctx.tmp_dir, ctx.package, app_opts)
        env = cargo_env([{"FLAME_K8S_NIF_BASE_URL", server.url} | overrides])
        {output, status, _ms} = compile_app(app, env)
        assert status != 0

        assert output =~
                 "flame_k8s_backend #{@version} has no precompiled NIF for target #{@target}"

        assert output =~
                 "FLAME_K8S_BUILD=0 (or build_from_source: false) rules out building it with cargo"

        refute output =~ "Compiling NIF"
        refute File.exists?(Path.join(ctx.package, "priv/native/libflame_k8s_native.so"))
      end

      assert ArtifactServer.requests(server) == []
    end
  end

  describe "downloads" do
    @tag :capture_log
    test "verify the server's certificate and host name", ctx do
      %{server_config: server_tls, client_config: client_tls} = test_certificates("localhost")
      server = ArtifactServer.start!(tls: server_tls)
      ArtifactServer.put(server, "/a", {:ok, "bytes"})
      localhost = "https://localhost:#{server.port}/a"

      # The OS trust store does not know the test CA.
      assert {:error, message} = FLAMEK8sNative.HTTP.get(localhost, %{})
      assert message =~ "TLS verification failed (unknown_ca)"

      assert {:ok, "bytes"} =
               FLAMEK8sNative.HTTP.get(localhost, %{}, cacerts: client_tls[:cacerts])

      # The certificate is for localhost, not 127.0.0.1.
      assert {:error, message} =
               FLAMEK8sNative.HTTP.get(server.url <> "/a", %{}, cacerts: client_tls[:cacerts])

      assert message =~ "hostname_check_failed"

      # SSL_CERT_FILE names the trusted CAs instead of the OS store.
      pem = Path.join(ctx.tmp_dir, "ca.pem")

      File.write!(
        pem,
        :public_key.pem_encode(
          for c <- client_tls[:cacerts], do: {:Certificate, c, :not_encrypted}
        )
      )

      assert {:ok, "bytes"} = FLAMEK8sNative.HTTP.get(localhost, %{"SSL_CERT_FILE" => pem})
    end

    test "go through http_proxy, with its credentials, unless no_proxy says otherwise" do
      proxy = ArtifactServer.start!()
      ArtifactServer.put(proxy, "/a", {:ok, "via proxy"})

      # 127.0.0.9:1 is closed: only a proxied request succeeds.
      env = %{"http_proxy" => "http://flame:s3cret@127.0.0.1:#{proxy.port}"}
      assert {:ok, "via proxy"} = FLAMEK8sNative.HTTP.get("http://127.0.0.9:1/a", env)

      assert [%{target: "http://127.0.0.9:1/a", headers: headers}] =
               ArtifactServer.requests(proxy)

      assert {"proxy-authorization", "Basic " <> Base.encode64("flame:s3cret")} in headers

      closed = "http://127.0.0.1:#{closed_port()}"
      env = %{"HTTP_PROXY" => closed, "NO_PROXY" => "example.com, 127.0.0.1"}
      assert {:ok, "via proxy"} = FLAMEK8sNative.HTTP.get(proxy.url <> "/a", env)

      env = %{"HTTP_PROXY" => "http://u:hidden@127.0.0.1:#{closed_port()}"}
      assert {:error, message} = FLAMEK8sNative.HTTP.get("http://127.0.0.9:1/a", env)
      assert message =~ "connection refused"
      refute message =~ "hidden"

      for {host, no_proxy, bypass?} <- [
            {"objects.githubusercontent.com", "githubusercontent.com", true},
            {"objects.githubusercontent.com", ".githubusercontent.com", true},
            {"objects.githubusercontent.com", "*.githubusercontent.com", true},
            {"github.com", "*", true},
            {"github.com", "hub.com", false},
            {"github.com", "github.com:443", true},
            {"github.com", "", false}
          ] do
        assert FLAMEK8sNative.HTTP.no_proxy?(host, no_proxy) == bypass?, "#{host} / #{no_proxy}"
      end
    end
  end

  describe "targets and checksums" do
    test "Erlang system architectures map to Rust targets" do
      for {arch, os, target} <- [
            {"x86_64-pc-linux-gnu", :linux, "x86_64-unknown-linux-gnu"},
            {"aarch64-unknown-linux-gnu", :linux, "aarch64-unknown-linux-gnu"},
            {"x86_64-alpine-linux-musl", :linux, "x86_64-unknown-linux-musl"},
            {"aarch64-alpine-linux-musl", :linux, "aarch64-unknown-linux-musl"},
            {"aarch64-apple-darwin23.4.0", :darwin, "aarch64-apple-darwin"},
            {"x86_64-apple-darwin21.6.0", :darwin, "x86_64-apple-darwin"}
          ] do
        assert FLAMEK8sNative.target_from_arch(arch, {:unix, os}) == target
      end

      # No ABI in the string: the C library decides.
      assert FLAMEK8sNative.target_from_arch("x86_64-pc-linux", {:unix, :linux}, fn -> true end) ==
               "x86_64-unknown-linux-musl"

      assert FLAMEK8sNative.target(%{"FLAME_K8S_NIF_TARGET" => "aarch64-apple-darwin"}) ==
               "aarch64-apple-darwin"
    end

    test "the artifact is the newest NIF version the VM loads, of this version and target" do
      sha = fn c -> String.duplicate(c, 64) end

      checksums = %{
        "libflame_k8s_native-v1.0.0-nif-2.15-x86_64-unknown-linux-gnu.so.tar.gz" => sha.("a"),
        "libflame_k8s_native-v1.0.0-nif-2.16-x86_64-unknown-linux-gnu.so.tar.gz" => sha.("b"),
        "libflame_k8s_native-v1.0.0-nif-2.17-x86_64-unknown-linux-gnu.so.tar.gz" => sha.("c"),
        "libflame_k8s_native-v1.0.0-nif-2.16-aarch64-unknown-linux-musl.so.tar.gz" => sha.("d"),
        "libflame_k8s_native-v0.9.0-nif-2.16-riscv64gc-unknown-linux-gnu.so.tar.gz" => sha.("e")
      }

      select = &FLAMEK8sNative.select_artifact(checksums, "1.0.0", &1, &2)
      gnu = "x86_64-unknown-linux-gnu"

      assert {:ok, "libflame_k8s_native-v1.0.0-nif-2.16-" <> _, "bbbb" <> _} =
               select.(gnu, "2.16")

      assert {:ok, "libflame_k8s_native-v1.0.0-nif-2.17-" <> _, _} = select.(gnu, "2.18")
      assert {:ok, "libflame_k8s_native-v1.0.0-nif-2.15-" <> _, _} = select.(gnu, "2.15")
      assert {:error, {:no_artifact, _}} = select.(gnu, "2.14")
      assert {:error, {:no_artifact, _}} = select.(gnu, "3.0")
      assert {:error, {:no_artifact, listed}} = select.("riscv64gc-unknown-linux-gnu", "2.16")
      assert "aarch64-unknown-linux-musl (NIF 2.16)" in listed
    end

    test "checksum files are read strictly", ctx do
      path = Path.join(ctx.tmp_dir, "sums")

      File.write!(
        path,
        "#{String.duplicate("A", 64)}  x.tar.gz\n#{String.duplicate("b", 64)} *y.tar.gz\n"
      )

      assert {:ok, %{"x.tar.gz" => "aaaa" <> _, "y.tar.gz" => "bbbb" <> _}} =
               FLAMEK8sNative.read_checksums(path)

      File.write!(path, "deadbeef  x.tar.gz\n")
      assert {:error, {:malformed, "deadbeef  x.tar.gz"}} = FLAMEK8sNative.read_checksums(path)
      assert {:error, :enoent} = FLAMEK8sNative.read_checksums(path <> ".missing")
    end
  end

  ## Helpers

  defp new_app(dir, package, opts \\ []) do
    app = Path.join(dir, "user_app")
    File.rm_rf!(app)
    File.mkdir_p!(Path.join(app, "lib"))

    File.write!(Path.join(app, "mix.exs"), """
    defmodule UserApp.MixProject do
      use Mix.Project

      def project do
        [app: :user_app, version: "0.1.0", deps: [{:flame_k8s_backend, path: #{inspect(package)}}]]
      end
    end
    """)

    if config = opts[:config] do
      File.mkdir_p!(Path.join(app, "config"))
      File.write!(Path.join(app, "config/config.exs"), "import Config\n" <> config)
    end

    app
  end

  defp compile_app(app, env) do
    {{output, status}, ms} =
      timed(fn -> System.cmd("mix", ["compile"], cd: app, env: env, stderr_to_stdout: true) end)

    {output, status, ms}
  end

  defp run_app(app, env) do
    script = """
    :ok = FLAMEK8sBackend.Native.noop()
    IO.puts("NIF OK from " <> FLAMEK8sBackend.Native.library_path())
    """

    System.cmd("mix", ["run", "-e", script], cd: app, env: env, stderr_to_stdout: true)
  end

  # No cargo anywhere the compiler looks: not on PATH, not $CARGO, not ~/.cargo/bin (HOME is a
  # new directory). No proxy, no setting of this project's from the test's own environment, and
  # a base URL on a closed loopback port unless `overrides` (applied last) sets another, and
  # proxies on a closed loopback port for every other host: nothing a compile here does can
  # leave this machine, not even a DNS lookup of the default base URL's host.
  # (A test that sets the base URL in the app's config passes {"FLAME_K8S_NIF_BASE_URL", nil}.)
  defp no_cargo_env(dir, overrides) do
    home = Path.join(dir, "home")
    File.mkdir_p!(home)

    path =
      System.get_env("PATH")
      |> String.split(":")
      |> Enum.reject(&File.exists?(Path.join(&1, "cargo")))
      |> Enum.join(":")

    unset =
      for var <-
            ~w(CARGO CARGO_HOME RUSTUP_HOME CARGO_TARGET_DIR FLAME_K8S_BUILD FLAME_K8S_NIF_PROFILE
               FLAME_K8S_NIF_TARGET HTTP_PROXY HTTPS_PROXY NO_PROXY MIX_HOME SSL_CERT_FILE),
          into: %{},
          do: {var, nil}

    # Requests to anywhere but loopback go to a closed proxy port on loopback.
    nowhere = "http://127.0.0.1:#{closed_port()}"

    unset
    |> Map.merge(%{
      "MIX_ENV" => "prod",
      "PATH" => path,
      "HOME" => home,
      "FLAME_K8S_NIF_BASE_URL" => nowhere <> "/unset",
      "http_proxy" => nowhere,
      "https_proxy" => nowhere,
      "no_proxy" => "127.0.0.1,localhost"
    })
    |> Map.merge(Map.new(overrides))
    |> Enum.to_list()
  end

  # The test's own environment (cargo where it is) with cargo's build cache shared, the release
  # profile, the detected target, and no FLAME_K8S_BUILD unless `overrides` sets one.
  defp cargo_env(overrides) do
    %{
      "MIX_ENV" => "prod",
      "FLAME_K8S_BUILD" => nil,
      "FLAME_K8S_NIF_PROFILE" => nil,
      "FLAME_K8S_NIF_TARGET" => nil,
      "CARGO_TARGET_DIR" => cargo_target_dir()
    }
    |> Map.merge(Map.new(overrides))
    |> Enum.to_list()
  end

  defp paths(server), do: Enum.map(ArtifactServer.requests(server), & &1.path)

  defp closed_port do
    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(socket)
    :gen_tcp.close(socket)
    port
  end

  defp test_certificates(host) do
    key = {:namedCurve, :secp256r1}
    san = {:Extension, {2, 5, 29, 17}, false, [dNSName: String.to_charlist(host)]}
    cert = [key: key, digest: :sha256]

    :public_key.pkix_test_data(%{
      server_chain: %{root: cert, intermediates: [], peer: [{:extensions, [san]} | cert]},
      client_chain: %{root: cert, intermediates: [], peer: cert}
    })
    |> Map.new()
  end

  ## Figures: printed, never asserted (they depend on the machine and its load)

  defp timed(fun) do
    {us, result} = :timer.tc(fun)
    {result, div(us, 1000)}
  end

  defp seconds(ms), do: :erlang.float_to_binary(ms / 1000, decimals: 1) <> " s"

  defp mib(bytes), do: :erlang.float_to_binary(bytes / 1_048_576, decimals: 1) <> " MiB"

  defp describe_times(times) do
    sorted = Enum.sort(times)
    median = Enum.at(sorted, div(length(sorted), 2))
    "median #{median} ms (min #{hd(sorted)}, max #{List.last(sorted)}, #{length(sorted)} runs)"
  end

  defp load do
    case File.read("/proc/loadavg") do
      {:ok, text} ->
        "load average #{text |> String.split() |> hd()} on #{System.schedulers_online()} cores"

      {:error, _} ->
        "#{System.schedulers_online()} cores"
    end
  end

  # What cargo compiled, from its "   Compiling <crate> v<version>" lines: nothing (its target
  # directory was warm and current), the NIF crate only (warm dependencies), or more (cold).
  defp cargo_work(output) do
    case Regex.scan(~r/^\s+Compiling ([\w-]+) v\d/m, output, capture: :all_but_first) do
      [] -> "cargo target dir warm: nothing recompiled"
      [["flame_k8s_native"]] -> "cargo target dir warm: only flame_k8s_native recompiled"
      crates -> "cargo compiled #{length(crates)} crates: target dir cold or partly cold"
    end
  end

  defp cargo_target_dir,
    do: System.get_env("CARGO_TARGET_DIR") || Path.join(@root, "_build/cargo")

  # The working tree's files as a release would have them: tracked and new ones, none ignored
  # (no _build, no priv/native), with their modification times (cargo's freshness check).
  defp copy_working_tree(root, dir) do
    {files, 0} =
      System.cmd("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cd: root
      )

    for file <- files |> String.split(<<0>>, trim: true) |> Enum.uniq(),
        source = Path.join(root, file),
        File.regular?(source) do
      target = Path.join(dir, file)
      File.mkdir_p!(Path.dirname(target))
      File.cp!(source, target)
      stat = File.stat!(source, time: :posix)
      File.chmod!(target, stat.mode)
      File.touch!(target, stat.mtime)
    end
  end
end
