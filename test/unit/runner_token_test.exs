defmodule FLAMEK8sBackend.RunnerTokenTest do
  # The runner's side of a handed-over token: what SelfDelete connects with, and that the
  # token shows nowhere.
  use ExUnit.Case, async: false

  alias FLAMEK8sBackend.RunnerToken

  doctest RunnerToken

  @env %{
    "KUBERNETES_SERVICE_HOST" => "10.96.0.1",
    "KUBERNETES_SERVICE_PORT" => "443",
    "FLAME_K8S_CA_CERT" => "-----BEGIN CERTIFICATE-----\n..."
  }

  setup do
    on_exit(fn -> :persistent_term.erase({RunnerToken, :token}) end)
    :persistent_term.erase({RunnerToken, :token})
    :ok
  end

  test "without a handed-over token there is nothing to connect with" do
    assert RunnerToken.kube_opts(@env) == :error
  end

  test "a handed-over token, the service's address and the CA make the connect options" do
    :ok = RunnerToken.put("tok-123")

    assert {:ok, opts} = RunnerToken.kube_opts(@env)
    assert opts[:url] == "https://10.96.0.1:443"
    assert opts[:token] == "tok-123"
    assert opts[:ca_cert_pem] == @env["FLAME_K8S_CA_CERT"]
  end

  test "an IPv6 service address is bracketed" do
    :ok = RunnerToken.put("tok-123")
    env = %{@env | "KUBERNETES_SERVICE_HOST" => "fd00:10:96::1"}
    assert {:ok, opts} = RunnerToken.kube_opts(env)
    assert opts[:url] == "https://[fd00:10:96::1]:443"
  end

  test "without the CA (no kube-root-ca.crt in the namespace) there is nothing to connect with" do
    :ok = RunnerToken.put("tok-123")
    assert RunnerToken.kube_opts(Map.delete(@env, "FLAME_K8S_CA_CERT")) == :error
    assert RunnerToken.kube_opts(%{@env | "FLAME_K8S_CA_CERT" => ""}) == :error
  end

  test "the kept token does not show when the runner's state is inspected" do
    :ok = RunnerToken.put("tok-secret-123")
    refute inspect(:persistent_term.get()) =~ "tok-secret-123"
  end

  test "the renewal comes at 80 % of the token's life, never in the past" do
    now = ~U[2026-12-08 00:00:00Z]
    assert RunnerToken.renew_in(now, ~U[2026-12-08 00:10:00Z]) == 480_000
    assert RunnerToken.renew_in(now, ~U[2026-12-07 23:00:00Z]) == 0
  end
end
