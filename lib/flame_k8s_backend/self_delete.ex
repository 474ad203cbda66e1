defmodule FLAMEK8sBackend.SelfDelete do
  @moduledoc """
  Runs on a runner node in `FLAMEK8sBackend.system_shutdown/0`: deletes the runner's own pod,
  named `POD_NAME`, and its secret when it has one (named by `FLAME_K8S_RUNNER_SECRET`; a runner
  whose cookie comes from the parent's Secret has none), with the pod's service account, when
  that account may. The least it needs is `delete` on `pods` (see the README's runner service
  account).

  Best effort and bounded: the parent deletes them too when it sees the runner go down, so a
  runner without credentials (or without RBAC for it) simply skips this. Each delete it sends
  is a `[:flame_k8s_backend, :cleanup, :delete]` event on the runner node (`deleter: :runner`,
  `trigger: :system_shutdown`), for a handler attached there.
  """
  require Logger

  alias FLAMEK8sBackend.{Kube, Telemetry}

  @request_timeout 1_000
  # FLAME's terminator runs system_shutdown inside a GenServer call with the default 5 s
  # timeout: stay well inside it, whatever the API server does.
  @budget 1_500

  @doc "Deletes the runner's pod (and secret) if running in a cluster; always returns `:ok`."
  @spec run() :: :ok
  def run do
    task = Task.async(&delete_own/0)
    _ = Task.yield(task, @budget) || Task.shutdown(task, :brutal_kill)
    :ok
  end

  defp delete_own do
    with host when host not in [nil, ""] <- System.get_env("KUBERNETES_SERVICE_HOST"),
         namespace when namespace not in [nil, ""] <- System.get_env("POD_NAMESPACE"),
         name when name not in [nil, ""] <- System.get_env("POD_NAME"),
         {:ok, kube} <- Kube.connect(mode: :in_cluster, request_timeout: @request_timeout) do
      meta = %{deleter: :runner, trigger: :system_shutdown, namespace: namespace, name: name}

      _ =
        case System.get_env("FLAME_K8S_RUNNER_SECRET") do
          secret when secret not in [nil, ""] ->
            Telemetry.cleanup(Map.merge(meta, %{kind: :secret, name: secret}), fn ->
              {Kube.delete_secret(kube, namespace, secret), 1}
            end)

          _ ->
            :ok
        end

      _ =
        Telemetry.cleanup(Map.put(meta, :kind, :pod), fn ->
          {Kube.delete_pod(kube, namespace, name), 1}
        end)

      :ok
    else
      _ -> :ok
    end
  rescue
    # The VM is stopping either way; never let cleanup stand in the way.
    error ->
      Logger.debug("flame_k8s_backend self-delete skipped: #{Exception.message(error)}")
      :ok
  end
end
