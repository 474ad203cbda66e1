defmodule FLAMEK8sBackend.RunnerServiceAccountE2ETest do
  # :service_account_name gives runners an account of their own. With the Role of
  # examples/kubernetes/runner-rbac.yaml, checked against the real kube-apiserver (RBAC on): a
  # runner may delete its own pod (what FLAMEK8sBackend.SelfDelete does on shutdown) and
  # nothing else, above all not create pods.
  use FLAMEK8sBackend.Test.ClusterCase, async: true

  @moduletag :e2e
  @moduletag timeout: 120_000

  alias FLAMEK8sBackend.Test.{CleanupEvents, RemoteFuns}

  setup :parent_setup

  # The rules of examples/kubernetes/runner-rbac.yaml's Role, read from the file itself.
  defp example_rules do
    yaml = File.read!(Path.expand("../../examples/kubernetes/runner-rbac.yaml", __DIR__))
    [_, rules] = String.split(yaml, ~r/^rules:\n/m, parts: 2)

    for [resources, verbs] <-
          Regex.scan(~r/resources: \[([^\]]*)\]\n\s+verbs: \[([^\]]*)\]/, rules,
            capture: :all_but_first
          ) do
      %{"apiGroups" => [""], "resources" => words(resources), "verbs" => words(verbs)}
    end
  end

  defp words(list),
    do: list |> String.split(",") |> Enum.map(&(&1 |> String.trim() |> String.trim("\"")))

  test "the example Role lets a runner delete its own pod and nothing else" do
    assert example_rules() == [
             %{"apiGroups" => [""], "resources" => ["pods"], "verbs" => ["delete"]}
           ]
  end

  test "a runner runs as :service_account_name, may delete its own pod, and gets 403 creating one",
       %{kube: kube, namespace: ns, opts: opts} do
    token = LocalCluster.service_account_token!(kube, ns, "flame-runner", example_rules())

    {:ok, as_runner} =
      Kube.connect(
        url: LocalCluster.info().server,
        ca_cert_pem: LocalCluster.info().ca_pem,
        token: token
      )

    {:ok, state} = FLAMEK8sBackend.init(Keyword.put(opts, :service_account_name, "flame-runner"))
    {:ok, terminator, state} = FLAMEK8sBackend.remote_boot(state)
    runner = node(terminator)
    assert {^runner, 9} = :erpc.call(runner, RemoteFuns.square(3), 10_000)

    {:ok, pod} = Kube.get_pod(kube, ns, state.runner_name)
    assert pod["spec"]["serviceAccountName"] == "flame-runner"

    # Creating a pod (or reading the parent's) is forbidden, naming the account, verb and resource.
    other = LocalCluster.pod_manifest("not-allowed", "sleeper:test", args: ["300"])
    assert {:error, {:api, 403, "Forbidden", message}} = Kube.create_pod(as_runner, ns, other)
    assert message =~ ~s(cannot create resource "pods")
    assert message =~ "system:serviceaccount:#{ns}:flame-runner"
    assert {:error, {:api, 403, _, _}} = Kube.get_pod(as_runner, ns, "parent")
    assert {:error, {:api, 403, _, _}} = Kube.list_pods(as_runner, ns)

    # Deleting its own pod, as SelfDelete does on shutdown, is allowed: the runner goes. As
    # SelfDelete does, the runner reports it to its reaper (named in its env), which emits its
    # event and then deletes only what is left: the runner's secret, not the pod again.
    runner_name = state.runner_name
    CleanupEvents.forward!(&match?(%{name: ^runner_name}, &1))

    encoded = :erpc.call(runner, System, :get_env, ["FLAME_K8S_REAPER"])
    {:ok, binary} = Base.url_decode64(encoded, padding: false)
    reaper = :erlang.binary_to_term(binary)
    reaper_monitor = Process.monitor(reaper)
    deletion = %{kind: :pod, name: state.runner_name, result: :ok, duration_us: 1_000}

    assert :ok =
             :erpc.call(runner, FLAMEK8sBackend.SelfDelete, :report, [encoded, ns, [deletion]])

    Node.monitor(runner, true)
    assert :ok = Kube.delete_pod(as_runner, ns, state.runner_name)
    assert_receive {:nodedown, ^runner}, 30_000
    assert_receive {:DOWN, ^reaper_monitor, :process, ^reaper, :normal}, 30_000

    assert [
             %{deleter: :runner, kind: :pod, result: :ok},
             %{deleter: :reaper, kind: :secret, result: :ok}
           ] = for({:cleanup, _, meta} <- Process.info(self(), :messages) |> elem(1), do: meta)

    eventually(fn -> runner_pods(kube, ns) == [] end, 30_000)
  end
end
