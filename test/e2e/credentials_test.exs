defmodule FLAMEK8sBackend.CredentialsE2ETest do
  # Credentials that change under a running parent, against the local control plane.
  #
  # In a pod the token is a file (/var/run/secrets/kubernetes.io/serviceaccount/token) that the
  # kubelet rewrites on rotation; kube-rs reads it as a `tokenFile`, the same mechanism a
  # kubeconfig's `tokenFile` uses. So the rotation is played here with a kubeconfig whose
  # tokenFile is rewritten (atomically, as the kubelet does), without touching /var/run or the
  # VM's environment: ServiceAccount tokens from the TokenRequest API, bound to a Secret each,
  # are revoked by deleting that Secret.
  use FLAMEK8sBackend.Test.ClusterCase, async: true

  @moduletag :e2e
  @moduletag timeout: 180_000

  @rules [
    %{"apiGroups" => [""], "resources" => ["pods"], "verbs" => ["get", "list"]}
  ]

  # Mints a token for `sa`, bound to a Secret of its own: deleting that Secret revokes it.
  defp bound_token!(kube, ns, sa, bound) do
    {:ok, secret} =
      Kube.create_secret(kube, ns, %{
        "metadata" => %{"name" => bound},
        "stringData" => %{"x" => "y"}
      })

    {:ok, %{"status" => %{"token" => token}}} =
      Kube.request(kube, "POST", "/api/v1/namespaces/#{ns}/serviceaccounts/#{sa}/token",
        body: %{
          "spec" => %{
            "expirationSeconds" => 600,
            "boundObjectRef" => %{
              "apiVersion" => "v1",
              "kind" => "Secret",
              "name" => bound,
              "uid" => secret["uid"]
            }
          }
        }
      )

    token
  end

  defp revoke!(kube, ns, bound), do: :ok = Kube.delete_secret(kube, ns, bound)

  defp token_file_kubeconfig!(token_file),
    do: LocalCluster.write_kubeconfig!(%{"tokenFile" => token_file})

  # As the kubelet does: write aside, then rename over the old file.
  defp rotate!(token_file, token) do
    tmp = token_file <> ".tmp"
    File.write!(tmp, token)
    File.rename!(tmp, token_file)
  end

  setup %{kube: kube, namespace: ns} do
    LocalCluster.service_account_token!(kube, ns, "rotating", @rules)
    dir = Path.join(LocalCluster.info().state_dir, "token-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    %{token_file: Path.join(dir, "token")}
  end

  test "a revoked token gives a 401 error that says so", %{kube: kube, namespace: ns} do
    token = bound_token!(kube, ns, "rotating", "bound-revoked")
    info = LocalCluster.info()
    {:ok, sa} = Kube.connect(url: info.server, ca_cert_pem: info.ca_pem, token: token)
    assert {:ok, _} = Kube.list_pods(sa, ns)

    revoke!(kube, ns, "bound-revoked")

    assert {:error, {:api, 401, reason, message} = error} =
             eventually_error(fn -> Kube.list_pods(sa, ns) end)

    IO.puts("revoked token: #{inspect(error)}")
    assert reason == "Unauthorized"
    refute message =~ token
  end

  test "a revoked token at boot: the BootError says 401 Unauthorized", %{
    kube: kube,
    namespace: ns,
    token_file: token_file
  } do
    LocalCluster.create_parent_pod!(kube, ns)
    token = bound_token!(kube, ns, "rotating", "bound-boot")
    File.write!(token_file, token)
    revoke!(kube, ns, "bound-boot")

    opts = [
      parent_pod: {ns, "parent"},
      kubeconfig: token_file_kubeconfig!(token_file),
      boot_timeout: 10_000
    ]

    result = eventually_init_error(opts)
    IO.puts("revoked token at init: #{inspect(result)}")

    assert {:error, %FLAMEK8sBackend.BootError{reason: {:api, 401, "Unauthorized", _}} = error} =
             result

    message = Exception.message(error)
    assert message =~ "401"
    assert message =~ "rejected the credentials (the token is expired, revoked"
    refute message =~ token
  end

  test "the token file is rewritten and the old token revoked: requests go on", %{
    kube: kube,
    namespace: ns,
    token_file: token_file
  } do
    old = bound_token!(kube, ns, "rotating", "bound-old")
    new = bound_token!(kube, ns, "rotating", "bound-new")
    File.write!(token_file, old)
    {:ok, client} = Kube.connect(kubeconfig: token_file_kubeconfig!(token_file))
    assert {:ok, _} = Kube.list_pods(client, ns)

    rotate!(token_file, new)
    revoke!(kube, ns, "bound-old")
    # The API server's token cache accepts the old token a few seconds more: measure from the
    # moment it is refused.
    assert {:error, {:api, 401, _, _}} = wait_until_refused(old, ns)
    started = System.monotonic_time(:millisecond)

    # A 401 re-reads the file: the first request succeeds. Printed: how many were refused.
    {first, failures} = first_success(fn -> Kube.list_pods(client, ns) end, 75_000)
    waited = System.monotonic_time(:millisecond) - started

    IO.puts(
      "token rotation: first request once the old token is refused: #{inspect(first, limit: 3)}; " <>
        "#{failures} request(s) refused before one succeeded, #{waited} ms later"
    )

    assert {:ok, _} = first
    assert failures == 0
  end

  test "a token file that now holds a revoked token too: the 401 is the answer, once", %{
    kube: kube,
    namespace: ns,
    token_file: token_file
  } do
    token = bound_token!(kube, ns, "rotating", "bound-only")
    File.write!(token_file, token)
    {:ok, client} = Kube.connect(kubeconfig: token_file_kubeconfig!(token_file))
    assert {:ok, _} = Kube.list_pods(client, ns)
    revoke!(kube, ns, "bound-only")
    wait_until_refused(token, ns)

    assert {:error, {:api, 401, "Unauthorized", message}} = Kube.list_pods(client, ns)
    refute message =~ token
  end

  # A 401 makes the NIF re-read the token file and send the request once more with the new
  # token (native/flame_k8s_native/src/api/auth.rs).
  test "the token file is rewritten and the old token revoked: the next request works", %{
    kube: kube,
    namespace: ns,
    token_file: token_file
  } do
    old = bound_token!(kube, ns, "rotating", "bound-old2")
    new = bound_token!(kube, ns, "rotating", "bound-new2")
    File.write!(token_file, old)
    {:ok, client} = Kube.connect(kubeconfig: token_file_kubeconfig!(token_file))
    assert {:ok, _} = Kube.list_pods(client, ns)
    rotate!(token_file, new)
    revoke!(kube, ns, "bound-old2")
    # The API server's token cache may accept the old token for a moment after the Secret
    # is gone: the next request is the first one the old token is refused for.
    wait_until_refused(old, ns)
    assert {:ok, _} = Kube.list_pods(client, ns)
  end

  defp wait_until_refused(token, ns) do
    info = LocalCluster.info()
    {:ok, probe} = Kube.connect(url: info.server, ca_cert_pem: info.ca_pem, token: token)
    eventually_error(fn -> Kube.list_pods(probe, ns) end)
  end

  # The API server may go on accepting a revoked token for a moment (its authentication
  # cache): the first error within 15 s.
  defp eventually_error(fun, deadline \\ nil) do
    deadline = deadline || System.monotonic_time(:millisecond) + 15_000

    case fun.() do
      {:error, _} = error ->
        error

      {:ok, _} = ok ->
        if System.monotonic_time(:millisecond) > deadline do
          ok
        else
          Process.sleep(200)
          eventually_error(fun, deadline)
        end
    end
  end

  defp eventually_init_error(opts, deadline \\ nil) do
    deadline = deadline || System.monotonic_time(:millisecond) + 15_000

    case FLAMEK8sBackend.init(opts) do
      {:error, _} = error ->
        error

      {:ok, state} = ok ->
        case FLAMEK8sBackend.remote_boot(state) do
          {:error, %{reason: {:api, 401, _, _}}} = error ->
            error

          _ when is_integer(deadline) ->
            if System.monotonic_time(:millisecond) > deadline,
              do: ok,
              else: Process.sleep(200) && eventually_init_error(opts, deadline)
        end
    end
  end

  defp first_success(fun, within, failures \\ 0) do
    case fun.() do
      {:ok, _} = ok ->
        {ok, failures}

      error when within <= 0 ->
        {error, failures + 1}

      _error ->
        Process.sleep(500)
        first_success(fun, within - 500, failures + 1)
    end
  end
end
