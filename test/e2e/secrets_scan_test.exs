defmodule FLAMEK8sBackend.SecretsScanE2ETest do
  # Secrets never shown: one run against the local control plane with every log level on,
  # every log event kept (Elixir's formatted output, and the raw :logger events with SASL and
  # crash reports), boots with a cookie, a ServiceAccount token and :secret_env values — a
  # successful one, a killed runner, failing ones, a crash with the backend state in it — and
  # then a scan of all that output, of `inspect` of every struct and process state, of every
  # error message, and of the runner pods as the API server keeps them, for the cookie, the
  # tokens and the :secret_env values. The parent VM's ERL_AFLAGS and ERL_ZFLAGS carry the
  # cookie too (`-setcookie`, as a release's env.sh may set it): runners get those flags, never
  # the cookie in them.
  #
  # Not async: it turns the log level up for the whole VM, adds a :logger handler and sets
  # ERL_AFLAGS and ERL_ZFLAGS in the VM's environment.
  use FLAMEK8sBackend.Test.ClusterCase, async: false

  import ExUnit.CaptureLog

  @moduletag :e2e
  @moduletag timeout: 240_000

  alias FLAMEK8sBackend.{BootError, Kube}
  alias FLAMEK8sBackend.Test.RemoteFuns

  defmodule Capture do
    @moduledoc false
    # A :logger handler that keeps every event as it comes, unformatted.
    def log(event, %{config: %{table: table}}),
      do: :ets.insert(table, {System.unique_integer([:monotonic]), event})
  end

  defmodule Holder do
    @moduledoc false
    # A process that holds the backend state, as FLAME's Runner does, and crashes with it.
    use GenServer
    def init(state), do: {:ok, state}
    def handle_call(:crash, _from, _state), do: raise("crashing with the backend state")
  end

  @rules [
    %{
      "apiGroups" => [""],
      "resources" => ["pods"],
      "verbs" => ["get", "list", "watch", "create", "delete"]
    },
    %{"apiGroups" => [""], "resources" => ["pods/log", "events"], "verbs" => ["get", "list"]},
    %{"apiGroups" => [""], "resources" => ["secrets"], "verbs" => ["create", "delete"]}
  ]

  setup %{kube: kube, namespace: ns} do
    LocalCluster.create_parent_pod!(kube, ns)
    table = :ets.new(:secrets_scan_events, [:public, :ordered_set])
    level = Logger.level()
    primary = :logger.get_primary_config()
    :ok = :logger.add_handler(:secrets_scan, Capture, %{level: :all, config: %{table: table}})
    Logger.configure(level: :debug)
    :ok = :logger.set_primary_config(:level, :all)
    cookie = Atom.to_string(Node.get_cookie())
    flags = for name <- ~w(ERL_AFLAGS ERL_ZFLAGS), do: {name, System.get_env(name)}
    System.put_env("ERL_AFLAGS", "-setcookie #{cookie} -kernel shell_history disabled")
    System.put_env("ERL_ZFLAGS", "+sbwt none -setcookie #{Node.self()} #{cookie}")

    on_exit(fn ->
      :logger.remove_handler(:secrets_scan)
      :logger.set_primary_config(:level, primary.level)
      Logger.configure(level: level)

      for {name, value} <- flags,
          do: if(value, do: System.put_env(name, value), else: System.delete_env(name))
    end)

    %{events: table}
  end

  test "the cookie, the tokens and :secret_env values appear nowhere", %{
    kube: kube,
    namespace: ns,
    events: events
  } do
    cookie = Atom.to_string(Node.get_cookie())
    token = LocalCluster.service_account_token!(kube, ns, "scan", @rules)
    kubeconfig = LocalCluster.write_token_kubeconfig!(token)
    api_key = "sk-live-" <> rand()
    password = rand()

    secrets = %{
      "cookie" => cookie,
      "service account token" => token,
      "API_KEY" => api_key,
      "DB_PASSWORD" => password
    }

    opts = [
      parent_pod: {ns, "parent"},
      kubeconfig: kubeconfig,
      boot_timeout: 30_000,
      secret_env: %{"API_KEY" => api_key, "DB_PASSWORD" => password},
      log: :debug
    ]

    {shown, log} =
      with_log([level: :debug], fn ->
        scenarios(kube, ns, opts, token)
      end)

    texts =
      [{"captured Elixir log", log}] ++
        shown ++
        raw_events(events) ++
        Enum.map(
          runner_logs(ns, Agent.get(:secrets_scan_printers, & &1)),
          &{"runner and kubelet output", &1}
        )

    {elsewhere, texts} = Enum.split_with(texts, &match?({{:elsewhere, _}, _}, &1))

    hits =
      for {what, text} <- texts, {name, secret} <- secrets, String.contains?(text, secret) do
        "#{name} in #{what}: ...#{excerpt(text, secret)}..."
      end

    # What :logger's own formatter (a plain Erlang handler, not Elixir's) prints of the same
    # events: it ignores Inspect implementations, so it is a figure here, not an assertion.
    erlang_formatted = Enum.map(:ets.tab2list(events), fn {_, e} -> erlang_format(e) end)

    erlang_hits =
      for text <- erlang_formatted,
          {name, secret} <- secrets,
          String.contains?(text, secret),
          do: name

    elsewhere_hits =
      for {{:elsewhere, what}, text} <- elsewhere,
          {name, secret} <- secrets,
          String.contains?(text, secret),
          do: "#{name} in #{what}"

    IO.puts(
      "\nsecret scan: #{length(texts)} texts (#{byte_size(log)} bytes of Elixir log, " <>
        "#{:ets.info(events, :size)} raw events, #{length(shown)} inspected values and " <>
        "messages); hits: #{length(hits)}; in :logger_formatter output of the raw events: " <>
        "#{inspect(Enum.frequencies(erlang_hits))}; in states of processes outside the " <>
        "library: #{inspect(Enum.uniq(elsewhere_hits))}"
    )

    assert hits == [], Enum.join(Enum.take(hits, 10), "\n")
  end

  # Runs every scenario; returns what the test inspected or read as messages, labelled.
  defp scenarios(kube, ns, opts, token) do
    {:ok, shown_agent} = Agent.start_link(fn -> [] end)
    {:ok, _} = Agent.start_link(fn -> [] end, name: :secrets_scan_printers)
    show = fn what, text -> Agent.update(shown_agent, &[{what, text} | &1]) end

    show_inspect = fn what, value ->
      show.(what, inspect(value, limit: :infinity, printable_limit: :infinity))
      show.(what <> " (Exception.format_exit)", Exception.format_exit({:boom, value}))
    end

    # 1. A successful boot through a pool; every process state while the runner is up.
    pool = start_debug_pool!(opts)
    assert {_runner, 49} = FLAME.call(pool, RemoteFuns.square(7))
    show_all_states(show, "with a runner up")
    show_runner_pods(show, kube, ns, "a pool's runner pod")

    # 2. The runner VM killed: the reaper cleans up.
    {caller, monitor} = spawn_monitor(fn -> FLAME.call(pool, RemoteFuns.halt_vm()) end)
    assert_receive {:DOWN, ^monitor, :process, ^caller, _}, 30_000
    eventually(fn -> runner_pods(kube, ns) == [] end, 20_000)

    # 3. The backend state before and after a boot, and in a crash report.
    {:ok, state} = FLAMEK8sBackend.init(opts)
    show_inspect.("backend state before the boot", state)
    {:ok, holder} = GenServer.start(Holder, state)
    catch_exit(GenServer.call(holder, :crash))
    {:ok, terminator, booted} = FLAMEK8sBackend.remote_boot(state)
    show_inspect.("backend state after the boot", booted)
    show_all_states(show, "with a booted runner")
    show_runner_pods(show, kube, ns, "a booted runner's pod")
    # The runner VM stops: the reaper (watching the terminator) deletes pod and secret.
    :erpc.cast(node(terminator), System, :halt, [1])
    eventually(fn -> runner_pods(kube, ns) == [] end, 30_000)

    # 4. A runner that prints its environment (cookie and :secret_env values come in from its
    #    secret) and exits: the error carries its log lines.
    printing = %{
      "name" => "app",
      "image" => "shell:test",
      "args" => [
        "-c",
        "echo RELEASE_COOKIE=$RELEASE_COOKIE API_KEY=$API_KEY DB_PASSWORD=$DB_PASSWORD; " <>
          "echo 'Authorization: Bearer #{token}'; sleep 1; exit 3"
      ]
    }

    for {what, extra} <- [
          {"a runner that prints its secrets and exits",
           manifest: %{"spec" => %{"containers" => [printing]}}},
          {"an image that cannot be pulled",
           manifest: %{
             "spec" => %{"containers" => [%{"name" => "app", "image" => "registry.invalid/x:1"}]}
           }},
          {"a boot timeout",
           boot_timeout: 1_500,
           manifest: %{"metadata" => %{"labels" => %{"sim-kubelet/start-delay-ms" => "60000"}}}}
        ] do
      {:ok, state} = FLAMEK8sBackend.init(Keyword.merge(opts, extra))

      # That pod's own output holds what it printed: not the library's output.
      if extra[:manifest] == %{"spec" => %{"containers" => [printing]}},
        do: Agent.update(:secrets_scan_printers, &[state.runner_name | &1])

      assert {:error, %BootError{} = error} = FLAMEK8sBackend.remote_boot(state)
      show_inspect.(what <> ": BootError", error)
      show.(what <> ": message", Exception.message(error))
      show.(what <> ": raw", inspect(Map.from_struct(error), limit: :infinity))
    end

    # 5. The Runner process killed mid-boot.
    {:ok, state} =
      FLAMEK8sBackend.init(
        Keyword.put(opts, :manifest, %{
          "metadata" => %{"labels" => %{"sim-kubelet/start-delay-ms" => "60000"}}
        })
      )

    {pid, monitor} = spawn_monitor(fn -> FLAMEK8sBackend.remote_boot(state) end)
    eventually(fn -> match?({:ok, _}, Kube.get_pod(kube, ns, state.runner_name)) end)
    Process.exit(pid, :kill)
    assert_receive {:DOWN, ^monitor, :process, ^pid, :killed}
    eventually(fn -> runner_pods(kube, ns) == [] end, 20_000)

    # 6. The token on a connection of its own: inspect, errors of every kind with it.
    url = LocalCluster.info().server
    ca = LocalCluster.info().ca_pem
    {:ok, sa} = Kube.connect(url: url, ca_cert_pem: ca, token: token)
    show_inspect.("Kube client with the token", sa)

    for result <- [
          Kube.get_pod(sa, ns, "missing"),
          Kube.request(sa, "GET", "/api/v1/nodes"),
          Kube.request(sa, "GET", "/api/v1/namespaces/#{ns}/secrets"),
          Kube.create_pod(sa, ns, %{"metadata" => %{"name" => "x"}, "spec" => %{}}),
          Kube.create_pod(sa, ns, %{"metadata" => %{"name" => "x", "bogus" => 1}}),
          Kube.request(sa, "POST", "/api/v1/namespaces/#{ns}/serviceaccounts/scan/token",
            body: %{"spec" => %{}}
          )
        ] do
      show_inspect.("an answer with the token's connection", result)
    end

    {:ok, wrong} = Kube.connect(url: url, ca_cert_pem: ca, token: token <> "x")
    show_inspect.("401 with a wrong token", Kube.get_pod(wrong, ns, "p"))
    {:ok, refused} = Kube.connect(url: "https://127.0.0.1:1", token: token)
    show_inspect.("connect error with the token", Kube.get_pod(refused, ns, "p"))

    for {what, bad} <- [
          {"ArgumentError of connect", [token: token, url: url, mode: :bogus]},
          {"ArgumentError of connect for a non-keyword option list", [{:token, token}, :oops]},
          {"ArgumentError of connect for an improper option list", [{:url, url} | token]},
          {"ArgumentError of connect for a token with a newline",
           [url: url, token: token <> "\n"]}
        ] do
      try do
        Kube.connect(bad)
      rescue
        e -> show.(what, Exception.message(e))
      end
    end

    try do
      FLAMEK8sBackend.init(Keyword.put(opts, :secret_env, %{"API_KEY" => 42}))
    rescue
      e -> show.("ArgumentError of init", Exception.message(e))
    end

    Agent.get(shown_agent, & &1)
  end

  # The runner pods as the API server keeps them: what anyone who may read pods sees.
  defp show_runner_pods(show, kube, ns, what) do
    pods = runner_pods(kube, ns)
    assert pods != []

    for pod <- pods,
        do: show.(what, inspect(pod, limit: :infinity, printable_limit: :infinity))
  end

  # `inspect` of the state of every process of the library, and of FLAME's Runner and
  # Terminator (they hold the backend's state), at this moment. Other processes' states are
  # kept apart as `{:elsewhere, what, text}`: the pool's own state holds the backend options
  # as the application gave them (secret_env included), and OTP's :auth holds the cookie.
  defp show_all_states(show, moment) do
    for pid <- Process.list(), pid != self(), otp_process?(pid), not test_process?(pid) do
      try do
        state = :sys.get_state(pid, 200)
        {mod, _, _} = call = initial_call(pid)
        text = inspect(state, limit: :infinity, printable_limit: :infinity)
        what = "state of #{inspect(call)} #{moment}"

        if library_process?(mod),
          do: show.(what, text),
          else: show.({:elsewhere, what}, text)
      catch
        _, _ -> :ok
      end
    end
  end

  defp library_process?(mod) do
    name = Atom.to_string(mod)

    String.starts_with?(name, "Elixir.FLAMEK8sBackend.") or
      name in ["Elixir.FLAME.Runner", "Elixir.FLAME.Terminator"]
  end

  # This module's own helpers (the agent keeping what was shown).
  defp test_process?(pid) do
    match?({__MODULE__, _, _}, initial_call(pid))
  end

  defp otp_process?(pid) do
    case Process.info(pid, :dictionary) do
      {:dictionary, dict} -> Keyword.has_key?(dict, :"$initial_call")
      nil -> false
    end
  end

  defp initial_call(pid) do
    case Process.info(pid, :dictionary) do
      {:dictionary, dict} -> dict[:"$initial_call"]
      nil -> nil
    end
  end

  # Each raw event as Elixir's handler prints it: reports through Logger's translator (which
  # is where crash and SASL reports get `inspect`ed), strings as they are, Erlang format
  # strings through io_lib (as Elixir's handler does). A supervisor's progress report shows
  # the child spec the application wrote (the pool's backend options, secret_env included):
  # kept apart as `{:elsewhere, what}`.
  defp raw_events(table) do
    for {_, event} <- :ets.tab2list(table) do
      case event do
        %{msg: {:report, %{label: {:supervisor, :progress}}}} ->
          {{:elsewhere, "a supervisor's progress report (the application's child spec)"},
           elixir_format(event)}

        %{msg: {:report, %{label: label}}} ->
          {"raw :logger event #{inspect(label)} (Elixir formatting)", elixir_format(event)}

        _ ->
          {"raw :logger event (Elixir formatting)", elixir_format(event)}
      end
    end
  end

  defp elixir_format(%{level: level, msg: msg}) do
    case msg do
      {:string, chardata} ->
        IO.chardata_to_string(chardata)

      {:report, report} ->
        message =
          case report do
            %{label: label} -> {label, report}
            _ -> {:logger, report}
          end

        case Logger.Translator.translate(:debug, level, :report, message) do
          {:ok, chardata} -> IO.chardata_to_string(chardata)
          {:ok, chardata, _meta} -> IO.chardata_to_string(chardata)
          _ -> inspect(report, limit: :infinity, printable_limit: :infinity)
        end

      {format, args} ->
        IO.chardata_to_string(:io_lib.format(format, args))
    end
  rescue
    e -> "unformattable event: #{Exception.message(e)}"
  end

  defp erlang_format(event) do
    :logger_formatter.format(event, %{
      single_line: true,
      depth: :unlimited,
      chars_limit: :unlimited
    })
    |> IO.chardata_to_string()
  rescue
    _ -> ""
  end

  # The runner pods' own output and the kubelet's lines about the namespace, but for the pods
  # in `printers` (which print their secrets on purpose).
  defp runner_logs(ns, printers) do
    dir = LocalCluster.info().state_dir
    mine? = fn text -> Enum.any?(printers, &String.contains?(text, &1)) end

    files =
      Path.wildcard(Path.join(dir, "**/*#{ns}*/**"), match_dot: true) ++
        Path.wildcard(Path.join(dir, "**/*#{ns}*"), match_dot: true)

    contents =
      for file <- Enum.uniq(files),
          not mine?.(file),
          File.regular?(file),
          {:ok, text} <- [File.read(file)],
          do: text

    kubelet = ns |> LocalCluster.kubelet_log() |> Enum.reject(mine?) |> Enum.join("\n")
    [kubelet | contents]
  end

  defp start_debug_pool!(opts) do
    name = :"scan_pool_#{System.unique_integer([:positive])}"

    start_supervised!(
      {FLAME.Pool,
       name: name,
       backend: {FLAMEK8sBackend, opts},
       min: 0,
       max: 1,
       max_concurrency: 10,
       boot_timeout: 30_000,
       idle_shutdown_after: 60_000,
       log: :debug}
    )

    name
  end

  defp rand, do: Base.encode32(:crypto.strong_rand_bytes(15), padding: false)

  defp excerpt(text, secret) do
    [before | _] = String.split(text, secret, parts: 2)
    String.slice(before, -60, 60) <> "<SECRET>"
  end
end
