defmodule FLAMEK8sBackend.Test.ClusterCase do
  @moduledoc """
  Tests against the local control plane: each test gets an admin connection (`kube`) and a
  fresh namespace (`namespace`) with a `default` ServiceAccount.
  """
  use ExUnit.CaseTemplate

  alias FLAMEK8sBackend.Test.LocalCluster

  using do
    quote do
      import FLAMEK8sBackend.Test.ClusterCase
      alias FLAMEK8sBackend.Kube
      alias FLAMEK8sBackend.Test.LocalCluster
      @moduletag :cluster
    end
  end

  setup context do
    kube = LocalCluster.kube!()

    namespace =
      LocalCluster.create_namespace!(
        kube,
        LocalCluster.namespace_name(context.module, context.test)
      )

    %{kube: kube, namespace: namespace}
  end

  @doc """
  Waits for a condition that no event announces (e.g. a Tokio task finishing after its
  cancellation). Checks every 20 ms, gives up after `timeout` ms.
  """
  def eventually(fun, timeout \\ 5_000) do
    deadline = System.monotonic_time(:millisecond) + timeout
    do_eventually(fun, deadline)
  end

  defp do_eventually(fun, deadline) do
    cond do
      fun.() ->
        true

      System.monotonic_time(:millisecond) > deadline ->
        ExUnit.Assertions.flunk("condition not met in time")

      true ->
        Process.sleep(20)
        do_eventually(fun, deadline)
    end
  end
end
