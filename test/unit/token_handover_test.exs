defmodule FLAMEK8sBackend.TokenHandoverTest do
  # The parent's side of a handed-over token (FLAMEK8sBackend.RunnerToken), started by the
  # runner's reaper, against a fake API server. The runner here is this VM (the terminator is
  # a local process), so the token lands in this VM's RunnerToken: not async.
  use ExUnit.Case, async: false

  @moduletag :unit

  Code.require_file("support/fake_api_server.exs", __DIR__)

  import ExUnit.CaptureLog
  import FLAMEK8sBackend.Test.ClusterCase, only: [eventually: 2]

  alias FLAMEK8sBackend.{Kube, Reaper, RunnerToken, WarnOnce}
  alias FLAMEK8sBackend.Test.FakeApiServer

  @ns "prod"
  @pod "web-1-flame-x7k2p"
  @token_path "/api/v1/namespaces/prod/serviceaccounts/flame-runner/token"
  @issued "tok-handed-over-123"
  @env %{"KUBERNETES_SERVICE_HOST" => "10.96.0.1", "FLAME_K8S_CA_CERT" => "CA"}

  setup do
    :persistent_term.erase({RunnerToken, :token})
    on_exit(fn -> :persistent_term.erase({RunnerToken, :token}) end)
  end

  defp issued(expires_in_s) do
    expires = DateTime.utc_now() |> DateTime.add(expires_in_s) |> DateTime.to_iso8601()

    {201,
     ~s({"kind":"TokenRequest","apiVersion":"authentication.k8s.io/v1",) <>
       ~s("status":{"token":"#{@issued}","expirationTimestamp":"#{expires}"}})}
  end

  defp forbidden do
    {403,
     ~s({"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403,) <>
       ~s("message":"serviceaccounts \\"flame-runner\\" is forbidden: cannot create resource"})}
  end

  defp parked,
    do:
      spawn(fn ->
        receive do
          :stop -> :ok
        end
      end)

  # The reaper of a runner whose pod was created, with tokens of "flame-runner", and its
  # owner (the FLAME Runner process). Killed when the test ends, its handover with it: a
  # handover left behind would hand this VM tokens during other tests.
  defp created_reaper!(answer) do
    url = FakeApiServer.start!(self(), answer)
    {:ok, kube} = Kube.connect(url: url, token: "parent-token", request_timeout: 5_000)
    owner = parked()
    {:ok, reaper} = Reaper.start(kube, @ns, owner, false, 60_000, "flame-runner")
    on_exit(fn -> kill_with_handover(reaper) end)
    :ok = Reaper.track(reaper, :pod, @pod)
    :ok = Reaper.created(reaper, :pod, {:ok, %{}})
    {reaper, owner}
  end

  # A handover still requesting when its reaper is killed would hand this VM a token during
  # the next test: both are gone before the test ends.
  defp kill_with_handover(reaper) do
    handover =
      try do
        :sys.get_state(reaper, 1_000).token_handover
      catch
        :exit, _ -> nil
      end

    for pid <- [reaper, handover], is_pid(pid) do
      monitor = Process.monitor(pid)
      Process.exit(pid, :kill)
      assert_receive {:DOWN, ^monitor, :process, ^pid, _}, 5_000
    end
  end

  # ... whose pod runs ...
  defp running_reaper!(answer) do
    {reaper, _owner} = created_reaper!(answer)
    :ok = Reaper.pod_running(reaper)
    reaper
  end

  # ... and whose runner is up, its terminator on this VM.
  defp booted_reaper!(answer) do
    reaper = running_reaper!(answer)
    :ok = Reaper.monitor(reaper, parked())
    reaper
  end

  test "a pod that never ran costs no token request" do
    {reaper, owner} = created_reaper!(fn _method, _path -> {200, ~s({"kind":"Status"})} end)
    monitor = Process.monitor(reaper)
    send(owner, :stop)

    assert_receive {:DOWN, ^monitor, :process, ^reaper, :normal}, 5_000
    assert_received {:api_request, "DELETE", _, _}
    refute_received {:api_request, "POST", @token_path, _}
  end

  test "the token is requested once the pod runs, and handed over once the runner is up" do
    reaper = running_reaper!(fn "POST", @token_path -> issued(3_600) end)

    assert_receive {:api_request, "POST", @token_path, body}, 5_000
    spec = JSON.decode!(body)["spec"]
    assert spec["boundObjectRef"] == %{"apiVersion" => "v1", "kind" => "Pod", "name" => @pod}
    assert spec["expirationSeconds"] == 3_600
    # Not up yet: nothing to hand over to.
    assert RunnerToken.kube_opts(@env) == :error

    :ok = Reaper.monitor(reaper, parked())
    eventually(fn -> match?({:ok, _}, RunnerToken.kube_opts(@env)) end, 5_000)
    assert {:ok, opts} = RunnerToken.kube_opts(@env)
    assert opts[:token] == @issued
  end

  test "a pod replaced during its boot gets a token of its own" do
    reaper = running_reaper!(fn "POST", @token_path -> issued(3_600) end)
    assert_receive {:api_request, "POST", @token_path, _}, 5_000

    :ok = Reaper.track(reaper, :pod, "web-1-flame-r2d2c3po")
    :ok = Reaper.created(reaper, :pod, {:ok, %{}})
    :ok = Reaper.pod_running(reaper)
    assert_receive {:api_request, "POST", @token_path, body}, 5_000
    assert JSON.decode!(body)["spec"]["boundObjectRef"]["name"] == "web-1-flame-r2d2c3po"
  end

  test "a token about to expire is renewed" do
    # The API server gives less than was asked for: 80 % of 1 s later comes the next request.
    booted_reaper!(fn "POST", @token_path -> issued(1) end)
    assert_receive {:api_request, "POST", @token_path, _}, 5_000
    assert_receive {:api_request, "POST", @token_path, _}, 5_000
  end

  test "a failed request is tried again" do
    counter = :counters.new(1, [])

    booted_reaper!(fn "POST", @token_path ->
      :counters.add(counter, 1, 1)

      if :counters.get(counter, 1) == 1,
        do: {500, ~s({"kind":"Status","code":500})},
        else: issued(3_600)
    end)

    assert_receive {:api_request, "POST", @token_path, _}, 5_000
    assert_receive {:api_request, "POST", @token_path, _}, 5_000
    eventually(fn -> match?({:ok, _}, RunnerToken.kube_opts(@env)) end, 5_000)
  end

  test "a parent that may not request tokens warns once per account and stops asking" do
    key = RunnerToken.forbidden_key(@ns, "flame-runner")
    WarnOnce.forget(key)
    on_exit(fn -> WarnOnce.forget(key) end)

    log =
      capture_log(fn ->
        booted_reaper!(fn "POST", @token_path -> forbidden() end)
        assert_receive {:api_request, "POST", @token_path, _}, 5_000
        eventually(fn -> WarnOnce.warned?(key) end, 5_000)

        booted_reaper!(fn "POST", @token_path -> forbidden() end)
        assert_receive {:api_request, "POST", @token_path, _}, 5_000
        # The handover's retry would come after 1 s.
        refute_receive {:api_request, "POST", @token_path, _}, 1_500
      end)

    assert [_one] = Regex.scan(~r/may not request tokens for runners/, log)
    assert log =~ "serviceaccounts/token"
    refute log =~ "parent-token"
    assert RunnerToken.kube_opts(@env) == :error
  end

  test "a reaper that crashes hands its runner on, the token handover with it" do
    reaper = booted_reaper!(fn "POST", @token_path -> issued(3_600) end)
    assert_receive {:api_request, "POST", @token_path, _}, 5_000
    monitor = Process.monitor(reaper)

    capture_log(fn ->
      catch_exit(GenServer.call(reaper, :no_such_call))
      assert_receive {:DOWN, ^monitor, :process, ^reaper, {:function_clause, _}}, 5_000
    end)

    # The successor requests a token of its own for the runner.
    assert_receive {:api_request, "POST", @token_path, _}, 5_000

    for {pid, _} <- Registry.lookup(FLAMEK8sBackend.ReaperRegistry, {@ns, :pod, @pod}),
        do: kill_with_handover(pid)
  end
end
