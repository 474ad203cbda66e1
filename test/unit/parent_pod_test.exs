defmodule FLAMEK8sBackend.ParentPodTest do
  use ExUnit.Case, async: true

  @moduletag :unit
  doctest FLAMEK8sBackend.ParentPod

  alias FLAMEK8sBackend.{BootError, Kube, ParentPod}

  describe "id/2" do
    test "the :parent_pod option wins over the downward API's variables" do
      env = %{"POD_NAMESPACE" => "prod", "POD_NAME" => "web-1"}
      assert ParentPod.id({"dev", "web-2"}, env) == {:ok, {"dev", "web-2"}}
    end

    test "without either, the error says which variables to set" do
      for env <- [%{}, %{"POD_NAMESPACE" => "prod"}, %{"POD_NAMESPACE" => "", "POD_NAME" => "x"}] do
        assert {:error, %BootError{phase: :parent_pod, reason: {:config, message}} = error} =
                 ParentPod.id(nil, env)

        assert message =~ "POD_NAMESPACE and POD_NAME"
        assert Exception.message(error) =~ "reading the parent pod"
      end
    end
  end

  test "fetch/2: an unreachable API server is an error of the :parent_pod phase" do
    {:ok, kube} = Kube.connect(url: "https://127.0.0.1:1", token: "t0k3n", request_timeout: 2_000)

    assert {:error, %BootError{phase: :parent_pod, reason: {:connect, _}} = error} =
             ParentPod.fetch(kube, {"prod", "web-1"})

    refute Exception.message(error) =~ "t0k3n"
  end
end
