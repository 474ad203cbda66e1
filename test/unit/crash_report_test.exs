defmodule FLAMEK8sBackend.CrashReportTest do
  # A FLAME Runner holds the backend state from init/1 until its boot ends; if it crashes in
  # between, OTP reports its state (and a function clause's arguments) in the crash report.
  # Erlang's :logger_formatter prints them with ~p, without Elixir's Inspect: the cookie and
  # the :secret_env values must not be in there either.
  use ExUnit.Case, async: true

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

  test "the secrets are in the state, but no crash report shows them", %{tmp_dir: dir} do
    state = init_state!(dir)
    # What the boot will create does hold them: the test would pass for nothing otherwise.
    %{secret: secret} = FLAMEK8sBackend.runner_manifests(state)
    assert secret["stringData"]["API_KEY"] == @secret_value
    assert secret["stringData"]["RELEASE_COOKIE"] == Atom.to_string(Node.get_cookie())

    {:ok, pid} = GenServer.start(Holder, state)
    handler = :"capture_#{System.unique_integer([:positive])}"
    :ok = :logger.add_handler(handler, Capture, %{config: %{test: self(), pid: pid}})
    on_exit(fn -> :logger.remove_handler(handler) end)

    elixir_log =
      capture_log(fn ->
        ref = Process.monitor(pid)
        catch_exit(GenServer.call(pid, :crash))
        assert_receive {:DOWN, ^ref, :process, ^pid, {:function_clause, _}}
        # Logger's own handler writes what it received by now; flush waits for it.
        Logger.flush()
      end)

    # gen_server's error report, then proc_lib's crash report.
    assert_receive {:formatted, server_report}
    assert_receive {:formatted, crash_report}

    for text <- [server_report, crash_report] do
      # The state was printed (the runner's name is in it), the secrets were not.
      assert text =~ state.runner_name
      refute_secrets(text)
    end

    assert server_report =~ "terminating"
    refute_secrets(elixir_log)
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
