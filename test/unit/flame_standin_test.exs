defmodule FLAMEK8sBackend.FlameStandInTest do
  # What FLAMEK8sBackend depends on in FLAME, as FLAME 0.5.3 does it. These tests run against
  # the stand-in in CI and, with FLAME_PATH, against the real FLAME: they pass on both, so the
  # stand-in cannot drift from FLAME 0.5.3 where the backend would notice.
  use ExUnit.Case, async: false

  @moduletag :unit

  alias FLAMEK8sBackend.Test.ProbeBackend

  setup do
    Process.register(self(), :flame_probe)
    on_exit(fn -> ProbeBackend.on_shutdown(nil) end)
    :ok
  end

  defp parent, do: FLAME.Parent.new(make_ref(), self(), ProbeBackend, "nonode", nil)

  # A terminator whose parent is this test process, under a supervisor of the test.
  defp start_terminator!(opts \\ []) do
    name = :"Elixir.FlameStandInTest.Terminator#{System.unique_integer([:positive])}"
    opts = Keyword.merge([name: name, parent: parent()], opts)
    start_supervised!({FLAME.Terminator, opts})
    assert_receive {_ref, {:remote_up, terminator}}
    assert terminator == Process.whereis(name)
    {name, terminator}
  end

  defp pool!(pool_opts) do
    name = :"Elixir.FlameStandInTest.Pool#{System.unique_integer([:positive])}"
    start_supervised!({FLAME.Pool, Keyword.merge([name: name, min: 0, max: 1], pool_opts)})
    name
  end

  # {:error, reason} of a child spec's start under the test supervisor, as text.
  defp start_error(spec) do
    assert {:error, reason} = start_supervised(spec)
    inspect(reason)
  end

  defp tmp_dir!(what) do
    dir =
      Path.join(System.tmp_dir!(), "flame-standin-#{what}-#{System.unique_integer([:positive])}")

    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf(dir) end)
    dir
  end

  describe "the terminator" do
    test "traps exits and has no clause for an unexpected message: it crashes" do
      {_name, terminator} = start_terminator!()
      assert {:trap_exit, true} = Process.info(terminator, :trap_exit)
      monitor = Process.monitor(terminator)
      linked = spawn(fn -> :ok end)

      ExUnit.CaptureLog.capture_log(fn ->
        send(terminator, {:EXIT, linked, :normal})
        assert_receive {:DOWN, ^monitor, :process, ^terminator, {:function_clause, stack}}
        assert [{FLAME.Terminator, :handle_info, [{:EXIT, ^linked, :normal}, _], _} | _] = stack
      end)

      # Its terminate/2 still stops the system: the backend's system_shutdown/0.
      assert_receive {ProbeBackend, {:system_shutdown, ^terminator}}
    end

    test "calls system_shutdown/0 in its own process, once, whatever else asks it to" do
      {name, terminator} = start_terminator!()
      :ok = FLAME.Terminator.schedule_idle_shutdown(terminator, 0, fn -> true end, false)

      assert_receive {_ref, {:remote_shutdown, :idle}}
      assert_receive {ProbeBackend, {:system_shutdown, ^terminator}}
      :ok = FLAME.Terminator.system_shutdown(terminator)
      :ok = stop_supervised({FLAME.Terminator.Supervisor, name})
      refute_received {ProbeBackend, {:system_shutdown, _}}
    end

    test "a crash after system_shutdown/0 costs a second one: its restart stops the system again" do
      # As on a runner: FLAME's application supervisor starts the terminator's supervisor
      # again after the crash (the terminator's own allows no restart).
      name = :"Elixir.FlameStandInTest.Terminator#{System.unique_integer([:positive])}"
      terminator = {FLAME.Terminator, name: name, parent: parent()}

      app =
        start_supervised!(%{
          id: :app,
          start: {Supervisor, :start_link, [[terminator], [strategy: :one_for_one]]},
          type: :supervisor
        })

      assert_receive {_ref, {:remote_up, first}}
      :ok = FLAME.Terminator.schedule_idle_shutdown(first, 0, fn -> true end, false)
      assert_receive {ProbeBackend, {:system_shutdown, ^first}}

      ExUnit.CaptureLog.capture_log(fn ->
        send(first, {:EXIT, spawn(fn -> :ok end), :normal})
        assert_receive {_ref, {:remote_up, second}}
        assert second != first
        :ok = Supervisor.stop(app)
        assert_receive {ProbeBackend, {:system_shutdown, ^second}}
      end)
    end

    test "watch_path/2 keeps the last path only, and terminate/2 raises after removing it" do
      {name, terminator} = start_terminator!()
      [first, last] = [tmp_dir!("first"), tmp_dir!("last")]
      :ok = FLAME.Terminator.watch_path(terminator, first)
      :ok = FLAME.Terminator.watch_path(terminator, last)
      monitor = Process.monitor(terminator)

      ExUnit.CaptureLog.capture_log(fn ->
        :ok = stop_supervised({FLAME.Terminator.Supervisor, name})
        assert_receive {:DOWN, ^monitor, :process, ^terminator, reason}
        assert reason != :shutdown
      end)

      refute File.exists?(last)
      assert File.exists?(first)
    end
  end

  describe "the pool" do
    test "only as FLAME starts it: FLAME.Pool.start_link/1 alone lacks its supervisor's options" do
      Process.flag(:trap_exit, true)
      name = :"Elixir.FlameStandInTest.Pool#{System.unique_integer([:positive])}"

      ExUnit.CaptureLog.capture_log(fn ->
        assert {:error, {%KeyError{key: :task_sup}, _}} =
                 FLAME.Pool.start_link(name: name, min: 0, max: 1, backend: ProbeBackend)
      end)
    end

    test ":min and :max are required" do
      name = :"Elixir.FlameStandInTest.Pool#{System.unique_integer([:positive])}"

      ExUnit.CaptureLog.capture_log(fn ->
        assert start_error({FLAME.Pool, name: name, max: 1, backend: ProbeBackend}) =~
                 "%KeyError{key: :min,"
      end)
    end

    test "its :log (default false) wins over the backend's own :log" do
      for {pool_opts, log} <- [{[], false}, {[log: :debug, boot_timeout: 5_000], :debug}] do
        pool = pool!([backend: {ProbeBackend, log: :info, marker: 1}] ++ pool_opts)

        ExUnit.CaptureLog.capture_log(fn ->
          :ok = FLAME.call(pool, fn -> :ok end)
          :ok = stop_supervised({FLAME.Pool, pool})
        end)

        assert_received {ProbeBackend, {:init, opts}}
        assert opts[:log] == log
        assert opts[:marker] == 1
        assert Keyword.has_key?(opts, :terminator_sup)
        # The pool's :boot_timeout only when the pool sets one.
        assert opts[:boot_timeout] == pool_opts[:boot_timeout]
      end
    end

    test "a bare backend module gets the pool's options only, not config :flame, module" do
      Application.put_env(:flame, ProbeBackend, marker: 2)
      on_exit(fn -> Application.delete_env(:flame, ProbeBackend) end)
      pool = pool!(backend: ProbeBackend, log: false)

      :ok = FLAME.call(pool, fn -> :ok end)
      assert_received {ProbeBackend, {:init, opts}}
      refute Keyword.has_key?(opts, :marker)
      assert opts[:log] == false
    end

    test "a failed boot: the reason only in on_grow_end, a boot again, the caller's timeout" do
      test = self()
      on_grow_end = fn result, meta -> send(test, {:grow_end, result, meta}) end

      pool =
        pool!(backend: {ProbeBackend, fail_boot: :boom}, on_grow_end: on_grow_end, log: false)

      ExUnit.CaptureLog.capture_log(fn ->
        {caller, monitor} =
          spawn_monitor(fn -> FLAME.call(pool, fn -> :ok end, timeout: 4_000) end)

        assert_receive {ProbeBackend, {:remote_boot, _runner}}, 1_000
        assert_receive {:grow_end, {:exit, reason}, %{name: ^pool, count: 0}}, 1_000

        assert {{:shutdown, :boom}, {GenServer, :call, [_runner, {:remote_boot, _, _}, _]}} =
                 reason

        # While the caller waits, the pool boots again (a second later).
        assert_receive {ProbeBackend, {:remote_boot, _runner}}, 3_000

        assert_receive {:DOWN, ^monitor, :process, ^caller,
                        {:timeout, {FLAME.Pool, :call, [^pool, _, _]}}},
                       6_000
      end)
    end

    test "a failed boot of a :min runner fails the pool's start" do
      name = :"Elixir.FlameStandInTest.Pool#{System.unique_integer([:positive])}"
      spec = {FLAME.Pool, name: name, min: 1, max: 1, backend: {ProbeBackend, fail_boot: :boom}}

      ExUnit.CaptureLog.capture_log(fn -> assert start_error(spec) =~ "{:shutdown, :boom}" end)
    end
  end

  describe "code_sync" do
    defp probe_beam!(dir) do
      module = :"Elixir.FlameStandInTest.Probe#{System.unique_integer([:positive])}"

      [{^module, beam}] =
        Code.compile_string("defmodule #{inspect(module)}, do: def(ok, do: :ok)")

      :code.purge(module)
      :code.delete(module)
      path = Path.join(dir, "#{module}.beam")
      File.write!(path, beam)
      path
    end

    test "sync_beams without copy_apps or copy_paths: no archive, and the pool's start raises" do
      ebin = tmp_dir!("ebin")
      probe_beam!(ebin)
      name = :"Elixir.FlameStandInTest.Pool#{System.unique_integer([:positive])}"

      code_sync = [start_apps: false, copy_apps: false, sync_beams: [ebin]]
      spec = {FLAME.Pool, name: name, min: 0, max: 1, backend: ProbeBackend, code_sync: code_sync}

      ExUnit.CaptureLog.capture_log(fn ->
        # KeyError, key :path not found in: nil
        assert start_error(spec) =~ "{:badkey, :path, nil}"
      end)

      # With a path to copy, the same pool starts.
      spec =
        {FLAME.Pool,
         name: name,
         min: 0,
         max: 1,
         backend: ProbeBackend,
         code_sync: Keyword.put(code_sync, :copy_paths, [ebin])}

      assert {:ok, _} = start_supervised(spec)
    end

    test "an empty or unchanged set of sync_beams packages no archive" do
      ebin = tmp_dir!("ebin")
      beam = probe_beam!(ebin)

      code =
        FLAME.CodeSync.new(start_apps: false, copy_apps: false, sync_beams: [ebin])
        |> FLAME.CodeSync.compute_sync_beams()

      assert %FLAME.CodeSync.PackagedStream{stream: %File.Stream{} = stream} =
               package = FLAME.CodeSync.package_to_stream(code)

      assert String.starts_with?(stream.path, System.tmp_dir!())
      :ok = FLAME.CodeSync.rm_packaged_stream(package)

      unchanged = FLAME.CodeSync.diff(code)
      refute FLAME.CodeSync.changed?(unchanged)
      empty = FLAME.CodeSync.package_to_stream(unchanged)
      assert empty.stream == nil
      assert FLAME.CodeSync.extract_packaged_stream(empty) == nil

      File.write!(beam, File.read!(beam) <> "")
      File.touch!(beam)
      File.rm!(beam)
      changed = FLAME.CodeSync.diff(unchanged)
      assert FLAME.CodeSync.changed?(changed)
      assert changed.deleted_paths == [beam]

      nothing =
        FLAME.CodeSync.new(start_apps: false, copy_apps: false)
        |> FLAME.CodeSync.compute_changed_paths()

      assert FLAME.CodeSync.package_to_stream(nothing).stream == nil
    end

    test "start_apps: a list without copy_apps raises when the paths are computed" do
      assert_raise CaseClauseError, fn ->
        FLAME.CodeSync.new(start_apps: [:logger]) |> FLAME.CodeSync.compute_changed_paths()
      end
    end
  end

  test "FLAME.Parent.get/0: nil without FLAME_PARENT, a raise for a value that does not decode" do
    assert System.get_env("FLAME_PARENT") == nil
    assert FLAME.Parent.get() == nil
    System.put_env("FLAME_PARENT", "not base64!")
    on_exit(fn -> System.delete_env("FLAME_PARENT") end)
    assert_raise ArgumentError, fn -> FLAME.Parent.get() end
  end
end
