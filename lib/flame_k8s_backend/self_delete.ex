defmodule FLAMEK8sBackend.SelfDelete do
  @moduledoc """
  Runs on a runner node in `FLAMEK8sBackend.system_shutdown/0`: deletes the runner's own pod,
  named `POD_NAME`, and its secret when it has one (named by `FLAME_K8S_RUNNER_SECRET`; a runner
  whose cookie comes from the parent's Secret has none), with the pod's service account, when
  that account may. The least it needs is `delete` on `pods` (see the README's runner service
  account). It then tells the parent's reaper what it deleted (`notify_reaper/2`), so the
  parent sends no DELETE of its own: a boot costs one DELETE, not two.

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

  @doc """
  Tells the parent's reaper of this runner (`FLAME_K8S_REAPER`, as `encode_reaper/1` wrote it)
  which of `deleted` (`:pod`, `:secret`) the runner deleted itself, so that it does not send
  the same DELETEs again once this node is down. Anything but a pid in `encoded` is ignored.
  """
  @spec notify_reaper(String.t() | nil, [:pod | :secret]) :: :ok
  def notify_reaper(encoded, deleted) do
    with true <- is_binary(encoded) and deleted != [],
         {:ok, binary} <- Base.url_decode64(encoded, padding: false),
         reaper when is_pid(reaper) <- safe_binary_to_term(binary) do
      send(reaper, {FLAMEK8sBackend.Reaper, :self_deleted, deleted})
    end

    :ok
  end

  @doc "The `FLAME_K8S_REAPER` value naming `reaper` for `notify_reaper/2`."
  @spec encode_reaper(pid()) :: String.t()
  def encode_reaper(reaper) when is_pid(reaper),
    do: reaper |> :erlang.term_to_binary() |> Base.url_encode64(padding: false)

  # :safe: no atom is created (the parent's node name is known here since it connected).
  defp safe_binary_to_term(binary) do
    :erlang.binary_to_term(binary, [:safe])
  rescue
    ArgumentError -> nil
  end

  defp delete_own do
    with host when host not in [nil, ""] <- System.get_env("KUBERNETES_SERVICE_HOST"),
         namespace when namespace not in [nil, ""] <- System.get_env("POD_NAMESPACE"),
         name when name not in [nil, ""] <- System.get_env("POD_NAME"),
         {:ok, kube} <- Kube.connect(mode: :in_cluster, request_timeout: @request_timeout) do
      meta = %{deleter: :runner, trigger: :system_shutdown, namespace: namespace, name: name}

      secret =
        case System.get_env("FLAME_K8S_RUNNER_SECRET") do
          secret when secret not in [nil, ""] ->
            Telemetry.cleanup(Map.merge(meta, %{kind: :secret, name: secret}), fn ->
              {Kube.delete_secret(kube, namespace, secret), 1}
            end)

          _ ->
            :none
        end

      pod =
        Telemetry.cleanup(Map.put(meta, :kind, :pod), fn ->
          {Kube.delete_pod(kube, namespace, name), 1}
        end)

      deleted = for {kind, :ok} <- [pod: pod, secret: secret], do: kind
      notify_reaper(System.get_env("FLAME_K8S_REAPER"), deleted)
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
