defmodule FLAMEK8sBackend.BootProgressTest do
  use ExUnit.Case, async: true

  @moduletag :unit
  doctest FLAMEK8sBackend.BootProgress

  alias FLAMEK8sBackend.{BootError, BootProgress}

  @pod "prod/web-1-flame-x7k2p"
  @parent :"web@10.0.0.1"

  defp created, do: BootProgress.new(@pod, @parent) |> BootProgress.reached(:created, 12)
  defp running, do: created() |> BootProgress.reached(:running, 40)

  test "milestones are kept in ms since the boot started" do
    progress = running() |> BootProgress.reached(:remote_up, 450)
    assert progress.timings == %{created: 12, running: 40, remote_up: 450}
    refute BootProgress.running?(created())
    assert BootProgress.running?(progress)
  end

  describe "error/2: the phase of a failure the watch reports" do
    test "unschedulable is :scheduling, whenever it comes" do
      for progress <- [created(), running()] do
        assert %BootError{phase: :scheduling, reason: {:unschedulable, "0/3 nodes"}, pod: @pod} =
                 BootProgress.error(progress, {:failed, {:unschedulable, "0/3 nodes"}})
      end
    end

    test "no scale-up that could help is :scheduling" do
      reason =
        {:no_scale_up,
         %{
           source: "cluster-autoscaler",
           message:
             "pod didn't trigger scale-up: 1 node(s) didn't match Pod's node affinity/selector",
           scheduler: "0/3 nodes are available"
         }}

      assert %BootError{phase: :scheduling, reason: ^reason} =
               BootProgress.error(created(), {:failed, reason})
    end

    test "a timeout while an autoscaler adds a node is :scaling_up, saying to raise boot_timeout" do
      detail = "karpenter: Pod should schedule on: nodeclaim/default-cvkcv"
      timeout = {:timeout, %{phase: :scaling_up, waited_ms: 30_000, detail: detail}}

      assert %BootError{phase: :scaling_up, reason: {:timeout, %{detail: ^detail}}} =
               error = BootProgress.error(created(), timeout)

      message = Exception.message(error)
      assert message =~ "failed while waiting for a new node: timed out after 30000 ms"
      assert message =~ detail
      assert message =~ "raise the pool's :boot_timeout for autoscaled pools"
    end

    test "a failure before the pod ran is :container_start, after it :remote_up" do
      pull = {:image_pull, %{image: "registry.invalid/app:404", reason: "ErrImagePull"}}

      assert %BootError{phase: :container_start, reason: ^pull} =
               BootProgress.error(created(), {:failed, pull})

      exited = {:container_exited, %{exit_code: 137, reason: "OOMKilled"}}

      assert %BootError{phase: :remote_up, reason: ^exited} =
               BootProgress.error(running(), {:failed, exited})
    end

    test "a deleted pod: :container_start before it ran, :remote_up after" do
      assert %BootError{phase: :container_start, reason: {:deleted, "x"}} =
               BootProgress.error(created(), {:deleted, "x"})

      assert %BootError{phase: :remote_up, reason: {:deleted, "x"}} =
               BootProgress.error(running(), {:deleted, "x"})
    end

    test "a refused watch: :scheduling before the pod ran, :remote_up after" do
      forbidden = {:api, 403, "Forbidden", "cannot watch pods"}

      assert %BootError{phase: :scheduling, reason: ^forbidden} =
               BootProgress.error(created(), {:error, forbidden})

      assert %BootError{phase: :remote_up, reason: ^forbidden} =
               BootProgress.error(running(), {:error, forbidden})
    end

    test "a timeout is in the phase the watch names, which leaves the reason" do
      for phase <- [:scheduling, :container_start] do
        timeout = %{phase: phase, waited_ms: 1_500, detail: "ContainerCreating"}

        assert %BootError{
                 phase: ^phase,
                 reason: {:timeout, %{waited_ms: 1_500, detail: "ContainerCreating"} = info}
               } = BootProgress.error(created(), {:timeout, timeout})

        refute Map.has_key?(info, :phase)
      end
    end

    test "a timeout once the pod ran is :remote_up: the runner never connected to the parent" do
      timeout = {:timeout, %{phase: :running, waited_ms: 2_000, detail: nil}}

      assert %BootError{phase: :remote_up, reason: {:timeout, %{detail: detail}}} =
               error = BootProgress.error(running(), timeout)

      assert detail == "pod running, but the runner node never connected to web@10.0.0.1"

      assert Exception.message(error) ==
               "runner pod prod/web-1-flame-x7k2p failed while waiting for the runner node's " <>
                 "remote_up: timed out after 2000 ms; last seen: #{detail}"
    end

    test "a timeout once the pod ran keeps what Kubernetes said last" do
      timeout = {:timeout, %{phase: :running, waited_ms: 2_000, detail: "container restarted"}}

      assert %BootError{phase: :remote_up, reason: {:timeout, %{detail: "container restarted"}}} =
               BootProgress.error(running(), timeout)
    end
  end

  test "silent_watch_error/2: a timeout in the phase the boot was in" do
    assert %BootError{phase: :container_start, reason: {:timeout, %{waited_ms: 30_000}}} =
             BootProgress.silent_watch_error(created(), 30_000)

    assert %BootError{phase: :remote_up, reason: {:timeout, %{detail: "pod running" <> _}}} =
             BootProgress.silent_watch_error(running(), 30_000)
  end
end
