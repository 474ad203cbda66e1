defmodule FLAMEK8sBackend.SelfDelete do
  @moduledoc false
  # Runs on a runner node in `FLAMEK8sBackend.system_shutdown/0`: deletes the runner's own pod,
  # named `POD_NAME`, and its secret when it has one (named by `FLAME_K8S_RUNNER_SECRET`; a runner
  # whose cookie comes from the parent's Secret has none), with the pod's service account (the
  # token its parent handed over, `FLAMEK8sBackend.RunnerToken`, or a mounted one), when that
  # account may. The least it needs is `delete` on `pods` (see
  # [Runner service account](kubernetes-setup.md#runner-service-account)). It then reports each delete it sent to the parent's reaper (`report/3`): the parent
  # sends no DELETE of its own for what the runner deleted (a boot costs one DELETE, not two),
  # and emits the `[:flame_k8s_backend, :cleanup, :delete]` event of each (`deleter: :runner`,
  # `trigger: :system_shutdown`), where the app's handlers are.
  #
  # Best effort and bounded: the parent deletes them too when it sees the runner go down, so a
  # runner without credentials (or without RBAC for it) simply skips this.
  #
  # It runs inside FLAME's terminator, which traps exits and crashes on any message it does not
  # expect; a crash there makes FLAME start a new terminator, which stops the system (and so
  # deletes the pod) a second time. So the deletes run in a process of its own that is neither
  # linked nor left behind: `run/0` returns once that process is gone, leaving no message in
  # the caller's mailbox, and FLAME's terminator (which calls `system_shutdown/0` once) makes it
  # one DELETE per runner.
  require Logger

  alias FLAMEK8sBackend.{Kube, RunnerToken, Telemetry}

  @request_timeout 1_000
  # FLAME's terminator runs system_shutdown inside a GenServer call with the default 5 s
  # timeout: stay well inside it, whatever the API server does.
  @budget 1_500

  @doc """
  Deletes the runner's pod (and secret) if running in a cluster; always returns `:ok`, within
  the budget, with the process that did it gone and nothing sent to the caller.
  """
  @spec run() :: :ok
  def run do
    {pid, monitor} = spawn_monitor(&delete_own/0)

    receive do
      {:DOWN, ^monitor, :process, ^pid, _reason} -> :ok
    after
      @budget ->
        Process.exit(pid, :kill)

        receive do
          {:DOWN, ^monitor, :process, ^pid, _reason} -> :ok
        end
    end
  end

  @typedoc """
  A delete the runner sent: what (`:kind`, `:name`), its `:result`, how long it took on
  the runner, in microseconds (`:duration_us`), and whether the runner's VM was already
  stopping (`:stopping`: SIGTERM, its pod deleted by someone else) rather than shutting down.
  """
  @type deletion :: %{
          required(:kind) => :pod | :secret,
          required(:name) => String.t(),
          required(:result) => :ok | {:error, term()},
          required(:duration_us) => non_neg_integer(),
          optional(:stopping) => boolean()
        }

  @doc """
  Reports the runner's `deletions` in `namespace` to the parent's reaper of this runner,
  named by `encoded` (`FLAME_K8S_REAPER`, as `encode_reaper/1` wrote it), as
  `{FLAMEK8sBackend.Reaper, :self_deleted, deletions}`: the reaper emits their cleanup events
  on the parent and does not send the DELETEs that worked again once this node is down.
  Without a reaper to tell (`encoded` is not a pid), the events are emitted here, on the
  runner's node.
  """
  @spec report(String.t() | nil, String.t(), [deletion()]) :: :ok
  def report(encoded, namespace, deletions) do
    case decode_reaper(encoded) do
      reaper when is_pid(reaper) ->
        if deletions != [], do: send(reaper, {FLAMEK8sBackend.Reaper, :self_deleted, deletions})
        :ok

      nil ->
        Enum.each(deletions, &Telemetry.runner_cleanup(namespace, &1))
    end
  end

  defp decode_reaper(encoded) do
    with true <- is_binary(encoded),
         {:ok, binary} <- Base.url_decode64(encoded, padding: false),
         reaper when is_pid(reaper) <- safe_binary_to_term(binary) do
      reaper
    else
      _ -> nil
    end
  end

  @doc "The `FLAME_K8S_REAPER` value naming `reaper` for `report/3`."
  @spec encode_reaper(pid()) :: String.t()
  def encode_reaper(reaper) when is_pid(reaper),
    do: reaper |> :erlang.term_to_binary() |> Base.url_encode64(padding: false)

  defp timed(kind, name, delete) do
    start = System.monotonic_time(:microsecond)
    result = delete.()
    duration = System.monotonic_time(:microsecond) - start
    %{kind: kind, name: name, result: result, duration_us: duration, stopping: stopping?()}
  end

  # The VM was already stopping (init:stop, as on SIGTERM: the pod was deleted by someone
  # else) rather than shutting down idle: the parent's reaper tells the two apart by this.
  defp stopping?, do: elem(:init.get_status(), 0) == :stopping

  # :safe: no atom is created (the parent's node name is known here since it connected).
  defp safe_binary_to_term(binary) do
    :erlang.binary_to_term(binary, [:safe])
  rescue
    ArgumentError -> nil
  end

  # The token the parent handed over (the pod mounts none by default), else the mounted one.
  defp credentials do
    case RunnerToken.kube_opts() do
      {:ok, opts} -> opts
      :error -> [mode: :in_cluster]
    end
  end

  defp delete_own do
    with host when host not in [nil, ""] <- System.get_env("KUBERNETES_SERVICE_HOST"),
         namespace when namespace not in [nil, ""] <- System.get_env("POD_NAMESPACE"),
         name when name not in [nil, ""] <- System.get_env("POD_NAME"),
         {:ok, kube} <- Kube.connect([request_timeout: @request_timeout] ++ credentials()) do
      secret =
        case System.get_env("FLAME_K8S_RUNNER_SECRET") do
          secret when secret not in [nil, ""] ->
            [timed(:secret, secret, fn -> Kube.delete_secret(kube, namespace, secret) end)]

          _ ->
            []
        end

      pod = timed(:pod, name, fn -> Kube.delete_pod(kube, namespace, name) end)
      report(System.get_env("FLAME_K8S_REAPER"), namespace, secret ++ [pod])
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
