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
  # The request as containerd received it (the line without "returns").
  @sandbox_requested ~r/RunPodSandbox for &PodSandboxMetadata\{Name:([^,]+),Uid:[^,]*,Namespace:([^,]+),[^}]*\}"/

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

  @doc """
  `%{"namespace/pod" => %{sandbox_requested:, sandbox_ready:, started:}}` (µs since the epoch,
  each nil when the log lacks it): when the kubelet's `RunPodSandbox` reached containerd, when
  it returned the sandbox (network set up), and when the start of the pod's container named
  `container` returned. A pod whose sandbox was made more than once keeps the first.
  """
  @spec timeline(Path.t(), String.t(), String.t()) :: %{String.t() => map()}
  def timeline(path, namespace, container) do
    lines = path |> File.read!() |> String.split("\n")
    started = started(path, namespace, container)

    requested =
      for line <- lines,
          [name, ^namespace] <- [Regex.run(@sandbox_requested, line, capture: :all_but_first)],
          reduce: %{},
          do: (acc -> Map.put_new(acc, "#{namespace}/#{name}", time!(line)))

    ready =
      for line <- lines,
          [name, ^namespace, _id] <- [Regex.run(@sandbox, line, capture: :all_but_first)],
          reduce: %{},
          do: (acc -> Map.put_new(acc, "#{namespace}/#{name}", time!(line)))

    keys = Enum.uniq(Map.keys(requested) ++ Map.keys(ready) ++ Map.keys(started))

    Map.new(keys, fn key ->
      {key,
       %{sandbox_requested: requested[key], sandbox_ready: ready[key], started: started[key]}}
    end)
  end
end
