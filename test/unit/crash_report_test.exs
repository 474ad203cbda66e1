defmodule FLAMEK8sBackend.CrashReportTest do
  # A FLAME Runner holds the backend state from init/1 until its boot ends; if it crashes in
  # between, OTP reports its state (and a function clause's arguments) in the crash report.
  # Elixir's Logger translates OTP's reports with Inspect and, by default, drops proc_lib's crash
  # report (`handle_sasl_reports: false`); an app that turns its translator off, or an Erlang
  # handler of its own, gets both reports raw, printed by :logger_formatter with ~p, without
  # Elixir's Inspect. The cookie and the :secret_env values must not be in any of them.
  # Not async: the second case swaps Logger's primary filter, which is VM-wide.
  use ExUnit.Case, async: false

  @moduletag :unit
  @moduletag :tmp_dir

  Code.require_file("support/fake_api_server.exs", __DIR__)

  import ExUnit.CaptureLog

  alias FLAMEK8sBackend.Test.FakeApiServer

  @secret_value "k3y-s3cr3t-in-secret-env"

  defmodule Holder do
    # Stands in for FLAME.Runner: a GenServer whose state holds the backend state.
    use GenServer

    @impl true
    def init(backend_state), do: {:ok, %{backend_state: backend_state}}

    @impl true
    # No clause matches :crash: the function clause error carries the state as an argument.
    def handle_call(:ping, _from, state), do: {:reply, :pong, state}
  end

  defmodule Capture do
    # An Erlang :logger handler: formats each event of one process with :logger_formatter
    # (no depth or size limit, so nothing is cut off) and sends the text to the test.
    @spec log(:logger.log_event(), :logger.handler_config()) :: :ok
    def log(%{meta: meta} = event, %{config: %{test: test, pid: pid}}) do
      if meta[:pid] == pid do
        text = :logger_formatter.format(event, %{single_line: false, template: [:msg, "\n"]})
        send(test, {:formatted, IO.iodata_to_binary(text)})
      end

      :ok
    end
  end

  defp parent_json do
    ~s({"kind":"Pod","apiVersion":"v1","metadata":{"name":"web-1","namespace":"prod",) <>
      ~s("uid":"u-1"},"spec":{"containers":[{"name":"app","image":"app:1"}]}})
  end

  defp init_state!(dir) do
    url =
      FakeApiServer.start!(self(), fn
        "GET", "/api/v1/namespaces/prod/pods/web-1" ->
          {200, parent_json()}

        "GET", "/api/v1/namespaces/prod/pods" ->
          {200, ~s({"kind":"PodList","apiVersion":"v1","metadata":{},"items":[]})}
      end)

    kubeconfig = FakeApiServer.kubeconfig!(dir, url)

    {:ok, state} =
      FLAMEK8sBackend.init(
        parent_pod: {"prod", "web-1"},
        kubeconfig: kubeconfig,
        secret_env: %{"API_KEY" => @secret_value}
      )

    state
  end

  defp refute_secrets(text) do
    refute text =~ Atom.to_string(Node.get_cookie())
    refute text =~ @secret_value
  end

  # Crashes a Holder of the backend state; returns what the Capture handler got and what Elixir's
  # own handler logged.
  defp crash_holder!(state) do
    {:ok, pid} = GenServer.start(Holder, state)
    handler = :"capture_#{System.unique_integer([:positive])}"
    :ok = :logger.add_handler(handler, Capture, %{config: %{test: self(), pid: pid}})

    elixir_log =
      try do
        capture_log(fn ->
          ref = Process.monitor(pid)
          catch_exit(GenServer.call(pid, :crash))
          assert_receive {:DOWN, ^ref, :process, ^pid, {:function_clause, _}}
          # Logger's own handler writes what it received by now; flush waits for it.
          Logger.flush()
        end)
      after
        :logger.remove_handler(handler)
      end

    {collect_formatted([]), elixir_log}
  end

  # Handlers run in the logging process, before the Holder's DOWN: all reports are in.
  defp collect_formatted(acc) do
    receive do
      {:formatted, text} -> collect_formatted([text | acc])
    after
      0 -> Enum.reverse(acc)
    end
  end

  defp assert_state_printed_without_secrets(reports, state) do
    for text <- reports do
      # The state was printed (the runner's name is in it), the secrets were not.
      assert text =~ state.runner_name
      refute_secrets(text)
    end
  end

  test "the secrets are in the state, but no report of Elixir's Logger shows them", %{
    tmp_dir: dir
  } do
    state = init_state!(dir)
    # What the boot will create does hold them: the test would pass for nothing otherwise.
    %{secret: secret} = FLAMEK8sBackend.runner_manifests(state)
    assert secret["stringData"]["API_KEY"] == @secret_value
    assert secret["stringData"]["RELEASE_COOKIE"] == Atom.to_string(Node.get_cookie())

    {reports, elixir_log} = crash_holder!(state)
    # gen_server's error report, translated by Elixir (proc_lib's crash report is dropped).
    assert [server_report] = reports
    assert server_report =~ "terminating"
    assert_state_printed_without_secrets(reports, state)
    refute_secrets(elixir_log)
  end

  test "nor do OTP's raw reports, printed by :logger_formatter with ~p", %{tmp_dir: dir} do
    state = init_state!(dir)
    {:ok, translator} = primary_filter(:logger_translator)
    :ok = :logger.remove_primary_filter(:logger_translator)
    on_exit(fn -> :logger.add_primary_filter(:logger_translator, translator) end)

    {reports, elixir_log} = crash_holder!(state)
    # gen_server's error report, then proc_lib's crash report.
    assert [server_report, crash_report] = reports
    assert server_report =~ "terminating"
    assert crash_report =~ "crash_report" or crash_report =~ "crasher"
    assert_state_printed_without_secrets(reports, state)
    refute_secrets(elixir_log)
  end

  defp primary_filter(id) do
    case List.keyfind(:logger.get_primary_config().filters, id, 0) do
      {^id, filter} -> {:ok, filter}
      nil -> :error
    end
  end

  test "an exit or an error raised with the state shows no secret either", %{tmp_dir: dir} do
    state = init_state!(dir)

    for text <- [
          inspect(state),
          Exception.format_exit({:boom, state}),
          Exception.format(:error, %FunctionClauseError{args: [state]}, []),
          to_string(:io_lib.format(~c"~p", [state]))
        ] do
      refute_secrets(text)
    end
  end
end
