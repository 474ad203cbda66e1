defmodule Bench.Boot.Polling do
  @moduledoc """
  The polling variant of a boot, for comparison: the backend's own `init/1` (parent pod, sweep,
  manifests), the same secret (when the backend has one for the runner) and pod, but the wait polls the pod every second until it runs
  (`Bench.PodPoll`, as the pure-Elixir backend waits), then waits for the runner's remote_up.
  The requests go through the client it is given (`Bench.ControlPlane.client/1`). It cleans up nothing itself: the teardown
  deletes its pod and secret as the backend's reaper would.
  """

  alias Bench.{Clock, PodPoll, RemoteUpTracer}
  alias FLAMEK8sBackend.Kube

  # Reads the prepared manifests and the FLAME parent reference from the state `init/1` returns:
  # the backend has no public call that creates a runner without also waiting for it.
  def run(opts, kube) do
    t_init = Clock.wall()
    {:ok, state} = FLAMEK8sBackend.init(opts)
    t_boot = Clock.wall()
    RemoteUpTracer.trace_me()
    deadline = System.monotonic_time(:millisecond) + state.boot_timeout
    %FLAMEK8sBackend{namespace: ns, runner_name: name} = state
    %{pod: pod_manifest, secret: secret_manifest} = FLAMEK8sBackend.runner_manifests(state)
    secret = secret_manifest != nil

    # As remote_boot/1 does: a create may wait for a create slot for the whole boot.
    queue = [queue_timeout: state.boot_timeout]

    with :ok <- create_secret(kube, ns, secret_manifest, queue),
         {:ok, _} <- Kube.create_pod(kube, ns, pod_manifest, queue),
         t_created = Clock.wall(),
         %{seen: seen} <- PodPoll.until_ready(kube, ns, name, deadline),
         {:ok, t_done} <- await_remote_up(state.parent_ref, deadline) do
      %{
        key: "#{ns}/#{name}",
        secret: secret,
        runner: name,
        t_init: t_init,
        t_boot: t_boot,
        t_done: t_done,
        t_created: t_created,
        t_remote_up: nil,
        t_running_seen: seen
      }
    else
      {:error, reason} -> %{key: "#{ns}/#{name}", secret: secret, error: reason}
      %{error: reason} -> %{key: "#{ns}/#{name}", secret: secret, error: reason}
    end
  end

  # The backend leaves the secret out when the runner needs none of its own.
  defp create_secret(_kube, _ns, nil, _opts), do: :ok

  defp create_secret(kube, ns, manifest, opts) do
    with {:ok, _} <- Kube.create_secret(kube, ns, manifest, opts), do: :ok
  end

  defp await_remote_up(parent_ref, deadline) do
    receive do
      {^parent_ref, {:remote_up, _terminator}} -> {:ok, Clock.wall()}
    after
      max(deadline - System.monotonic_time(:millisecond), 0) -> {:error, :remote_up_timeout}
    end
  end
end
