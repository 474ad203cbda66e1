defmodule FLAMEK8sBackend.TokenVolumeE2ETest do
  # The API server's ServiceAccount admission plugin gives the parent pod a `kube-api-access-*`
  # volume with its account's token. A runner built from the parent must not inherit it: its
  # token is the API server's to inject (for the runner's own account), or none at all when
  # that account, or the runner's manifest, says `automountServiceAccountToken: false`.
  use FLAMEK8sBackend.Test.ClusterCase, async: true

  @moduletag :e2e

  @token_path "/var/run/secrets/kubernetes.io/serviceaccount"

  defp token_volumes(pod) do
    for %{"projected" => %{"sources" => sources}} = volume <- pod["spec"]["volumes"] || [],
        Enum.any?(sources, &Map.has_key?(&1, "serviceAccountToken")),
        do: volume["name"]
  end

  defp token_mounts(pod) do
    for container <- pod["spec"]["containers"],
        %{"mountPath" => @token_path} = mount <- container["volumeMounts"] || [],
        do: mount["name"]
  end

  defp service_account!(kube, ns, name, automount) do
    {:ok, _} =
      Kube.request(kube, "POST", "/api/v1/namespaces/#{ns}/serviceaccounts",
        body: %{"metadata" => %{"name" => name}, "automountServiceAccountToken" => automount}
      )
  end

  # The runner pod as the API server admits it: created on a node nothing runs, so that it
  # stays as admitted.
  defp admitted_runner!(kube, ns, opts) do
    base = [parent_pod: {ns, "parent"}, kubeconfig: LocalCluster.info().kubeconfig]
    {:ok, state} = FLAMEK8sBackend.init(base ++ opts)
    %{pod: pod} = FLAMEK8sBackend.runner_manifests(state)
    {:ok, created} = Kube.create_pod(kube, ns, put_in(pod, ["spec", "nodeName"], "elsewhere"))
    :ok = Kube.delete_pod(kube, ns, state.runner_name, grace_period: 0)
    created
  end

  test "a runner gets its own account's token from the API server, or none; never the parent's",
       %{kube: kube, namespace: ns} do
    parent = LocalCluster.create_parent_pod!(kube, ns)
    # What the runner would copy: the parent has its token volume.
    assert [parent_volume] = token_volumes(parent)
    assert [^parent_volume] = token_mounts(parent)

    service_account!(kube, ns, "no-token", false)
    service_account!(kube, ns, "runner", true)

    # automountServiceAccountToken: false on the runner's account, or in its manifest.
    for opts <- [
          [service_account_name: "no-token"],
          [manifest: %{"spec" => %{"automountServiceAccountToken" => false}}]
        ] do
      opts = [service_account_token: :mount] ++ opts
      runner = admitted_runner!(kube, ns, opts)
      assert token_volumes(runner) == [], "#{inspect(opts)}"
      assert token_mounts(runner) == [], "#{inspect(opts)}"
    end

    # By default (service_account_token: :handover) none, whatever the account says.
    runner = admitted_runner!(kube, ns, service_account_name: "runner")
    assert token_volumes(runner) == []
    assert token_mounts(runner) == []

    # With :mount, its own account's: the API server's injection, not the parent's copy.
    runner =
      admitted_runner!(kube, ns, service_account_name: "runner", service_account_token: :mount)

    assert runner["spec"]["serviceAccountName"] == "runner"
    assert [own] = token_volumes(runner)
    assert own != parent_volume
    assert token_mounts(runner) == [own]
  end
end
