defmodule FLAMEK8sBackend.AppConfigTest do
  # `config :flame, FLAMEK8sBackend, ...` is read by init/1 itself (FLAME merges app env only
  # for a bare-module backend); global state, hence not async.
  use ExUnit.Case, async: false

  setup do
    on_exit(fn -> Application.delete_env(:flame, FLAMEK8sBackend) end)
  end

  test "options from config :flame, FLAMEK8sBackend are validated like given ones" do
    Application.put_env(:flame, FLAMEK8sBackend, boot_timout: 1)

    error = assert_raise ArgumentError, fn -> FLAMEK8sBackend.init([]) end
    assert error.message =~ "unknown option(s) [:boot_timout]"
  end

  test "given options win over config" do
    Application.put_env(:flame, FLAMEK8sBackend, log: :loud)
    # A valid given :log replaces the invalid configured one, so validation passes and init
    # goes on to the next step: no POD_NAMESPACE/POD_NAME here.
    System.delete_env("POD_NAME")

    assert {:error, %FLAMEK8sBackend.BootError{phase: phase}} =
             FLAMEK8sBackend.init(log: false, kubeconfig: "/nonexistent/kubeconfig")

    assert phase in [:connect, :parent_pod]
  end
end
