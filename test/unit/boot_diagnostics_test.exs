defmodule FLAMEK8sBackend.BootDiagnosticsTest do
  # Kubernetes' story of a failed boot, read from a fake API server that answers as the real
  # one does: an event list (JSON), a container log (text/plain), 403s without the RBAC verbs.
  use ExUnit.Case, async: true

  @moduletag :unit
  doctest FLAMEK8sBackend.BootDiagnostics

  Code.require_file("support/fake_api_server.exs", __DIR__)

  alias FLAMEK8sBackend.{BootDiagnostics, BootError, Kube}
  alias FLAMEK8sBackend.Test.FakeApiServer

  @pod "web-1-flame-x7k2p"
  @events_path "/api/v1/namespaces/prod/events"
  @log_path "/api/v1/namespaces/prod/pods/web-1-flame-x7k2p/log"
  @opts [
    namespace: "prod",
    pod: @pod,
    app_container: "web",
    redact: ["c00kie-s3cret", "k3y-s3cr3t"]
  ]

  @exited %BootError{
    phase: :container_start,
    pod: "prod/#{@pod}",
    reason: {:container_exited, %{container: "web", exit_code: 1, reason: "Error"}}
  }

  @backoff ~s({"type":"Warning","reason":"BackOff","message":"Back-off pulling image","count":4,) <>
             ~s("lastTimestamp":"2025-01-01T12:00:09Z","source":{"component":"kubelet"}})

  # As events.k8s.io writes them: eventTime and series, no lastTimestamp, count or source.
  @failed_mount ~s({"type":"Warning","reason":"FailedMount","message":"secret \\"c00kie-s3cret\\" not found",) <>
                  ~s("eventTime":"2025-01-01T12:00:01.000000Z","reportingComponent":"kubelet",) <>
                  ~s("series":{"count":2,"lastObservedTime":"2025-01-01T12:00:05.000000Z"}})

  defp forbidden(what),
    do:
      {403,
       ~s({"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403,) <>
         ~s("message":"#{what} is forbidden: User \\"system:serviceaccount:prod:web\\" cannot get it"})}

  defp kube!(answer) do
    url = FakeApiServer.start!(self(), answer)
    {:ok, kube} = Kube.connect(url: url, token: "t0ken", request_timeout: 5_000)
    kube
  end

  test "events oldest first (both API shapes), the log's last lines, secret values redacted" do
    test = self()

    kube =
      kube!(fn
        "GET", @events_path, query ->
          send(test, {:events_query, query})
          {200, ~s({"kind":"EventList","items":[#{@backoff},#{@failed_mount}]})}

        "GET", @log_path, query ->
          send(test, {:log_query, query})
          {200, "text/plain", "\nstarting\nAPI key k3y-s3cr3t rejected\n** (RuntimeError) boom\n"}
      end)

    error = BootDiagnostics.add(kube, @exited, @opts)

    assert {error.phase, error.reason} == {@exited.phase, @exited.reason}

    assert [
             %{reason: "FailedMount", count: 2, source: "kubelet", message: mount},
             %{reason: "BackOff", count: 4, type: "Warning", last_seen: "2025-01-01T12:00:09Z"}
           ] = error.events

    assert mount == ~s(secret "[redacted]" not found)

    assert error.log == %{
             container: "web",
             lines: ["starting", "API key [redacted] rejected", "** (RuntimeError) boom"]
           }

    assert_received {:events_query,
                     %{"fieldSelector" => "involvedObject.kind=Pod,involvedObject.name=" <> @pod}}

    assert_received {:log_query, %{"container" => "web", "tailLines" => "20"}}
    refute Exception.message(error) =~ "k3y-s3cr3t"
    refute Exception.message(error) =~ "c00kie-s3cret"
  end

  test "without the RBAC verbs: a warning once per VM says which verb is missing; the errors stay short" do
    # A namespace of its own: the warning is once per VM and namespace, and other tests may
    # have had theirs.
    namespace = "rbac-#{System.unique_integer([:positive])}"
    events_path = "/api/v1/namespaces/#{namespace}/events"
    log_path = "/api/v1/namespaces/#{namespace}/pods/#{@pod}/log"

    kube =
      kube!(fn
        "GET", ^events_path -> forbidden("events")
        "GET", ^log_path -> forbidden("pods \\\"#{@pod}\\\"")
      end)

    opts = Keyword.put(@opts, :namespace, namespace)

    {errors, log} =
      ExUnit.CaptureLog.with_log(fn ->
        for _ <- 1..2, do: BootDiagnostics.add(kube, @exited, opts)
      end)

    for error <- errors do
      assert {error.phase, error.reason} == {@exited.phase, @exited.reason}
      assert {error.events, error.log} == {:forbidden, :forbidden}
      refute Exception.message(error) =~ "events"
      refute Exception.message(error) =~ "log"
    end

    events_warning = ~s(the RBAC verb "list" on "events" is missing)
    log_warning = ~s(the RBAC verb "get" on "pods/log" is missing)
    assert length(String.split(log, events_warning)) == 2, log
    assert length(String.split(log, log_warning)) == 2, log
    assert log =~ "namespace #{namespace}"
    assert log =~ "events is forbidden: User"
  end

  test "an API server that does not answer within the budget does not hold the boot's error" do
    test = self()

    kube =
      kube!(fn _method, _path ->
        send(test, {:holding, self()})

        receive do
          :never -> {200, "{}"}
        end
      end)

    started = System.monotonic_time(:millisecond)
    error = BootDiagnostics.add(kube, @exited, Keyword.put(@opts, :budget, 300))

    assert System.monotonic_time(:millisecond) - started < 3_000
    assert error.events == {:unreadable, "no answer within 300 ms"}
    assert error.log == {:unreadable, "no answer within 300 ms"}
  end

  test "a log only for a container that exited, a failed pod or a runner that never connected" do
    test = self()

    kube =
      kube!(fn
        "GET", @events_path -> {200, ~s({"items":[]})}
        "GET", @log_path -> send(test, :log_read) && {200, "text/plain", ""}
      end)

    unschedulable = %BootError{phase: :scheduling, reason: {:unschedulable, "0/1"}}
    assert %{events: [], log: nil} = BootDiagnostics.add(kube, unschedulable, @opts)
    refute_received :log_read

    never_connected = %BootError{phase: :remote_up, reason: {:timeout, %{waited_ms: 1}}}

    assert %{log: %{container: "web", lines: []}} =
             BootDiagnostics.add(kube, never_connected, @opts)

    assert_received :log_read
  end

  test "no pod, no questions: nothing is asked when the pod was never created" do
    kube = kube!(fn _method, _path -> flunk("no request expected") end)
    forbidden = %BootError{phase: :create_pod, reason: {:api, 403, "Forbidden", "no"}}
    assert BootDiagnostics.add(kube, forbidden, @opts) == forbidden
    refute_received {:api_request, _, _, _}
  end

  test "the reason's own texts are redacted like the events: a termination message, a waiting detail, an API message" do
    kube =
      kube!(fn
        "GET", @events_path -> {200, ~s({"items":[]})}
        "GET", @log_path -> {200, "text/plain", ""}
      end)

    exited = %{
      @exited
      | reason:
          {:container_exited,
           %{container: "web", exit_code: 1, reason: "Error", message: "bad cookie c00kie-s3cret"}}
    }

    config = %BootError{
      phase: :container_start,
      pod: "prod/#{@pod}",
      reason:
        {:container_config,
         %{
           reason: "CreateContainerConfigError",
           container: "web",
           message: "couldn't find key k3y-s3cr3t in Secret prod/web"
         }}
    }

    waiting = %BootError{
      phase: :container_start,
      pod: "prod/#{@pod}",
      reason: {:timeout, %{waited_ms: 30_000, detail: "ErrImagePull: registry k3y-s3cr3t"}}
    }

    # No pod was created, so nothing is read; the API server's message is still redacted.
    rejected = %BootError{
      phase: :create_secret,
      reason: {:api, 422, "Invalid", "data[API_KEY]: Invalid value: \"c00kie-s3cret\""}
    }

    for error <- [exited, config, waiting, rejected] do
      redacted = BootDiagnostics.add(kube, error, @opts)
      text = inspect(redacted.reason) <> Exception.message(redacted)

      refute text =~ "c00kie-s3cret"
      refute text =~ "k3y-s3cr3t"
      assert text =~ "[redacted]"
      assert redacted.phase == error.phase
    end

    assert BootDiagnostics.add(kube, exited, @opts).reason ==
             {:container_exited,
              %{container: "web", exit_code: 1, reason: "Error", message: "bad cookie [redacted]"}}
  end
end
