defmodule FLAMEK8sBackend.AppConfigTest do
  # `config :flame, FLAMEK8sBackend, ...` is read by init/1 itself (FLAME merges app env only
  # for a bare-module backend); global state, hence not async.
  use ExUnit.Case, async: false

  @moduletag :unit

  setup do
    pod_name = System.get_env("POD_NAME")

    on_exit(fn ->
      Application.delete_env(:flame, FLAMEK8sBackend)
      if pod_name, do: System.put_env("POD_NAME", pod_name)
    end)
  end

  test "options from config :flame, FLAMEK8sBackend are validated like given ones" do
    Application.put_env(:flame, FLAMEK8sBackend, boot_timout: 1)

    error = assert_raise ArgumentError, fn -> FLAMEK8sBackend.init([]) end
    assert error.message =~ "unknown option(s) [:boot_timout]"
  end

  test "given options win over config" do
    Application.put_env(:flame, FLAMEK8sBackend, boot_timeout: "soon")
    # A valid given :boot_timeout replaces the invalid configured one, so validation passes
    # and init goes on to the next step: no POD_NAMESPACE/POD_NAME here.
    System.delete_env("POD_NAME")

    assert {:error, %FLAMEK8sBackend.BootError{phase: phase}} =
             FLAMEK8sBackend.init(boot_timeout: 1_000, kubeconfig: "/nonexistent/kubeconfig")

    assert phase in [:connect, :parent_pod]
  end
end
