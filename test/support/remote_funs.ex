defmodule FLAMEK8sBackend.Test.RemoteFuns do
  @moduledoc """
  Functions run on runner nodes. They live in test/support (compiled to disk) rather than in
  test modules (compiled in memory), so the runner node has the same code.
  """

  @doc "Where am I? Node and the pod's env as the kubelet set it."
  def whereami do
    %{
      node: node(),
      pod_name: System.get_env("POD_NAME"),
      pod_namespace: System.get_env("POD_NAMESPACE"),
      pod_ip: System.get_env("POD_IP"),
      phx_server: System.get_env("PHX_SERVER"),
      from_parent: System.get_env("FROM_PARENT"),
      secret: System.get_env("SECRET_SETTING"),
      cookie_set?: System.get_env("RELEASE_COOKIE") not in [nil, ""]
    }
  end

  @doc "A closure computed remotely."
  def square(x), do: fn -> {node(), x * x} end

  def add(a, b), do: {node(), a + b}

  @doc "Stops the runner VM abruptly."
  def halt_vm, do: fn -> System.halt(1) end

  @doc "Reports arrival to `test`, then waits for `:go` and returns the runner's node."
  def rendezvous(test) do
    fn ->
      send(test, {:arrived, node(), self()})

      receive do
        :go -> node()
      end
    end
  end
end
