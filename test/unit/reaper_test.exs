defmodule FLAMEK8sBackend.ReaperTest do
  # The reaper against a fake API server: every request it makes reaches the test process
  # (before the answer is sent), and each answer is the one the test scripted.
  use ExUnit.Case, async: true

  @moduletag :unit

  Code.require_file("support/fake_api_server.exs", __DIR__)

  import ExUnit.CaptureLog
  import FLAMEK8sBackend.Test.ClusterCase, only: [eventually: 2]

  alias FLAMEK8sBackend.{Kube, Reaper}
  alias FLAMEK8sBackend.Test.{CleanupEvents, FakeApiServer}

  @token "s3cr3t-reaper-token"
  @ns "prod"
  @pod_path "/api/v1/namespaces/prod/pods/web-1-flame-x7k2p"
  @secret_path "/api/v1/namespaces/prod/secrets/web-1-flame-x7k2p"

  @success ~s({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success"})

  defp failure(code, reason),
    do:
      {code,
       ~s({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",) <>
         ~s("message":"#{reason} for the test","reason":"#{reason}","code":#{code}})}

  defp kube!(answer \\ fn _method, _path -> {200, @success} end) do
    url = FakeApiServer.start!(self(), answer)
    {:ok, kube} = Kube.connect(url: url, token: @token, request_timeout: 5_000)
    kube
  end

  # The FLAME Runner process the reaper watches.
  defp runner do
    spawn(fn ->
      receive do
        :stop -> :ok
      end
    end)
  end

  # A reaper of a runner whose secret and pod were created.
  defp start_reaper!(kube, owner, log \\ false) do
    {:ok, reaper} = Reaper.start(kube, @ns, owner, log, 60_000)

    for kind <- [:secret, :pod] do
      :ok = Reaper.track(reaper, kind, "web-1-flame-x7k2p")
      :ok = Reaper.created(reaper, kind, {:ok, %{}})
    end

    {reaper, Process.monitor(reaper)}
  end

  test "the Runner going down mid-boot: pod deleted at once, then its secret" do
    owner = runner()
    {reaper, monitor} = start_reaper!(kube!(), owner)

    send(owner, :stop)

    assert_receive {:api_request, "DELETE", @pod_path, body}, 5_000
    assert body =~ ~s("gracePeriodSeconds":0)
    assert_receive {:api_request, "DELETE", @secret_path, _}, 5_000
    assert_receive {:DOWN, ^monitor, :process, ^reaper, :normal}, 5_000
  end

  test "the terminator of a booted runner going down: the pod keeps its own grace period" do
    owner = runner()
    terminator = runner()
    {reaper, monitor} = start_reaper!(kube!(), owner)
    :ok = Reaper.monitor(reaper, terminator)

    send(terminator, :stop)

    assert_receive {:api_request, "DELETE", @pod_path, body}, 5_000
    refute body =~ "gracePeriodSeconds"
    assert_receive {:api_request, "DELETE", @secret_path, _}, 5_000
    assert_receive {:DOWN, ^monitor, :process, ^reaper, :normal}, 5_000
  end

  test "a booted runner whose node is still up (idle shutdown): its own cleanup first, then the reaper's" do
    # FLAME's terminator tells the parent first (its Runner stops), then stops its own VM.
    {peer, _runner_node, reaper, monitor} = booted_runner_stopping!()
    refute_received {:api_request, _, _, _}

    :ok = :peer.stop(peer)

    assert_receive {:api_request, "DELETE", @pod_path, body}, 5_000
    refute body =~ "gracePeriodSeconds"
    assert_receive {:api_request, "DELETE", @secret_path, _}, 5_000
    assert_receive {:DOWN, ^monitor, :process, ^reaper, :normal}, 5_000
  end

  for {deleted, left} <- [{[:pod, :secret], []}, {[:pod], [:secret]}] do
    test "a runner that deleted #{inspect(deleted)} itself and says so: the reaper deletes only #{inspect(left)}" do
      {peer, runner_node, reaper, monitor} = booted_runner_stopping!()

      # What SelfDelete.report/3 sends from the runner node; erpc returns after the send, so
      # the message travels ahead of the node's going down.
      deletions =
        for kind <- unquote(deleted),
            do: %{kind: kind, name: "web-1-flame-x7k2p", result: :ok, duration_us: 1_000}

      msg = {Reaper, :self_deleted, deletions}
      :erpc.call(runner_node, :erlang, :send, [reaper, msg])
      :ok = :peer.stop(peer)

      assert_receive {:DOWN, ^monitor, :process, ^reaper, :normal}, 5_000

      sent =
        for {:api_request, "DELETE", path, _} <- Process.info(self(), :messages) |> elem(1),
            do: path

      assert sent == for(kind <- unquote(left), do: %{pod: @pod_path, secret: @secret_path}[kind])
    end
  end

  test "a runner's report of its own deletes: their events on the parent (deleter: :runner), and the reaper deletes only what is left" do
    events = attach_cleanup_events!()
    {peer, runner_node, reaper, monitor} = booted_runner_stopping!()

    # What SelfDelete.report/3 sends from the runner node: its pod deleted, its secret not
    # (a runner account without `delete` on secrets).
    deletions = [
      %{
        kind: :secret,
        name: "web-1-flame-x7k2p",
        result: {:error, {:api, 403, "Forbidden", "no"}},
        duration_us: 1_500
      },
      %{kind: :pod, name: "web-1-flame-x7k2p", result: :ok, duration_us: 2_500}
    ]

    :erpc.call(runner_node, :erlang, :send, [reaper, {Reaper, :self_deleted, deletions}])
    :ok = :peer.stop(peer)
    assert_receive {:DOWN, ^monitor, :process, ^reaper, :normal}, 5_000

    native = &System.convert_time_unit(&1, :microsecond, :native)

    assert [
             {%{duration: secret_duration, attempts: 1},
              %{
                deleter: :runner,
                trigger: :system_shutdown,
                kind: :secret,
                namespace: @ns,
                name: "web-1-flame-x7k2p",
                result: {:error, {:api, 403, "Forbidden", "no"}}
              }},
             {%{duration: pod_duration, attempts: 1},
              %{
                deleter: :runner,
                trigger: :system_shutdown,
                kind: :pod,
                namespace: @ns,
                name: "web-1-flame-x7k2p",
                result: :ok
              }},
             {%{attempts: 1},
              %{deleter: :reaper, trigger: :runner_down, kind: :secret, result: :ok}}
           ] = events.()

    assert {secret_duration, pod_duration} == {native.(1_500), native.(2_500)}

    # Only the secret, which the runner could not delete, is deleted again.
    assert [@secret_path] =
             for(
               {:api_request, "DELETE", path, _} <- Process.info(self(), :messages) |> elem(1),
               do: path
             )
  end

  # Attaches a handler for this module's runner's cleanup events; the function returns those
  # received so far, as {measurements, metadata}, in order.
  defp attach_cleanup_events! do
    CleanupEvents.forward!(&match?(%{name: "web-1-flame-x7k2p"}, &1))

    fn ->
      for {:cleanup, measurements, meta} <- Process.info(self(), :messages) |> elem(1),
          do: {measurements, meta}
    end
  end

  # A booted runner on a VM of its own (a peer node) whose FLAME Runner has stopped while its
  # node is still up, as at an idle shutdown: the reaper waits for the node to go down.
  defp booted_runner_stopping! do
    {:ok, peer, runner_node} =
      :peer.start_link(%{
        name: :"reaper_runner_#{System.unique_integer([:positive])}",
        host: ~c"127.0.0.1",
        longnames: true,
        args: [~c"-setcookie", Atom.to_charlist(Node.get_cookie())]
      })

    owner = runner()
    terminator = Node.spawn(runner_node, :timer, :sleep, [:infinity])
    {reaper, monitor} = start_reaper!(kube!(), owner)
    :ok = Reaper.monitor(reaper, terminator)
    stop_owner(owner)
    # Polled, each check a call into the reaper: our DOWN for the owner does not order the
    # reaper's (an exiting process may yield between sending its monitors' signals), so
    # stop_owner/1 alone does not make the reaper's state current.
    eventually(fn -> :sys.get_state(reaper).waiting_for_node? end, 5_000)
    {peer, runner_node, reaper, monitor}
  end

  # Stops the FLAME Runner stand-in and returns once it is down.
  defp stop_owner(owner) do
    ref = Process.monitor(owner)
    send(owner, :stop)
    assert_receive {:DOWN, ^ref, :process, ^owner, :normal}, 5_000
  end

  test "reap_now/1 returns once pod and secret are deleted, and the reaper is done" do
    {reaper, monitor} = start_reaper!(kube!(), runner())

    assert Reaper.reap_now(reaper) == :ok

    assert_received {:api_request, "DELETE", @pod_path, _}
    assert_received {:api_request, "DELETE", @secret_path, _}
    assert_receive {:DOWN, ^monitor, :process, ^reaper, :normal}, 5_000
  end

  test "what was never tracked is never deleted" do
    owner = runner()
    {:ok, reaper} = Reaper.start(kube!(), @ns, owner, false, 60_000)
    monitor = Process.monitor(reaper)

    send(owner, :stop)

    assert_receive {:DOWN, ^monitor, :process, ^reaper, :normal}, 5_000
    refute_received {:api_request, _, _, _}
  end

  test "what the API server refused to create (a 4xx but 409) is never deleted; a 409 is ours" do
    {:ok, reaper} = Reaper.start(kube!(), @ns, runner(), false, 60_000)
    monitor = Process.monitor(reaper)
    :ok = Reaper.track(reaper, :secret, "web-1-flame-x7k2p")
    :ok = Reaper.created(reaper, :secret, {:error, {:api, 409, "AlreadyExists", "exists"}})
    :ok = Reaper.track(reaper, :pod, "web-1-flame-x7k2p")
    :ok = Reaper.created(reaper, :pod, {:error, {:api, 422, "Invalid", "no"}})

    assert Reaper.reap_now(reaper) == :ok

    assert_received {:api_request, "DELETE", @secret_path, _}
    refute_received {:api_request, "DELETE", @pod_path, _}
    assert_receive {:DOWN, ^monitor, :process, ^reaper, :normal}, 5_000
  end

  test "what it tracks is registered for the sweep while it lives" do
    {reaper, monitor} = start_reaper!(kube!(), runner())
    assert Reaper.tracked?(@ns, :pod, "web-1-flame-x7k2p")
    assert Reaper.tracked?(@ns, :secret, "web-1-flame-x7k2p")
    refute Reaper.tracked?(@ns, :pod, "web-1-flame-other")

    assert Reaper.reap_now(reaper) == :ok
    assert_receive {:DOWN, ^monitor, :process, ^reaper, :normal}, 5_000
  end

  # A client whose pod DELETEs fail (500) `failures` times, then succeed; and their counter.
  defp kube_failing_pod_deletes!(failures) do
    attempts = :counters.new(1, [])

    kube =
      kube!(fn
        "DELETE", @pod_path ->
          :counters.add(attempts, 1, 1)

          if :counters.get(attempts, 1) <= failures,
            do: failure(500, "InternalError"),
            else: {200, @success}

        _method, _path ->
          {200, @success}
      end)

    {kube, attempts}
  end

  test "a failed delete is retried; its cleanup event counts the tries and the time they took" do
    {kube, _attempts} = kube_failing_pod_deletes!(2)
    CleanupEvents.forward!(&match?(%{deleter: :reaper, name: "web-1-flame-x7k2p"}, &1))

    {reaper, _monitor} = start_reaper!(kube, runner(), :info)

    log = capture_log(fn -> assert Reaper.reap_now(reaper) == :ok end)

    for _ <- 1..3, do: assert_received({:api_request, "DELETE", @pod_path, _})
    assert_received {:api_request, "DELETE", @secret_path, _}
    assert log =~ "deleted runner pod prod/web-1-flame-x7k2p"
    # The log is the whole VM's (other test modules run alongside): only this runner's lines.
    refute log =~ ~r"could not delete runner \w+ prod/web-1-flame-x7k2p"

    # Three tries of the pod, with the back-offs of 250 and 500 ms between them.
    assert_received {:cleanup, %{attempts: 3, duration: duration}, %{kind: :pod, result: :ok}}
    assert System.convert_time_unit(duration, :native, :millisecond) >= 750
    assert_received {:cleanup, %{attempts: 1}, %{kind: :secret, result: :ok}}
  end

  test "an API server that keeps failing: reap_now answers after three tries, the deletes go on until it answers" do
    {kube, attempts} = kube_failing_pod_deletes!(4)

    {reaper, monitor} = start_reaper!(kube, runner(), :info)

    log =
      capture_log(fn ->
        assert Reaper.reap_now(reaper) == :ok
        assert :counters.get(attempts, 1) == 3
        assert Process.alive?(reaper)
        assert_receive {:DOWN, ^monitor, :process, ^reaper, :normal}, 10_000
      end)

    for _ <- 1..5, do: assert_received({:api_request, "DELETE", @pod_path, _})
    assert log =~ "deleted runner pod prod/web-1-flame-x7k2p"
  end

  test "reap_now/2 answers by its timeout; the deletes go on" do
    test = self()

    kube =
      kube!(fn
        "DELETE", @pod_path ->
          send(test, {:pod_delete_seen, self()})

          receive do
            :answer -> {200, @success}
          end

        _method, _path ->
          {200, @success}
      end)

    {reaper, monitor} = start_reaper!(kube, runner())

    assert Reaper.reap_now(reaper, 100) == :ok
    assert_receive {:pod_delete_seen, server}, 5_000
    assert Process.alive?(reaper)
    send(server, :answer)
    assert_receive {:DOWN, ^monitor, :process, ^reaper, :normal}, 5_000
    assert_received {:api_request, "DELETE", @secret_path, _}
  end

  test "a delete that RBAC forbids is not retried; the warning names it, never the token" do
    kube =
      kube!(fn
        "DELETE", @pod_path -> failure(403, "Forbidden")
        _method, _path -> {200, @success}
      end)

    {reaper, _monitor} = start_reaper!(kube, runner())

    log = capture_log(fn -> assert Reaper.reap_now(reaper) == :ok end)

    assert_received {:api_request, "DELETE", @pod_path, _}
    assert_received {:api_request, "DELETE", @secret_path, _}
    refute_received {:api_request, "DELETE", @pod_path, _}
    assert log =~ "could not delete runner pod prod/web-1-flame-x7k2p: API error 403 Forbidden"
    refute log =~ @token
  end

  test "an unexpected message is ignored: the reaper still deletes when the Runner goes down" do
    owner = runner()
    {reaper, monitor} = start_reaper!(kube!(), owner)

    log =
      capture_log([level: :debug], fn ->
        send(reaper, {:some, :stray, "message with s3cr3t-stuff"})
        send(reaper, :stray)
        send(owner, :stop)

        assert_receive {:api_request, "DELETE", @pod_path, _}, 5_000
        assert_receive {:api_request, "DELETE", @secret_path, _}, 5_000
        assert_receive {:DOWN, ^monitor, :process, ^reaper, :normal}, 5_000
      end)

    # Logged by its shape only: a stray message may hold anything.
    assert log =~ "reaper ignored an unexpected message: a 3-tuple tagged :some"
    refute log =~ "s3cr3t-stuff"
  end

  test "a reaper that crashes hands its runner on: the pod and secret are still deleted" do
    owner = runner()
    {reaper, monitor} = start_reaper!(kube!(), owner)

    # A call no clause of the reaper handles crashes it.
    capture_log(fn ->
      catch_exit(GenServer.call(reaper, :no_such_call))
      assert_receive {:DOWN, ^monitor, :process, ^reaper, {:function_clause, _}}, 5_000
    end)

    # Its successor, registered for the sweep before the crashed one was gone.
    [successor] =
      for {pid, _} <-
            Registry.lookup(FLAMEK8sBackend.ReaperRegistry, {@ns, :pod, "web-1-flame-x7k2p"}),
          pid != reaper,
          do: pid

    successor_monitor = Process.monitor(successor)
    send(owner, :stop)

    assert_receive {:api_request, "DELETE", @pod_path, _}, 5_000
    assert_receive {:api_request, "DELETE", @secret_path, _}, 5_000
    assert_receive {:DOWN, ^successor_monitor, :process, ^successor, :normal}, 5_000
  end
end
