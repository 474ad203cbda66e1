defmodule FLAMEK8sBackend.Test.Soak do
  @moduledoc """
  Leak checks shared by the fault tests and the soak: runner pods and secrets are found by the
  backend's identifying label.
  """

  alias FLAMEK8sBackend.Kube

  @selector "app.kubernetes.io/managed-by=flame_k8s_backend"

  @doc "Names of the runner pods and secrets left in `namespace`."
  @spec runner_objects(Kube.t(), String.t()) :: %{pods: [String.t()], secrets: [String.t()]}
  def runner_objects(kube, namespace) do
    %{pods: names(kube, namespace, "pods"), secrets: names(kube, namespace, "secrets")}
  end

  @doc """
  Waits until no runner pod or secret is left in `namespace` (cleanup is asynchronous: a
  runner deletes itself, the reaper waits for its node to go down; no event announces the
  last delete), checking every 200 ms. Returns `:ok` or `{:leaked, objects}` after `timeout`.
  """
  @spec await_no_runner_objects(Kube.t(), String.t(), pos_integer()) ::
          :ok | {:leaked, map()}
  def await_no_runner_objects(kube, namespace, timeout) do
    deadline = System.monotonic_time(:millisecond) + timeout
    await_none(kube, namespace, deadline)
  end

  defp await_none(kube, namespace, deadline) do
    case runner_objects(kube, namespace) do
      %{pods: [], secrets: []} ->
        :ok

      left ->
        if System.monotonic_time(:millisecond) > deadline do
          {:leaked, left}
        else
          Process.sleep(200)
          await_none(kube, namespace, deadline)
        end
    end
  end

  defp names(kube, namespace, resource) do
    {:ok, %{"items" => items}} =
      Kube.request(
        kube,
        "GET",
        "/api/v1/namespaces/#{namespace}/#{resource}?labelSelector=#{URI.encode_www_form(@selector)}"
      )

    Enum.map(items, & &1["metadata"]["name"])
  end
end
