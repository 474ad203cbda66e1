defmodule Bench.ContainerdLog do
  @moduledoc """
  When the real node's container runtime started each pod's container, from containerd's own
  log (`logs/containerd.log` in the real node's state dir; its CRI plugin logs every call with a
  nanosecond timestamp): the pod's sandbox id (`RunPodSandbox for &PodSandboxMetadata{Name:…,
  Namespace:…} returns sandbox id "…"`), its container's id (`CreateContainer within sandbox "…"
  … returns container id "…"`) and when that container's start returned (`StartContainer for
  "…" returns successfully`). The real node's counterpart of the simulated kubelet's
  `container X: started pid` line (`Bench.KubeletLog`).
  """

  @sandbox ~r/RunPodSandbox for &PodSandboxMetadata\{Name:([^,]+),Uid:[^,]*,Namespace:([^,]+),.*returns sandbox id \\"([0-9a-f]+)\\"/
  @container ~r/CreateContainer within sandbox \\"([0-9a-f]+)\\" for &ContainerMetadata\{Name:([^,]+),.*returns container id \\"([0-9a-f]+)\\"/
  @started ~r/StartContainer for \\"([0-9a-f]+)\\" returns successfully/
  @time ~r/^time="([^"]+)"/

  @doc """
  `%{"namespace/pod" => µs since the epoch}`: when the start of the pod's container named
  `container` returned, for the pods of `namespace` in the log at `path`.
  """
  @spec started(Path.t(), String.t(), String.t()) :: %{String.t() => integer()}
  def started(path, namespace, container) do
    lines = path |> File.read!() |> String.split("\n")

    pods =
      for line <- lines,
          [name, ^namespace, sandbox] <- [Regex.run(@sandbox, line, capture: :all_but_first)],
          into: %{},
          do: {sandbox, "#{namespace}/#{name}"}

    containers =
      for line <- lines,
          [sandbox, ^container, id] <- [Regex.run(@container, line, capture: :all_but_first)],
          key = pods[sandbox],
          into: %{},
          do: {id, key}

    for line <- lines,
        [id] <- [Regex.run(@started, line, capture: :all_but_first)],
        key = containers[id],
        into: %{},
        do: {key, time!(line)}
  end

  # time="2026-12-03T09:23:40.253469916Z": nanoseconds, which DateTime keeps to microseconds.
  defp time!(line) do
    [ts] = Regex.run(@time, line, capture: :all_but_first)
    ts = Regex.replace(~r/\.(\d{6})\d*Z$/, ts, ".\\1Z")
    {:ok, dt, 0} = DateTime.from_iso8601(ts)
    DateTime.to_unix(dt, :microsecond)
  end
end
