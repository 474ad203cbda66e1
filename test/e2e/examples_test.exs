defmodule FLAMEK8sBackend.ExamplesTest do
  # The example manifests (examples/kubernetes) checked by the API server itself, through
  # `localkube dry-run` / `localkube create` (tools/localkube/manifests.go), and the RBAC
  # they document proven sufficient by booting a runner with the ServiceAccount's own token.
  use FLAMEK8sBackend.Test.ClusterCase, async: true

  @moduletag :e2e

  alias FLAMEK8sBackend.BootError
  alias FLAMEK8sBackend.Test.RemoteFuns

  # examples/kind/flame_demo is loaded at run time by one test (it cannot be compiled as a
  # project here: it needs hex).
  @compile {:no_warn_undefined, [FlameDemo, FlameDemo.Application]}

  @moduletag timeout: 120_000

  @root Path.expand("../..", __DIR__)
  @manifests Path.wildcard(Path.join(@root, "examples/kubernetes/*.yaml"))
  @example_objects [
    "Deployment/my-app",
    "NetworkPolicy/my-app-flame-parent",
    "NetworkPolicy/my-app-flame-runners",
    "Role/my-app-flame",
    "Role/my-app-runner",
    "RoleBinding/my-app-flame",
    "RoleBinding/my-app-runner",
    "Secret/my-app-cookie",
    "Service/my-app-headless",
    "ServiceAccount/my-app",
    "ServiceAccount/my-app-runner"
  ]

  setup_all do
    %{localkube: localkube_binary!()}
  end

  test "the API server accepts every example manifest (server-side dry run)", ctx do
    assert {output, 0} = localkube(ctx, "dry-run", @manifests)

    assert Enum.sort(String.split(output, "\n", trim: true)) ==
             Enum.map(@example_objects, &"ok #{&1}")

    # A dry run stores nothing.
    for path <- [
          "/api/v1/namespaces/#{ctx.namespace}/secrets/my-app-cookie",
          "/apis/apps/v1/namespaces/#{ctx.namespace}/deployments/my-app"
        ] do
      assert {:error, {:api, 404, _, _}} = Kube.request(ctx.kube, "GET", path)
    end
  end

  test "the warm-capacity examples are accepted (server-side dry run)", ctx do
    manifests = Path.wildcard(Path.join(@root, "examples/warm-capacity/*.yaml"))
    assert {output, 0} = localkube(ctx, "dry-run", manifests)

    assert Enum.sort(String.split(output, "\n", trim: true)) == [
             "ok DaemonSet/my-app-image-prepull",
             "ok Deployment/my-app-flame-placeholder",
             "ok PriorityClass/my-app-flame-placeholder"
           ]
  end

  test "kind.sh's adaptation of the example manifests is accepted too", ctx do
    dir = tmp_dir!()

    assert {_, 0} =
             System.cmd(Path.join(@root, "examples/kind/kind.sh"), ["--render-manifests", dir])

    assert {output, 0} = localkube(ctx, "dry-run", Path.wildcard(Path.join(dir, "*.yaml")))
    lines = String.split(output, "\n", trim: true)
    assert "ok Deployment/flame-demo" in lines
    assert length(lines) == length(@example_objects)
    assert Enum.all?(lines, &String.starts_with?(&1, "ok "))
  end

  test "a broken manifest is rejected with the server's message naming the field", ctx do
    dir = tmp_dir!()
    deployment = File.read!(Path.join(@root, "examples/kubernetes/deployment.yaml"))

    # One typo in the real example: strict field validation names the unknown field.
    typo = Path.join(dir, "typo.yaml")
    File.write!(typo, String.replace(deployment, "serviceAccountName:", "serviceAcountName:"))

    # The selector must select the pod template, whatever the runner pods carry.
    mismatch = Path.join(dir, "mismatch.yaml")

    File.write!(mismatch, """
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: mismatch
    spec:
      selector:
        matchLabels: {app: my-app}
      template:
        metadata:
          labels: {excluster: flame}
        spec:
          containers:
            - {name: app, image: "my-app:1.0.0"}
    """)

    assert {output, 1} = localkube(ctx, "dry-run", [typo, mismatch])
    assert [typo_line, mismatch_line] = String.split(output, "\n", trim: true)

    assert typo_line =~
             ~s(FAILED Deployment/my-app: Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: unknown field "spec.template.spec.serviceAcountName")

    assert mismatch_line =~ "FAILED Deployment/mismatch: "
    assert mismatch_line =~ "spec.template.metadata.labels: Invalid value"
    assert mismatch_line =~ "`selector` does not match template `labels`"
  end

  test "the Role in rbac.yaml is all a parent needs to boot, use and remove a runner, and to tell why a boot failed",
       ctx do
    %{kube: kube, namespace: ns} = ctx

    # The examples, for real, in this test's namespace.
    assert {output, 0} = localkube(ctx, "create", @manifests)
    assert length(String.split(output, "\n", trim: true)) == length(@example_objects)

    {:ok, role} =
      Kube.request(
        kube,
        "GET",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/#{ns}/roles/my-app-flame"
      )

    assert Enum.map(role["rules"], &{&1["resources"], &1["verbs"]}) == [
             {["pods"], ["get", "list", "watch", "create", "delete"]},
             {["secrets"], ["create", "delete"]},
             {["serviceaccounts/token"], ["create"]},
             {["events"], ["list", "watch"]},
             {["pods/log"], ["get"]}
           ]

    # The parent pod is the example Deployment's pod template, as its ReplicaSet would create
    # it (no controller-manager runs here), with an image the simulated kubelet runs, bound to a
    # node it does not own so only the object exists.
    {:ok, deployment} =
      Kube.request(kube, "GET", "/apis/apps/v1/namespaces/#{ns}/deployments/my-app")

    template = deployment["spec"]["template"]
    assert template["spec"]["serviceAccountName"] == "my-app"

    parent = %{
      "metadata" => %{"name" => "parent", "labels" => template["metadata"]["labels"]},
      "spec" =>
        template["spec"]
        |> Map.put("nodeName", "elsewhere")
        |> Map.update!("containers", fn [app] -> [%{app | "image" => "flame-runner:test"}] end)
    }

    {:ok, _} = Kube.create_pod(kube, ns, parent)

    # Everything from here on authenticates as the example ServiceAccount.
    {:ok, %{"status" => %{"token" => token}}} =
      Kube.request(kube, "POST", "/api/v1/namespaces/#{ns}/serviceaccounts/my-app/token",
        body: %{"spec" => %{"expirationSeconds" => 600}}
      )

    opts = [
      parent_pod: {ns, "parent"},
      kubeconfig: LocalCluster.write_token_kubeconfig!(token),
      boot_timeout: 30_000
    ]

    # A runner whose container exits: RBAC lets its error tell Kubernetes' side, its Events
    # and its log lines (here none and not readable: the simulated kubelet writes no Events
    # and serves no logs, so the API server's 500 stands for them).
    exits = %{"name" => "app", "image" => "shell:test", "args" => ["-c", "echo bye; exit 3"]}

    {:ok, failing} =
      FLAMEK8sBackend.init(opts ++ [manifest: %{"spec" => %{"containers" => [exits]}}])

    assert {:error, %BootError{reason: {:container_exited, %{exit_code: 3}}} = error} =
             FLAMEK8sBackend.remote_boot(failing)

    assert is_list(error.events)
    assert {:unreadable, "API error 500" <> _} = error.log

    {:ok, state} = FLAMEK8sBackend.init(opts)
    assert {:ok, terminator, state} = FLAMEK8sBackend.remote_boot(state)
    runner = node(terminator)

    {:ok, {pid, ref}} =
      FLAMEK8sBackend.remote_spawn_monitor(state, {Kernel, :send, [self(), :hi]})

    assert_receive :hi, 10_000
    assert_receive {:DOWN, ^ref, :process, ^pid, :normal}, 10_000

    info = :erpc.call(runner, RemoteFuns, :whereami, [])
    assert info.pod_name == state.runner_name
    assert info.pod_namespace == ns
    assert info.cookie_set?
    # The example's env reaches the runner, $(POD_NAMESPACE) expanded in the runner's own pod.
    assert :erpc.call(runner, System, :get_env, ["DNS_CLUSTER_QUERY"]) ==
             "my-app-headless.#{ns}.svc.cluster.local"

    # The pitfall in deployment.yaml: the runner pod must not match the Deployment's selector
    # (its ReplicaSet would adopt and delete it), nor the headless Service's (DNSCluster
    # connects parents only: it dials `<its own basename>@<ip>`).
    {:ok, pod} = Kube.get_pod(kube, ns, state.runner_name)
    labels = pod["metadata"]["labels"]
    refute matches?(labels, deployment["spec"]["selector"]["matchLabels"])

    {:ok, service} =
      Kube.request(kube, "GET", "/api/v1/namespaces/#{ns}/services/my-app-headless")

    refute matches?(labels, service["spec"]["selector"])

    # The runner goes away; the backend deletes its pod and secret, still with the
    # ServiceAccount's token.
    Node.monitor(runner, true)
    Node.spawn(runner, System, :halt, [0])
    assert_receive {:nodedown, ^runner}, 15_000

    eventually(
      fn ->
        match?({:error, {:api, 404, _, _}}, Kube.get_pod(kube, ns, state.runner_name)) and
          match?(
            {:error, {:api, 404, _, _}},
            Kube.request(kube, "GET", "/api/v1/namespaces/#{ns}/secrets/#{state.runner_name}")
          )
      end,
      15_000
    )
  end

  # The kind scenario "bad image", minus Docker: the demo app's own pool definition and its
  # FlameDemo.bad_image_call/1 (which digs the BootError out of whatever FLAME reports: the
  # stand-in exits the caller with it, FLAME 0.5 only passes it to on_grow_end), loaded into this
  # VM. Only the backend's connection settings are added to the pool.
  # FLAME 0.5 logs the crash of its boot task: expected here.
  @tag :capture_log
  test "the demo app's bad-image pool reports the backend's BootError", ctx do
    %{kube: kube, namespace: ns} = ctx
    LocalCluster.create_parent_pod!(kube, ns)
    load_demo_app!()
    bad_image = "registry.invalid/flame-demo:missing"
    Application.put_env(:flame_demo, :bad_image, bad_image)
    Application.put_env(:flame_demo, :idle_shutdown_after, 10_000)

    {FLAME.Pool, pool} =
      Enum.find(FlameDemo.Application.pools(), fn {FLAME.Pool, opts} ->
        opts[:name] == FlameDemo.BadImageRunner
      end)

    pool =
      Keyword.update!(pool, :backend, fn {FLAMEK8sBackend, opts} ->
        connection = [parent_pod: {ns, "parent"}, kubeconfig: LocalCluster.info().kubeconfig]
        {FLAMEK8sBackend, Keyword.merge(opts, connection)}
      end)

    start_supervised!(FlameDemo.BootFailures)
    start_supervised!({FLAME.Pool, pool})

    assert {:error, message} = FlameDemo.bad_image_call(30_000)
    assert is_binary(message), "no BootError found in #{inspect(message)}"
    assert message =~ ~s(failed while starting its container: cannot pull image "#{bad_image}")

    eventually(fn ->
      {:ok, pods} =
        Kube.list_pods(kube, ns, label_selector: "app.kubernetes.io/managed-by=flame_k8s_backend")

      pods == []
    end)
  end

  defp load_demo_app! do
    unless Code.ensure_loaded?(FlameDemo.Application) do
      files = Path.wildcard(Path.join(@root, "examples/kind/flame_demo/lib/**/*.ex"))
      {:ok, _modules, []} = Kernel.ParallelCompiler.require(files)
    end

    :ok
  end

  defp matches?(labels, selector), do: Enum.all?(selector, fn {k, v} -> labels[k] == v end)

  defp localkube(ctx, command, files) do
    args =
      [command, "--kubeconfig", LocalCluster.info().kubeconfig, "--namespace", ctx.namespace] ++
        files

    System.cmd(ctx.localkube, args)
  end

  # tools/localkube/build.sh prints the cached binary's path (it is already built by the time the
  # local control plane runs).
  defp localkube_binary! do
    case System.cmd(Path.join(@root, "tools/localkube/build.sh"), [], stderr_to_stdout: true) do
      {out, 0} -> out |> String.split("\n", trim: true) |> List.last()
      {out, status} -> raise "tools/localkube/build.sh failed (exit #{status}): #{out}"
    end
  end

  defp tmp_dir! do
    dir = Path.join(System.tmp_dir!(), "flame-k8s-examples-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)
    dir
  end
end

defmodule FLAMEK8sBackend.ExamplesStaticTest do
  # What CI can check of examples/ without Docker or hex: scripts parse (and pass shellcheck when
  # it is installed), the demo app's Elixir parses and is formatted, its release env script works,
  # and the Dockerfile copies files that exist. The YAML is checked by the API server above.
  use ExUnit.Case, async: true

  @root Path.expand("../..", __DIR__)
  @examples Path.join(@root, "examples")
  @demo Path.join(@examples, "kind/flame_demo")

  defp example_files(pattern) do
    @examples
    |> Path.join(pattern)
    |> Path.wildcard(match_dot: true)
    |> Enum.reject(&String.match?(&1, ~r{/(_build|deps)/}))
  end

  test "the example shell scripts parse (bash -n)" do
    scripts = example_files("**/*.sh")
    assert Path.join(@examples, "kind/kind.sh") in scripts

    for script <- scripts do
      assert {_, 0} = System.cmd("bash", ["-n", script], stderr_to_stdout: true)
    end
  end

  unless System.find_executable("shellcheck") do
    @tag skip: "shellcheck is not installed"
  end

  test "the example shell scripts pass shellcheck" do
    for script <- example_files("**/*.sh") do
      {output, status} = System.cmd("shellcheck", [script], stderr_to_stdout: true)
      assert status == 0, output
    end
  end

  test "the demo app's Elixir files parse and are formatted" do
    files = example_files("kind/flame_demo/**/*.{ex,exs}")
    assert Path.join(@demo, "mix.exs") in files
    assert Path.join(@demo, "lib/flame_demo/application.ex") in files

    for file <- files do
      source = File.read!(file)
      Code.string_to_quoted!(source, file: file)

      assert IO.iodata_to_binary([Code.format_string!(source, file: file), "\n"]) == source,
             "#{Path.relative_to(file, @root)} is not formatted (mix format)"
    end
  end

  test "the release env script derives the node name from POD_IP unless one is given" do
    script =
      EEx.eval_file(Path.join(@demo, "rel/env.sh.eex"),
        assigns: [release: %{name: :flame_demo, version: "0.1.0"}]
      )

    path = Path.join(System.tmp_dir!(), "env-#{System.unique_integer([:positive])}.sh")
    File.write!(path, script)
    on_exit(fn -> File.rm(path) end)

    show = ~s(. "#{path}"; echo "$RELEASE_DISTRIBUTION $RELEASE_NODE")
    env = [{"RELEASE_DISTRIBUTION", nil}, {"RELEASE_NODE", nil}]

    assert {"name flame_demo@10.1.2.3\n", 0} =
             System.cmd("sh", ["-c", show], env: [{"POD_IP", "10.1.2.3"} | env])

    assert {"name runner-x@10.1.2.4\n", 0} =
             System.cmd("sh", ["-c", show],
               env: [{"POD_IP", "10.1.2.4"}, {"RELEASE_NODE", "runner-x@10.1.2.4"}]
             )

    assert {" \n", 0} = System.cmd("sh", ["-c", show], env: [{"POD_IP", nil} | env])

    if System.find_executable("shellcheck") do
      {output, status} = System.cmd("shellcheck", ["-s", "sh", path], stderr_to_stdout: true)
      assert status == 0, output
    end
  end

  test "every file the Dockerfile copies from the build context exists" do
    dockerfile = File.read!(Path.join(@examples, "kind/Dockerfile"))

    sources =
      for [_, args] <- Regex.scan(~r/^COPY\s+(?!--from)(.+)$/m, dockerfile),
          parts = String.split(args),
          src <- Enum.drop(parts, -1),
          do: src

    assert "examples/kind/flame_demo/lib" in sources

    for src <- sources do
      assert File.exists?(Path.join(@root, src)), "Dockerfile copies #{src}, which does not exist"
    end

    assert dockerfile =~ "/src/examples/kind/flame_demo/_build/prod/rel/flame_demo"
    assert File.read!(Path.join(@demo, "mix.exs")) =~ "releases: [\n        flame_demo:"
  end
end
