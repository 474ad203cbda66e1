defmodule Bench.KubeletLog do
  @moduledoc """
  Incremental reader of the simulated kubelet's event log, the bench's source of when things
  happened on the node. Keeps the first timestamp (µs since the epoch, UTC, ms resolution) of
  each event per pod (`"namespace/name"`) in an ETS table: `:bound`, `:sandbox_ready` (its pod
  IP allocated), `:started` (`container X: started pid`), `:running` (`phase Running`, logged after the status PATCH returned),
  `:final_delete` (the kubelet's own DELETE that ends a graceful deletion) and `:gone`
  (`removed from the API`).
  """

  @table :bench_kubelet_log
  # Read at most this much per sync: a storm's log grows by far less between two syncs.
  @chunk 4_000_000

  def init(path) do
    :ets.new(@table, [:named_table, :public, :set])
    :ets.insert(@table, {:__offset, 0, ""})
    :persistent_term.put({__MODULE__, :path}, path)
  end

  @doc "Reads what the kubelet logged since the last sync."
  def sync do
    [{:__offset, offset, partial}] = :ets.lookup(@table, :__offset)

    case File.open(path(), [:read, :binary, :raw]) do
      {:ok, fd} ->
        data =
          case :file.pread(fd, offset, @chunk) do
            {:ok, data} -> data
            :eof -> ""
          end

        File.close(fd)
        {lines, rest} = split_lines(partial <> data)
        Enum.each(lines, &parse/1)
        :ets.insert(@table, {:__offset, offset + byte_size(data), rest})

      {:error, _} ->
        :ok
    end
  end

  @doc "When `event` first happened to the pod `key`, or nil."
  def ts(key, event) do
    case :ets.lookup(@table, {key, event}) do
      [{_, ts}] -> ts
      [] -> nil
    end
  end

  @doc "Waits until every key has logged `event`; returns the keys still missing at the timeout."
  def await_all(keys, event, timeout_ms) do
    do_await(keys, event, System.monotonic_time(:millisecond) + timeout_ms)
  end

  @doc "The last `n` lines about the pod `key`, to show next to an incident."
  def lines_about(key, n) do
    case File.read(path()) do
      {:ok, text} ->
        text
        |> String.split("\n")
        |> Enum.filter(&String.contains?(&1, "pod #{key}:"))
        |> Enum.take(-n)

      _ ->
        []
    end
  end

  defp path, do: :persistent_term.get({__MODULE__, :path})

  defp do_await(keys, event, deadline) do
    sync()
    missing = Enum.reject(keys, &ts(&1, event))

    cond do
      missing == [] -> []
      System.monotonic_time(:millisecond) > deadline -> missing
      true -> Process.sleep(20) && do_await(missing, event, deadline)
    end
  end

  defp split_lines(text) do
    parts = String.split(text, "\n")
    {Enum.drop(parts, -1), List.last(parts)}
  end

  defp parse(line) do
    with [ts, "pod " <> rest] <- String.split(line, " ", parts: 2),
         [key, msg] <- String.split(rest, ": ", parts: 2),
         event when event != nil <- event(msg),
         {:ok, dt, 0} <- DateTime.from_iso8601(ts) do
      :ets.insert_new(@table, {{key, event}, DateTime.to_unix(dt, :microsecond)})
    else
      _ -> :ok
    end
  end

  defp event("phase Running"), do: :running
  defp event("removed from the API"), do: :gone
  defp event("bound to " <> _), do: :bound
  defp event("sandbox ready: " <> _), do: :sandbox_ready
  defp event("finished: deleted with grace period 0"), do: :final_delete

  defp event("container " <> rest) do
    if String.contains?(rest, ": started pid "), do: :started
  end

  defp event(_), do: nil
end
