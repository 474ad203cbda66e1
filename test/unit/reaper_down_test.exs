defmodule FLAMEK8sBackend.ReaperDownTest do
  # Why a booted runner went, decided from what its follow forwards (FLAMEK8sBackend.Reaper.Down)
  # on a reaper's state: which changes make a :down, with which reason, once; and which ends
  # are orderly (no :down).
  use ExUnit.Case, async: true

  @moduletag :unit

  import ExUnit.CaptureLog

  alias FLAMEK8sBackend.Reaper.Down

  @disruption [:flame_k8s_backend, :runner, :disruption]
  @down [:flame_k8s_backend, :runner, :down]

  setup do
    id = {__MODULE__, make_ref()}
    test = self()
    # Only this test's runner: tests run concurrently.
    pod = "web-1-flame-#{System.unique_integer([:positive])}"

    :ok =
      :telemetry.attach_many(
        id,
        [@disruption, @down],
        fn event, _measurements, meta, _ ->
          if meta.runner_name == pod, do: send(test, {:event, event, meta})
        end,
        nil
      )

    on_exit(fn -> :telemetry.detach(id) end)

    state = %{
      namespace: "prod",
      reaping: nil,
      follow: %{ref: make_ref()},
      down: %Down{pod: pod, runner_node: :"r@10.0.0.5", redact: fn -> ["s3cret", ""] end}
    }

    %{state: state, pod: pod}
  end

  defp feed(state, messages), do: Enum.reduce(messages, state, &Down.followed(&2, &1))

  defp events do
    receive do
      {:event, event, meta} -> [{List.last(event), meta} | events()]
    after
      0 -> []
    end
  end

  @evicted %{reason: "EvictionByEvictionAPI", message: "Eviction API: evicting"}

  test "a disruption: :disruption at once, :down with its reason at the deletion, one warning",
       %{state: state, pod: pod} do
    log =
      capture_log(fn ->
        state = feed(state, [{:disruption, @evicted}])
        assert [{:disruption, meta}] = events()

        assert meta == %{
                 pod: "prod/#{pod}",
                 namespace: "prod",
                 runner_name: pod,
                 runner_node: :"r@10.0.0.5",
                 reason: "EvictionByEvictionAPI",
                 message: "Eviction API: evicting"
               }

        state = feed(state, [:deleting, {:terminated, %{reason: "Error", exit_code: 143}}])
        state = state |> Down.runner_gone() |> Down.followed(:gone)
        assert [{:down, down}] = events()
        assert %{reason: "EvictionByEvictionAPI", exit_code: nil, runner_name: ^pod} = down
        refute Down.open?(state)
      end)

    assert [line] = String.split(log, "\n") |> Enum.filter(&(&1 =~ "went down"))
    assert line =~ "[warning]"
    assert line =~ "runner pod prod/#{pod} went down: EvictionByEvictionAPI: Eviction API"
  end

  test "a container that failed, with no deletion: :down at once with its reason and exit code",
       %{state: state} do
    capture_log(fn ->
      state = feed(state, [{:terminated, %{reason: "OOMKilled", exit_code: 137, message: nil}}])
      assert [{:down, %{reason: "OOMKilled", exit_code: 137, message: nil}}] = events()
      # Whatever comes after (the reaper's delete, the runner gone) adds nothing.
      state |> Down.followed(:deleting) |> Down.runner_gone() |> Down.followed(:gone)
      assert events() == []
    end)
  end

  test "a deletion by someone else is decided when the runner is gone: Deleted", %{state: state} do
    capture_log(fn ->
      state = feed(state, [:deleting, {:terminated, %{reason: "Completed", exit_code: 0}}])
      assert events() == []
      assert Down.open?(state)
      # The runner deleted itself again as its VM stopped on SIGTERM: not an idle shutdown.
      state = Down.self_deleted(state, [%{kind: :pod, name: "p", stopping: true}])
      Down.runner_gone(state)
      assert [{:down, %{reason: "Deleted", exit_code: 0, message: message}}] = events()
      assert message =~ "someone else"
    end)
  end

  test "an idle shutdown is orderly: the runner's own delete is no :down", %{state: state} do
    state = feed(state, [:deleting])
    state = Down.self_deleted(state, [%{kind: :pod, name: "p", stopping: false}])
    refute Down.open?(state)

    state
    |> Down.followed({:terminated, %{reason: "Completed", exit_code: 0}})
    |> Down.runner_gone()
    |> Down.followed(:gone)

    assert events() == []
  end

  test "the reaper's own delete after the runner went, and a VM that exited 0: no :down", %{
    state: state
  } do
    %{state | reaping: %{}}
    |> feed([:deleting, {:terminated, %{reason: "Completed", exit_code: 0}}, :gone])
    |> Down.runner_gone()

    feed(state, [{:terminated, %{reason: "Succeeded", exit_code: nil}}]) |> Down.runner_gone()
    assert events() == []
  end

  test "secret values never reach the events", %{state: state} do
    capture_log(fn ->
      feed(state, [
        {:disruption, %{reason: "TerminationByKubelet", message: "env s3cret leaked"}},
        {:terminated, %{reason: "Evicted", exit_code: 137, message: "s3cret"}}
      ])

      assert [{:disruption, d}, {:down, down}] = events()
      assert d.message == "env [redacted] leaked"
      assert down.message == "env [redacted] leaked"
      refute inspect(down) =~ "s3cret"
    end)
  end

  test "without a follow there is nothing to wait for", %{state: state} do
    refute Down.open?(%{state | follow: nil})
    assert Down.open?(state)
  end

  # A runner VM that stopped while its pod's network went away can leave the parent's
  # connection to it half-open: FLAME's callers and monitors would wait for the next tick.
  test "the pod gone from the API while the runner's node is still connected: disconnected",
       %{state: state} do
    {:ok, peer, node} =
      :peer.start_link(%{
        name: :"down_#{System.unique_integer([:positive])}",
        host: ~c"127.0.0.1",
        longnames: true,
        # Hidden: a visible node would join `global` with the runners of the tests running
        # beside this one, and its disconnection (it is still alive) could make `global` drop
        # them (prevent_overlapping_partitions).
        args: [~c"-setcookie", Atom.to_charlist(Node.get_cookie()), ~c"-hidden"]
      })

    on_exit(fn -> catch_exit(:peer.stop(peer)) end)
    true = Node.connect(node)
    true = Node.monitor(node, true)
    state = put_in(state.down.runner_node, node)

    capture_log(fn -> feed(state, [:deleting, :gone]) end)

    assert_receive {:nodedown, ^node}, 5_000
    refute node in Node.list(:connected)
  end
end
