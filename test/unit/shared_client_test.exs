defmodule FLAMEK8sBackend.SharedClientTest do
  use ExUnit.Case, async: true

  @moduletag :unit
  @moduletag :tmp_dir
  doctest FLAMEK8sBackend.SharedClient

  alias FLAMEK8sBackend.{BootError, Options, SharedClient}

  @token "s3cr3t-token-value"

  defp kubeconfig!(dir) do
    path = Path.join(dir, "kubeconfig")

    File.write!(path, """
    apiVersion: v1
    kind: Config
    clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
    users: [{name: u, user: {token: #{@token}}}]
    contexts: [{name: ctx, context: {cluster: c, user: u}}]
    current-context: ctx
    """)

    path
  end

  test "one client per connection settings, shared by every init", %{tmp_dir: dir} do
    opts = Options.validate!(kubeconfig: kubeconfig!(dir))

    assert {:ok, kube} = SharedClient.get(opts)
    assert {:ok, again} = SharedClient.get(opts)
    assert again.resource == kube.resource

    assert {:ok, other} = SharedClient.get(%{opts | request_timeout: 1_234})
    refute other.resource == kube.resource
    assert other.request_timeout == 1_234
  end

  test "settings that cannot connect are a :connect error, and nothing is kept", %{tmp_dir: dir} do
    opts = Options.validate!(kubeconfig: kubeconfig!(dir), context: "nope")

    for _ <- 1..2 do
      assert {:error, %BootError{phase: :connect, reason: {:config, message}}} =
               SharedClient.get(opts)

      assert message =~ "nope"
      refute message =~ @token
    end
  end

  test "concurrent first calls connect once and share that client", %{tmp_dir: dir} do
    # Settings no other test uses, so that this is their first connect.
    opts = %{
      Options.validate!(kubeconfig: kubeconfig!(dir))
      | request_timeout: 100_000 + System.unique_integer([:positive])
    }

    test = self()

    tasks =
      for _ <- 1..8 do
        Task.async(fn ->
          send(test, {:ready, self()})

          receive do
            :go -> SharedClient.get(opts)
          end
        end)
      end

    pids = for _ <- tasks, do: assert_receive({:ready, pid}) && pid
    Enum.each(pids, &send(&1, :go))
    resources = for task <- tasks, do: elem(Task.await(task), 1).resource

    assert [resource] = Enum.uniq(resources)
    assert {:ok, %{resource: ^resource}} = SharedClient.get(opts)
  end
end
