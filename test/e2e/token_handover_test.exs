defmodule FLAMEK8sBackend.TokenHandoverE2ETest do
  # `service_account_token: :handover` (the default): the runner pod mounts no token (no volume,
  # a faster start), and the parent hands the runner a token bound to its pod, which the
  # runner deletes its own pod with when it shuts down. Against the real kube-apiserver (RBAC
  # and the TokenRequest API on); the namespace gets `kube-root-ca.crt` as
  # kube-controller-manager would publish it (none runs here).
  use FLAMEK8sBackend.Test.ClusterCase, async: true

  @moduletag :e2e
  @moduletag timeout: 120_000

  import ExUnit.CaptureLog

  alias FLAMEK8sBackend.{RunnerToken, WarnOnce}
  alias FLAMEK8sBackend.Test.CleanupEvents

  setup :parent_setup

  setup %{kube: kube, namespace: ns} do
    {:ok, _} =
      Kube.request(kube, "POST", "/api/v1/namespaces/#{ns}/configmaps",
        body: %{
          "metadata" => %{"name" => "kube-root-ca.crt"},
          "data" => %{"ca.crt" => LocalCluster.info().ca_pem}
        }
      )

    # What examples/kubernetes/runner-rbac.yaml grants: delete on pods.
    rules = [%{"apiGroups" => [""], "resources" => ["pods"], "verbs" => ["delete"]}]
    _token = LocalCluster.service_account_token!(kube, ns, "flame-runner", rules)
    :ok
  end

  # Deleted: gone, or terminating within its grace period.
  defp deleted?(kube, ns, name) do
    case Kube.get_pod(kube, ns, name) do
      {:error, {:api, 404, _, _}} -> true
      {:ok, %{"metadata" => %{"deletionTimestamp" => at}}} -> is_binary(at)
      _ -> false
    end
  end

  # What FLAME's terminator does on an idle shutdown, the cleanup events of `runner_name`
  # forwarded to the test; returns once the runner's node is down.
  defp shut_down!(runner, runner_name) do
    CleanupEvents.forward!(&match?(%{name: ^runner_name}, &1))
    Node.monitor(runner, true)
    :erpc.cast(runner, FLAMEK8sBackend, :system_shutdown, [])
    assert_receive {:nodedown, ^runner}, 15_000
  end

  defp handed_over?(runner), do: match?({:ok, _}, :erpc.call(runner, RunnerToken, :kube_opts, []))

  test "a runner pod without a token volume deletes itself with the token its parent handed over",
       %{kube: kube, namespace: ns, opts: opts} do
    {:ok, state} = FLAMEK8sBackend.init(opts ++ [service_account_name: "flame-runner"])
    {:ok, terminator, state} = FLAMEK8sBackend.remote_boot(state)
    runner = node(terminator)

    {:ok, pod} = Kube.get_pod(kube, ns, state.runner_name)
    assert pod["spec"]["automountServiceAccountToken"] == false
    assert pod["spec"]["volumes"] in [nil, []]

    eventually(fn -> handed_over?(runner) end, 10_000)

    shut_down!(runner, state.runner_name)
    assert_receive {:cleanup, _, %{deleter: :runner, kind: :pod, result: :ok}}, 15_000
    assert deleted?(kube, ns, state.runner_name)
  end

  test ":mount leaves the token to the API server, and the parent hands none over",
       %{kube: kube, namespace: ns, opts: opts} do
    {:ok, state} =
      FLAMEK8sBackend.init(
        opts ++ [service_account_name: "flame-runner", service_account_token: :mount]
      )

    {:ok, terminator, state} = FLAMEK8sBackend.remote_boot(state)
    {:ok, pod} = Kube.get_pod(kube, ns, state.runner_name)
    refute Map.has_key?(pod["spec"], "automountServiceAccountToken")
    assert [%{"projected" => _}] = pod["spec"]["volumes"]
    refute handed_over?(node(terminator))
  end

  test "a parent that may not request tokens warns once; its reaper deletes the runner's pod",
       %{kube: kube, namespace: ns, opts: opts} do
    # The example Role without serviceaccounts/token.
    rules = [
      %{
        "apiGroups" => [""],
        "resources" => ["pods"],
        "verbs" => ["get", "list", "watch", "create", "delete"]
      },
      %{"apiGroups" => [""], "resources" => ["secrets"], "verbs" => ["create", "delete"]}
    ]

    token = LocalCluster.service_account_token!(kube, ns, "no-token-parent", rules)
    opts = Keyword.put(opts, :kubeconfig, LocalCluster.write_token_kubeconfig!(token))

    log =
      capture_log(fn ->
        {:ok, state} = FLAMEK8sBackend.init(opts ++ [service_account_name: "flame-runner"])
        {:ok, terminator, state} = FLAMEK8sBackend.remote_boot(state)
        runner = node(terminator)
        send(self(), {:booted, state, runner})

        # The parent's token request was refused (what the warning is logged on).
        eventually(
          fn -> WarnOnce.warned?(RunnerToken.forbidden_key(ns, "flame-runner")) end,
          10_000
        )

        shut_down!(runner, state.runner_name)
        assert_receive {:cleanup, _, %{deleter: :reaper, kind: :pod, result: :ok}}, 30_000
      end)

    assert log =~ "the parent may not request tokens for runners"
    refute_received {:cleanup, _, %{deleter: :runner}}
    assert_received {:booted, state, _runner}
    assert deleted?(kube, ns, state.runner_name)
  end
end
