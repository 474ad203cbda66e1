defmodule FLAMEK8sBackend.BootBackoffTest do
  use ExUnit.Case, async: true

  @moduletag :unit
  doctest FLAMEK8sBackend.BootBackoff

  alias FLAMEK8sBackend.{BootBackoff, BootError, Options}

  @pull {:image_pull,
         %{reason: "ErrImagePull", image: "registry.invalid/app:404", message: "not found"}}

  defp error(reason, phase \\ :container_start),
    do: %BootError{phase: phase, reason: reason, pod: "ns/web-flame-1"}

  describe "permanent?/1" do
    test "what will not fix itself within seconds" do
      for reason <- [
            @pull,
            {:container_config, %{reason: "CreateContainerConfigError", container: "app"}},
            {:invalid_manifest, "spec.containers[0].image: Required value"},
            {:api, 422, "Unprocessable Entity", "Pod is invalid"},
            {:api, 400, "Bad Request", "bad"},
            {:api, 401, "Unauthorized", "Unauthorized"},
            {:api, 403, "Forbidden", ~s(pods is forbidden: cannot create "pods")},
            {:api, 404, "Not Found", ~s(namespaces "gone" not found)},
            {:unschedulable, "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."},
            :unschedulable,
            {:no_scale_up,
             %{
               source: "cluster-autoscaler",
               message: "pod didn't trigger scale-up",
               scheduler: "0/3"
             }},
            {:config, "no token"},
            {:nif_not_loaded, "no library"}
          ] do
        assert BootBackoff.permanent?(reason), inspect(reason)
      end
    end

    test "transient reasons are never permanent" do
      for reason <- [
            {:timeout, %{waited_ms: 30_000, detail: "0/1 nodes are available"}},
            {:timeout, 15_000},
            {:connect, "connection refused"},
            {:api, 500, "Internal Server Error", "etcd"},
            {:api, 503, "Service Unavailable", "overloaded"},
            {:api, 429, "Too Many Requests", "slow down"},
            {:api, 409, "Conflict", "the object has been modified"},
            {:api, 408, "Request Timeout", "late"},
            {:api, 410, "Gone", "too old resource version"},
            {:outcome_unknown, %{reason: {:timeout, 15_000}, settled_at: 0}},
            {:outcome_unknown, %{reason: {:api, 403, "Forbidden", "no"}, settled_at: 0}},
            {:container_exited, %{container: "app", exit_code: 1, reason: "Error"}},
            {:pod_phase, "Failed", "Evicted"},
            {:deleted, "web-flame-1"},
            {:decode, "not JSON"},
            {:internal, "bug"},
            :something_else
          ] do
        refute BootBackoff.permanent?(reason), inspect(reason)
      end
    end
  end

  describe "the window" do
    test "doubles from the first failure's up to the cap" do
      windows = Enum.map(1..7, &BootBackoff.window_ms/1)
      assert windows == [2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]
      assert BootBackoff.window_ms(1_000) == 30_000
    end

    test "a first failure opens the first window; a boot inside it is answered from the cache" do
      entry = BootBackoff.failed(nil, 0, 1_000, error(@pull))
      assert %{failures: 1, failed_at: 1_000, until: 3_000} = entry

      assert {:cached, %BootError{} = cached} = BootBackoff.decide(entry, 1_500)
      assert cached.reason == @pull
      assert cached.phase == :container_start
      assert cached.pod == "ns/web-flame-1"
      assert cached.cached == %{failures: 1, age_ms: 500, retry_in_ms: 1_500}

      # The window is over: the next boot is a real one.
      assert BootBackoff.decide(entry, 3_000) == :boot
      assert BootBackoff.decide(nil, 0) == :boot
    end

    test "a boot that failed again after its window doubles it" do
      entry =
        nil
        |> BootBackoff.failed(0, 1_000, error(@pull))
        |> BootBackoff.failed(3_000, 4_000, error(@pull))

      assert %{failures: 2, until: 8_000} = entry

      entry = BootBackoff.failed(entry, 8_000, 9_000, error(@pull))
      assert %{failures: 3, until: 17_000} = entry
    end

    test "boots in flight when a failure was recorded do not grow the window" do
      first = BootBackoff.failed(nil, 0, 1_000, error(@pull))
      # Started at 500, before the failure at 1_000 was recorded: the same streak.
      entry = BootBackoff.failed(first, 500, 1_200, error(@pull))
      assert %{failures: 1, failed_at: 1_200, until: 3_200} = entry
    end

    test "an entry forgets its streak long after its window" do
      entry = BootBackoff.failed(nil, 0, 1_000, error(@pull))
      refute BootBackoff.expired?(entry, 3_000 + BootBackoff.forget_after_ms())
      assert BootBackoff.expired?(entry, 3_001 + BootBackoff.forget_after_ms())

      later = 10_000 + BootBackoff.forget_after_ms()
      assert %{failures: 1} = BootBackoff.failed(entry, later - 1_000, later, error(@pull))
    end

    test "a cached error keeps no earlier cache marker and reads as cached" do
      entry = BootBackoff.failed(nil, 0, 1_000, error(@pull))
      {:cached, cached} = BootBackoff.decide(entry, 1_250)
      # A cached error never goes back into the table, but one that did stays one level deep.
      again = BootBackoff.failed(nil, 0, 1_000, cached)
      assert again.error.cached == nil

      [first, second | _] = String.split(Exception.message(cached), "\n")
      assert first =~ "runner pod ns/web-flame-1 failed while starting its container"
      assert second =~ "not retried: the same failure as 250 ms ago"
      assert second =~ "no pod was created"
      assert second =~ "1750 ms"
    end
  end

  describe "key/1" do
    test "the same validated options give the same key; any change gives another" do
      base = Options.validate!(boot_timeout: 10_000, env: %{"A" => "1"})

      assert BootBackoff.key(base) ==
               BootBackoff.key(Options.validate!(env: %{"A" => "1"}, boot_timeout: 10_000))

      refute BootBackoff.key(base) == BootBackoff.key(%{base | env: %{"A" => "2"}})
      refute BootBackoff.key(base) == BootBackoff.key(%{base | manifest: %{"spec" => %{}}})
      refute BootBackoff.key(base) == BootBackoff.key(%{base | boot_timeout: 11_000})
    end

    test "runtime values and secret values are left out" do
      base = Options.validate!(secret_env: %{"TOKEN" => "s3cret"})

      assert BootBackoff.key(base) ==
               BootBackoff.key(%{base | terminator_sup: :"MyPool.TerminatorSup"})

      # A secret value is not in the key (it could be recovered from a hash of a short one);
      # its name is.
      assert BootBackoff.key(base) ==
               BootBackoff.key(Options.validate!(secret_env: fn -> %{"TOKEN" => "other"} end))

      refute BootBackoff.key(base) ==
               BootBackoff.key(Options.validate!(secret_env: %{"T2" => "x"}))
    end
  end

  describe "the table" do
    test "a permanent failure is answered from the table until a success resets it" do
      key = {:test, make_ref()}
      assert BootBackoff.check(key) == :boot

      started = BootBackoff.now()
      :ok = BootBackoff.record(key, started, {:error, error(@pull)})
      assert {:cached, %BootError{reason: @pull, cached: %{failures: 1}}} = BootBackoff.check(key)

      :ok = BootBackoff.record(key, started, {:ok, self(), :state})
      assert BootBackoff.check(key) == :boot
    end

    test "a transient failure is not recorded, and leaves a streak as it was" do
      key = {:test, make_ref()}
      started = BootBackoff.now()
      :ok = BootBackoff.record(key, started, {:error, error({:timeout, 15_000}, :create_pod)})
      assert BootBackoff.check(key) == :boot

      :ok = BootBackoff.record(key, started, {:error, error(@pull)})
      :ok = BootBackoff.record(key, started, {:error, error({:connect, "refused"}, :create_pod)})
      assert {:cached, _} = BootBackoff.check(key)
    end

    test "a cached answer is never recorded again" do
      key = {:test, make_ref()}
      started = BootBackoff.now()
      :ok = BootBackoff.record(key, started, {:error, error(@pull)})
      {:cached, cached} = BootBackoff.check(key)
      :ok = BootBackoff.record(key, BootBackoff.now(), {:error, cached})
      assert {:cached, %{cached: %{failures: 1}}} = BootBackoff.check(key)
    end

    test "the sweep drops expired entries" do
      key = {:test, make_ref()}
      old = BootBackoff.now() - BootBackoff.forget_after_ms() - 60_000
      :ok = BootBackoff.record(key, old, {:error, error(@pull)}, old)
      assert BootBackoff.size() >= 1
      BootBackoff.sweep()
      assert BootBackoff.check(key) == :boot
      refute BootBackoff.member?(key)
    end
  end
end
