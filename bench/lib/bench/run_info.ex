defmodule Bench.RunInfo do
  @moduledoc """
  The report's header: when, which commit (and whether the library had uncommitted changes),
  on what machine and control plane, with which parameters, and how to read the figures.
  """

  alias Bench.{ControlPlane, Machine}

  def header(%DateTime{} = now, args, %ControlPlane{} = cp) do
    """
    # Boot benchmark: FLAMEK8sBackend on #{if cp.node == :real, do: "the real node", else: "the local control plane"}

    | | |
    |---|---|
    | date | #{DateTime.to_iso8601(now)} |
    | commit | #{commit()} |
    | machine | #{Machine.cpus()} CPUs, #{Machine.mem_mb(:total)} MB RAM |
    | Erlang/OTP, Elixir | #{System.otp_release()}, #{System.version()} |
    | control plane | #{control_plane(cp)} |
    | load average at start (1 / 5 / 15 min) | #{Machine.load()} |
    | parameters | #{parameters(args)} |

    Everything runs on this one machine: the parent VM (this bench), kube-apiserver, etcd, the
    simulated kubelet and every runner VM share its CPUs, and so does anything else running on the
    machine (see the load averages). Percentiles are nearest-rank; with n ≤ 100,
    p99 is the largest or second-largest sample.
    """
  end

  defp control_plane(%ControlPlane{node: :real} = cp),
    do:
      "kube-apiserver #{cp.version} + etcd, kubelet, kube-scheduler, kube-controller-manager, containerd + runc (`tools/realnode`, one node; ready in #{cp.ready_ms} ms, builds included)"

  defp control_plane(cp),
    do:
      "kube-apiserver #{cp.version} + etcd, simulated kubelet `localkube` (pods are local processes; ready in #{cp.ready_ms} ms)"

  defp parameters(args) do
    cond do
      args[:budget] ->
        "cold boot budget: #{args[:budget_boots]} boots per variant (#{Enum.map_join(Bench.Section.Budget.variants(), ", ", &elem(&1, 0))}), interleaved; time cap #{args[:max_seconds]} s"

      args[:real_node] ->
        "scaling on the real node: runner N #{Enum.join(args[:real_n], ", ")}; time cap #{args[:max_seconds]} s"

      args[:scaling] ->
        "scaling: no-op N #{Enum.join(args[:scaling_n], ", ")}; runner N #{Enum.join(args[:runner_n], ", ")}; time cap #{args[:max_seconds]} s"

      true ->
        "pods #{args[:pods]}, batch #{args[:batch]}, boots #{args[:boots]}, storm #{args[:storm]} × #{args[:rounds]} rounds, time cap #{args[:max_seconds]} s"
    end
  end

  defp commit do
    case System.cmd("git", ["rev-parse", "--short", "HEAD"], stderr_to_stdout: true) do
      {sha, 0} ->
        {changes, _} =
          System.cmd("git", ["status", "--porcelain", "--", "lib", "native", "test/support"])

        String.trim(sha) <>
          if(changes != "",
            do: " (with uncommitted changes in lib/, native/ or test/support/)",
            else: ""
          )

      _ ->
        "unknown"
    end
  end
end
