defmodule Bench.Machine do
  @moduledoc """
  What the machine has to give: CPUs, memory, and its load, since every part of the bench
  (control plane, kubelet, runner VMs, this VM) shares it with whatever else runs there.
  """

  def cpus, do: :erlang.system_info(:logical_processors_available)

  @doc "`MemTotal` or `MemAvailable` in MB, nil where /proc/meminfo is unreadable."
  def mem_mb(which) when which in [:total, :available] do
    field = if which == :total, do: "MemTotal", else: "MemAvailable"

    with {:ok, text} <- File.read("/proc/meminfo"),
         [kb] <- Regex.run(~r/#{field}:\s+(\d+) kB/, text, capture: :all_but_first) do
      div(String.to_integer(kb), 1024)
    else
      _ -> nil
    end
  end

  @doc "Load averages over 1 / 5 / 15 minutes, as text."
  def load do
    case File.read("/proc/loadavg") do
      {:ok, text} -> text |> String.split(" ") |> Enum.take(3) |> Enum.join(" / ")
      _ -> "?"
    end
  end
end
