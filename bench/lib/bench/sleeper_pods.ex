defmodule Bench.SleeperPods do
  @moduledoc """
  Pods that only need to run (`sleeper:test`, `/bin/sleep` on the simulated kubelet), to time
  how soon each wait strategy sees a pod ready without a runner VM's own start in the way.
  `create_and_await/4` returns `%{key:, t_create:, seen:}` (wall µs) or `%{key:, error:}`.
  """

  alias Bench.{Clock, ControlPlane, Incidents, KubeletLog, PodPoll}
  alias FLAMEK8sBackend.Kube

  @timeout_ms 120_000

  @doc "Creates the pod, then waits with `:watch` (`Kube.await_pod/4`) or `:poll` (`Bench.PodPoll`)."
  def create_and_await(strategy, kube, ns, name) do
    t_create = Clock.wall()

    case Kube.create_pod(kube, ns, manifest(name)) do
      {:ok, _} -> kube |> await(strategy, ns, name) |> Map.put(:t_create, t_create)
      {:error, reason} -> %{key: "#{ns}/#{name}", error: reason}
    end
  end

  @doc "Deletes the pods (grace 0); returns the keys the kubelet has not logged gone by the timeout."
  def delete(kube, ns, keys, timeout_ms \\ 60_000) do
    for key <- keys do
      [^ns, name] = String.split(key, "/", parts: 2)

      with {:error, reason} <- Kube.delete_pod(kube, ns, name, grace_period: 0) do
        Incidents.record("bench could not delete pod #{key}: #{inspect(reason)}")
      end
    end

    KubeletLog.await_all(keys, :gone, timeout_ms)
  end

  defp manifest(name), do: ControlPlane.pod_manifest(name, "sleeper:test", args: ["3600"])

  # The time the {:ready, _} message is received.
  defp await(kube, :watch, ns, name) do
    with {:ok, %{ref: ref}} <-
           Kube.await_pod(kube, ns, name, timeout: @timeout_ms, report_ready: true) do
      receive do
        {:flame_k8s, ^ref, {:ready, _pod}} -> %{key: "#{ns}/#{name}", seen: Clock.wall()}
        {:flame_k8s, ^ref, other} -> %{key: "#{ns}/#{name}", error: other}
      end
    else
      {:error, reason} -> %{key: "#{ns}/#{name}", error: reason}
    end
  end

  defp await(kube, :poll, ns, name),
    do: PodPoll.until_ready(kube, ns, name, System.monotonic_time(:millisecond) + @timeout_ms)
end
