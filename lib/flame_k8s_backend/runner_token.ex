defmodule FLAMEK8sBackend.RunnerToken do
  @moduledoc false
  # The service-account token of a runner whose pod mounts none (`service_account_token:
  # :handover`, the default): a pod with no volume starts about 0.3 s sooner, and the runner
  # needs a token only to delete its own pod and secret when it stops (FLAMEK8sBackend.SelfDelete).
  #
  # On the parent, once the runner's pod runs, `start/1` runs a process that requests a
  # token of the pod's account bound to that pod (a TokenRequest: it stops working when the
  # pod is deleted), hands it over to the runner's node through Erlang distribution as soon as
  # the runner is up (`runner_up/2`), and requests a new one before it expires, for as long as
  # the runner's reaper lives and its node is up.
  # A 403 (the parent may not create `serviceaccounts/token`) ends it, with one warning per VM,
  # namespace and account: the parent's reaper then deletes the runner's pod, as for any runner
  # without a token. Other failures are retried with a back-off.
  #
  # On the runner, `put/1` keeps the token, and `kube_opts/1` gives `SelfDelete` what it
  # connects with: the token, the API server from the pod's `KUBERNETES_SERVICE_*` env and the
  # cluster's CA from `FLAME_K8S_CA_CERT` (the namespace's `kube-root-ca.crt` ConfigMap, which
  # the runner pod's env refers to; an env var, unlike the projected volume, is no volume).
  #
  # The token never appears in a log, an error or a crash report: it is kept in a closure
  # (which `inspect` shows as a function) up to the send, and the send lets nothing raise.
  alias FLAMEK8sBackend.{Kube, WarnOnce}

  @ca_env "FLAME_K8S_CA_CERT"
  @key {__MODULE__, :token}
  # What is asked for; the API server may give less (`--service-account-max-token-expiration`).
  @lifetime_s 3_600
  # A new token is requested once this share of the old one's life has passed.
  @renew_share 0.8
  @retry_min 1_000
  @retry_max 60_000

  @typedoc "What the parent's handover process needs: `start/1`."
  @type handover :: %{
          kube: Kube.t(),
          namespace: String.t(),
          service_account: String.t(),
          pod: String.t(),
          reaper: pid()
        }

  @doc "The runner pod's env var that brings the cluster's CA (no volume)."
  @spec ca_env() :: map()
  def ca_env do
    %{
      "name" => @ca_env,
      "valueFrom" => %{
        "configMapKeyRef" => %{
          "name" => "kube-root-ca.crt",
          "key" => "ca.crt",
          "optional" => true
        }
      }
    }
  end

  @doc """
  Starts the parent's handover for one runner pod, once the pod runs, under the reapers'
  supervisor (see `runner_up/2`): it ends with the runner's reaper or node.
  """
  @spec start(handover()) :: DynamicSupervisor.on_start_child()
  def start(handover) do
    DynamicSupervisor.start_child(FLAMEK8sBackend.ReaperSupervisor, %{
      id: __MODULE__,
      start: {Task, :start_link, [fn -> run(handover) end]},
      restart: :temporary
    })
  end

  @doc """
  The TokenRequest body for a token bound to `pod`.

      iex> FLAMEK8sBackend.RunnerToken.request_body("runner-x7k2p")["spec"]["boundObjectRef"]
      %{"apiVersion" => "v1", "kind" => "Pod", "name" => "runner-x7k2p"}
  """
  @spec request_body(String.t()) :: map()
  def request_body(pod) do
    %{
      "apiVersion" => "authentication.k8s.io/v1",
      "kind" => "TokenRequest",
      "spec" => %{
        "expirationSeconds" => @lifetime_s,
        "boundObjectRef" => %{"apiVersion" => "v1", "kind" => "Pod", "name" => pod}
      }
    }
  end

  @doc """
  In how many ms to request the next token, for one that expires `expires_at` and was issued
  at `now`.

      iex> now = ~U[2026-12-08 00:00:00Z]
      iex> FLAMEK8sBackend.RunnerToken.renew_in(now, ~U[2026-12-08 01:00:00Z])
      2_880_000
  """
  @spec renew_in(DateTime.t(), DateTime.t()) :: non_neg_integer()
  def renew_in(now, expires_at),
    do: max(round(DateTime.diff(expires_at, now, :millisecond) * @renew_share), 0)

  @doc """
  Tells the handover of `pid` that the runner is up on `runner_node`: it hands the token over
  at once if it has one, else as soon as it has.
  """
  @spec runner_up(pid(), node()) :: :ok
  def runner_up(pid, runner_node) do
    send(pid, {:runner_up, runner_node})
    :ok
  end

  # The first token is requested as soon as the pod runs, so that it is there when the
  # runner comes up: a runner that stops right after its first call (a single-use runner, a
  # pool stopped at once) has it by then.
  defp run(handover) do
    reaper = Process.monitor(handover.reaper)

    request(%{
      handover: handover,
      reaper: reaper,
      runner_node: nil,
      token: nil,
      retry: @retry_min
    })
  end

  defp request(state) do
    case request_token(state.handover) do
      {:ok, token, renew_in} ->
        :ok = hand_over(state.runner_node, token)
        wait(%{state | token: token, retry: @retry_min}, deadline(renew_in))

      {:error, {:api, 403, _, message}} ->
        warn_once(state.handover, message)

      # Anything else, a 404 for a pod just created included, may pass: this process ends
      # with the reaper anyway.
      {:error, _reason} ->
        wait(%{state | retry: min(state.retry * 2, @retry_max)}, deadline(state.retry))
    end
  end

  # Until the next request is due, the reaper is gone, or the runner's node is.
  defp wait(state, deadline) do
    receive do
      {:runner_up, runner_node} ->
        :erlang.monitor_node(runner_node, true)
        _ = if state.token, do: hand_over(runner_node, state.token)
        wait(%{state | runner_node: runner_node}, deadline)

      {:DOWN, ref, :process, _, _} when ref == state.reaper ->
        :ok

      {:nodedown, runner_node} when runner_node == state.runner_node ->
        :ok
    after
      max(deadline - System.monotonic_time(:millisecond), 0) -> request(state)
    end
  end

  defp deadline(ms), do: System.monotonic_time(:millisecond) + ms

  # The token leaves this function only in a closure.
  defp request_token(handover) do
    path =
      "/api/v1/namespaces/#{handover.namespace}/serviceaccounts/" <>
        "#{handover.service_account}/token"

    case Kube.request(handover.kube, "POST", path, body: request_body(handover.pod)) do
      {:ok, %{"status" => %{"token" => token, "expirationTimestamp" => expires}}}
      when is_binary(token) and is_binary(expires) ->
        case DateTime.from_iso8601(expires) do
          {:ok, expires_at, _} -> {:ok, fn -> token end, renew_in(DateTime.utc_now(), expires_at)}
          {:error, _} -> {:error, :bad_expiration}
        end

      {:ok, _other} ->
        {:error, :no_token}

      {:error, _} = error ->
        error
    end
  end

  # Through distribution, to a process of the runner's own (erpc): a runner that cannot take
  # it (an older release) changes nothing here. Nothing raised here may carry the arguments.
  defp hand_over(nil, _token), do: :ok

  defp hand_over(runner_node, token) do
    :erpc.cast(runner_node, __MODULE__, :put, [token.()])
  catch
    _kind, _reason -> :ok
  end

  defp warn_once(handover, message) do
    WarnOnce.warn(forbidden_key(handover.namespace, handover.service_account), fn ->
      "flame_k8s_backend: the parent may not request tokens for runners " <>
        "(#{message}); runners cannot delete their own pods, the parent deletes them. " <>
        "Allow create on serviceaccounts/token, or set service_account_token: :mount"
    end)
  end

  @doc "The `FLAMEK8sBackend.WarnOnce` key of the warning that `namespace`'s `account` is refused."
  @spec forbidden_key(String.t(), String.t()) :: term()
  def forbidden_key(namespace, account), do: {__MODULE__, :forbidden, namespace, account}

  @doc """
  On the runner: keeps the token the parent handed over (`FLAMEK8sBackend.SelfDelete` reads
  it with `kube_opts/1`).
  """
  @spec put(String.t()) :: :ok
  def put(token) when is_binary(token), do: :persistent_term.put(@key, fn -> token end)
  def put(_other), do: :ok

  @doc """
  On the runner: the `FLAMEK8sBackend.Kube.connect/1` options of the handed-over token, or
  `:error` without one (or without the API server's address or CA in the pod's env).
  """
  @spec kube_opts(%{String.t() => String.t()}) :: {:ok, keyword()} | :error
  def kube_opts(env \\ System.get_env()) do
    with token when is_function(token, 0) <- :persistent_term.get(@key, nil),
         %{"KUBERNETES_SERVICE_HOST" => host, @ca_env => ca} when host != "" and ca != "" <- env do
      port = Map.get(env, "KUBERNETES_SERVICE_PORT", "443")
      host = if String.contains?(host, ":"), do: "[#{host}]", else: host
      {:ok, url: "https://#{host}:#{port}", ca_cert_pem: ca, token: token.()}
    else
      _ -> :error
    end
  end
end
