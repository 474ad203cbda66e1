defmodule Bench.PodPoll do
  @moduledoc """
  The poll strategy, as the pure-Elixir backend waits for its runner pod: GET the pod at once,
  then sleep 1 s after every answer that is not ready yet (Running with a pod IP). The bench's
  stand-in for that backend, compared with the watch in the same run.
  """

  alias Bench.Clock
  alias FLAMEK8sBackend.Kube

  @interval_ms 1000

  @doc """
  Polls until the pod is ready or `deadline_ms` (monotonic) has passed. Returns
  `%{key: "ns/name", seen: wall µs of the ready answer, reads: GETs sent}` or `%{key:, error:}`.
  """
  def until_ready(kube, namespace, name, deadline_ms),
    do: poll(kube, namespace, name, 1, deadline_ms)

  defp poll(kube, ns, name, n, deadline_ms) do
    case Kube.get_pod(kube, ns, name) do
      {:ok, pod} ->
        seen = Clock.wall()

        cond do
          ready?(pod) ->
            %{key: "#{ns}/#{name}", seen: seen, reads: n}

          System.monotonic_time(:millisecond) > deadline_ms ->
            %{key: "#{ns}/#{name}", error: :timeout}

          true ->
            Process.sleep(@interval_ms)
            poll(kube, ns, name, n + 1, deadline_ms)
        end

      {:error, reason} ->
        %{key: "#{ns}/#{name}", error: reason}
    end
  end

  defp ready?(pod) do
    get_in(pod, ["status", "phase"]) == "Running" and
      get_in(pod, ["status", "podIP"]) not in [nil, ""]
  end
end
