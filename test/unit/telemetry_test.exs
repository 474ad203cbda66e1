defmodule FLAMEK8sBackend.TelemetryTest do
  # The events against the :telemetry stand-in (test/telemetry_standin): each test attaches
  # its own handler and tells its events apart by a runner name of its own.
  use ExUnit.Case, async: true

  @moduletag :unit
  doctest FLAMEK8sBackend.Telemetry

  alias FLAMEK8sBackend.{BootError, Telemetry}

  @boot_events [
    [:flame_k8s_backend, :boot, :start],
    [:flame_k8s_backend, :boot, :stop],
    [:flame_k8s_backend, :boot, :exception]
  ]

  setup context do
    id = {__MODULE__, context.test}
    test = self()

    :ok =
      :telemetry.attach_many(
        id,
        @boot_events ++ [[:flame_k8s_backend, :cleanup, :delete]],
        fn event, measurements, metadata, _config ->
          send(test, {:event, event, measurements, metadata})
        end,
        nil
      )

    on_exit(fn -> :telemetry.detach(id) end)
    %{name: "web-1-flame-#{System.unique_integer([:positive])}"}
  end

  defp meta(name),
    do: %{pod: "prod/#{name}", namespace: "prod", runner_name: name, parent_node: node()}

  # Only this test's events: other tests emit concurrently.
  defp assert_event(event, name) do
    assert_receive {:event, ^event, measurements, %{runner_name: ^name} = metadata}
    {measurements, metadata}
  end

  test "without :telemetry loaded nothing is emitted, and nothing fails" do
    refute Code.ensure_loaded?(:no_telemetry_here)
    assert Telemetry.emit(:no_telemetry_here, [:flame_k8s_backend, :x], %{}, %{}) == :ok
  end

  test "a boot that succeeds: :start, then :stop with the duration and each phase's" do
    terminator = self()
    timings = %{created: 12, running: 45, remote_up: 400}

    assert {:ok, ^terminator, :state} =
             Telemetry.boot_span(
               meta(name = "a-#{System.unique_integer([:positive])}"),
               fn ->
                 {:ok, terminator, :state}
               end,
               fn {:ok, _, :state} -> timings end
             )

    {start, start_meta} = assert_event([:flame_k8s_backend, :boot, :start], name)
    assert is_integer(start.system_time) and is_integer(start.monotonic_time)
    assert %{pod: "prod/" <> ^name, namespace: "prod", telemetry_span_context: ctx} = start_meta

    {stop, stop_meta} = assert_event([:flame_k8s_backend, :boot, :stop], name)
    assert stop_meta.telemetry_span_context == ctx
    assert stop_meta.runner_node == node()
    ms = &System.convert_time_unit(&1, :millisecond, :native)
    assert stop.create_duration == ms.(12)
    assert stop.pod_start_duration == ms.(33)
    # The rest of the duration: the phases add up to it.
    assert stop.remote_up_duration == stop.duration - ms.(45)
    refute_received {:event, [:flame_k8s_backend, :boot, :exception], _, %{runner_name: ^name}}
  end

  test "a boot that fails: :exception with phase, reason and the error; the result unchanged", %{
    name: name
  } do
    error = %BootError{phase: :scheduling, reason: {:unschedulable, "0/3 nodes"}, pod: "prod/x"}

    assert {:error, ^error} =
             Telemetry.boot_span(meta(name), fn -> {:error, error} end, fn _ -> flunk() end)

    assert_event([:flame_k8s_backend, :boot, :start], name)
    {measurements, metadata} = assert_event([:flame_k8s_backend, :boot, :exception], name)
    assert measurements.duration >= 0

    assert %{kind: :error, phase: :scheduling, reason: {:unschedulable, "0/3 nodes"}} = metadata
    assert metadata.error == error
    assert metadata.stacktrace == []
    assert metadata.cached == false
    refute_received {:event, [:flame_k8s_backend, :boot, :stop], _, %{runner_name: ^name}}
  end

  test "a failure answered from the back-off cache: :exception with cached: true", %{name: name} do
    error = %BootError{
      phase: :container_start,
      reason: {:image_pull, %{reason: "ErrImagePull", image: "x", message: "not found"}},
      pod: "prod/earlier",
      cached: %{failures: 1, age_ms: 300, retry_in_ms: 1_700}
    }

    assert {:error, ^error} =
             Telemetry.boot_span(meta(name), fn -> {:error, error} end, fn _ -> flunk() end)

    {_, metadata} = assert_event([:flame_k8s_backend, :boot, :exception], name)
    assert %{cached: true, phase: :container_start, reason: {:image_pull, _}} = metadata
    assert metadata.error.pod == "prod/earlier"
  end

  test "a boot that raises: :exception with kind, reason and stacktrace, then the raise", %{
    name: name
  } do
    assert_raise RuntimeError, "boom", fn ->
      Telemetry.boot_span(meta(name), fn -> raise "boom" end, fn _ -> flunk() end)
    end

    {_, metadata} = assert_event([:flame_k8s_backend, :boot, :exception], name)
    assert %{kind: :error, reason: %RuntimeError{message: "boom"}, phase: nil} = metadata
    assert metadata.cached == false
    assert [_ | _] = metadata.stacktrace
  end

  test "cleanup: one event per delete with who, why, what, the result and the attempts", %{
    name: name
  } do
    meta = %{deleter: :reaper, trigger: :runner_down, kind: :pod, namespace: "prod", name: name}

    assert Telemetry.cleanup(meta, fn -> {{:error, {:timeout, 5}}, 3} end) ==
             {:error, {:timeout, 5}}

    assert_receive {:event, [:flame_k8s_backend, :cleanup, :delete], measurements,
                    %{name: ^name} = metadata}

    assert measurements.attempts == 3
    assert measurements.duration >= 0
    assert metadata == Map.put(meta, :result, {:error, {:timeout, 5}})
  end
end
