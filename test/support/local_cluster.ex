defmodule FLAMEK8sBackend.Test.LocalCluster do
  @moduledoc """
  The local control plane for tests: kube-apiserver + etcd built from upstream (cached), and the
  simulated kubelet, all run by `localkube` behind an Erlang port. When the test VM exits, the
  port closes, localkube sees EOF on stdin and stops everything it started.

  Images the simulated kubelet knows:

    * `flame-runner:test` - a BEAM node running this project's test build (the FLAME runner)
    * `sleeper:test` - `/bin/sleep` (give `args`)
    * `shell:test` - `/bin/sh` (give `args`, e.g. `["-c", "exit 3"]`)
  """

  use FLAMEK8sBackend.Test.ControlPlane, namespace_prefix: "t-"

  alias FLAMEK8sBackend.Kube

  @root Path.expand("../..", __DIR__)

  @doc "Starts the control plane once per test run; returns its info."
  @impl true
  def start!(_opts \\ []) do
    state_dir =
      Path.join(
        System.tmp_dir!(),
        "flame-k8s-test-#{System.pid()}-#{System.unique_integer([:positive])}"
      )

    File.mkdir_p!(state_dir)
    build_started = System.monotonic_time(:millisecond)

    control_plane = run_script!("tools/control-plane/build.sh")
    localkube = run_script!("tools/localkube/build.sh")
    runner = write_runner_entrypoint!(state_dir)
    audit_log = Path.join(state_dir, "audit.log")
    # The first run's builds take minutes: "ready in" counts only the start.
    started = System.monotonic_time(:millisecond)
    build_ms = started - build_started

    args = [
      "up",
      "--etcd",
      Path.join(control_plane, "etcd"),
      "--apiserver",
      Path.join(control_plane, "kube-apiserver"),
      "--state-dir",
      state_dir,
      "--image",
      "flame-runner:test=#{runner}",
      "--image",
      "sleeper:test=/bin/sleep",
      "--image",
      "shell:test=/bin/sh"
      | audit_args(state_dir, audit_log)
    ]

    # The port belongs to a process of its own that lives as long as the VM: the process that
    # called start! may be gone when a test sends a command, and a port closes with its owner.
    caller = self()

    owner =
      spawn(fn ->
        port =
          Port.open({:spawn_executable, localkube}, [
            :binary,
            :exit_status,
            {:line, 16_384},
            args: args
          ])

        case await_ready(port, []) do
          {:ok, _} = ready ->
            send(caller, {:localkube_ready, self(), port, ready})
            serve_commands(port)

          {:error, _} = failed ->
            send(caller, {:localkube_ready, self(), port, failed})
            if Port.info(port), do: Port.close(port)
        end
      end)

    owner_monitor = Process.monitor(owner)

    {port, info} =
      receive do
        {:localkube_ready, ^owner, port, {:ok, info}} ->
          Process.demonitor(owner_monitor, [:flush])
          {port, info}

        {:localkube_ready, ^owner, _port, {:error, message}} ->
          raise message

        {:DOWN, ^owner_monitor, :process, ^owner, reason} ->
          raise "local control plane owner died: #{inspect(reason)}"
      end

    ready_ms = System.monotonic_time(:millisecond) - started

    info =
      Map.merge(info, %{
        port: port,
        owner: owner,
        ca_pem: File.read!(Path.join([state_dir, "pki", "ca.crt"])),
        runner_entrypoint: runner,
        audit_log: audit_log,
        ready_ms: ready_ms,
        build_ms: build_ms
      })

    put_info(info)

    IO.puts(
      "local control plane ready in #{ready_ms} ms at #{info.server} (#{info.kubeconfig}); " <>
        "builds #{build_ms} ms"
    )

    info
  end

  @doc """
  Stops the control plane and waits until localkube has stopped everything it started, so no
  process outlives the test run. (Closing the port is localkube's signal: EOF on its stdin.)
  """
  @impl true
  def stop do
    case info_or_nil() do
      %{port: port, owner: owner} ->
        os_pid = Port.info(port, :os_pid)
        monitor = Process.monitor(owner)
        send(owner, :stop)

        receive do
          {:DOWN, ^monitor, :process, ^owner, _} -> :ok
        after
          5_000 -> Process.exit(owner, :kill)
        end

        erase_info()

        with {:os_pid, pid} <- os_pid do
          wait_for_exit(pid, System.monotonic_time(:millisecond) + 15_000)
        end

        :ok

      nil ->
        :ok
    end
  end

  # No event tells this VM when an OS process it no longer owns has exited: check /proc.
  defp wait_for_exit(pid, deadline) do
    cond do
      not File.exists?("/proc/#{pid}") -> :ok
      System.monotonic_time(:millisecond) > deadline -> :timeout
      true -> Process.sleep(50) && wait_for_exit(pid, deadline)
    end
  end

  @doc """
  SIGKILLs the kube-apiserver (etcd, the simulated kubelet and every pod keep running) and
  starts it again on the same port and etcd; returns once it answers `/readyz` again, with the
  time the restart took. Connections open at the kill are reset, as on a real API server crash.
  """
  @spec restart_apiserver!() :: %{killed_pid: pos_integer(), ms: non_neg_integer()}
  def restart_apiserver!, do: command!("restart-apiserver")

  @doc "SIGKILLs the kube-apiserver and leaves it down until `start_apiserver!/0`."
  @spec kill_apiserver!() :: %{killed_pid: pos_integer(), ms: non_neg_integer()}
  def kill_apiserver!, do: command!("kill-apiserver")

  @doc "Starts the kube-apiserver killed by `kill_apiserver!/0` on the same port and etcd."
  @spec start_apiserver!() :: %{ms: non_neg_integer()}
  def start_apiserver!, do: command!("start-apiserver")

  # localkube answers each command with `OK <command> k=v ...` or `ERROR <command>: reason`
  # once it has taken effect.
  defp command!(command) do
    %{owner: owner} = info()
    ref = Process.monitor(owner)
    send(owner, {:command, self(), ref, command})

    receive do
      {^ref, {:ok, fields}} ->
        Process.demonitor(ref, [:flush])
        fields

      {^ref, {:error, reason}} ->
        Process.demonitor(ref, [:flush])
        raise "localkube #{command} failed: #{reason}"

      {:DOWN, ^ref, :process, ^owner, reason} ->
        raise "local control plane owner died during #{command}: #{inspect(reason)}"
    after
      180_000 -> raise "localkube did not answer #{command} in 180 s"
    end
  end

  defp serve_commands(port) do
    receive do
      {:command, from, ref, command} ->
        Port.command(port, command <> "\n")
        send(from, {ref, await_answer(port, command)})
        serve_commands(port)

      :stop ->
        Port.close(port)

      {^port, {:exit_status, status}} ->
        IO.puts("localkube exited with status #{status}")

      {^port, {:data, _}} ->
        serve_commands(port)
    end
  end

  defp await_answer(port, command) do
    receive do
      {^port, {:data, {:eol, "OK " <> rest}}} ->
        [^command | pairs] = String.split(rest, " ", trim: true)
        {:ok, fields(pairs, &String.to_integer/1)}

      {^port, {:data, {:eol, "ERROR " <> rest}}} ->
        {:error, rest}

      {^port, {:data, _}} ->
        await_answer(port, command)

      {^port, {:exit_status, status}} ->
        {:error, "localkube exited with status #{status}"}
    end
  end

  # Every request on pods and secrets, by whom and in which namespace: the server's metrics
  # count the whole server, where a test's earlier neighbours may still be cleaning up.
  defp audit_args(state_dir, audit_log) do
    policy = Path.join(state_dir, "audit-policy.yaml")

    File.write!(policy, """
    apiVersion: audit.k8s.io/v1
    kind: Policy
    omitStages: [RequestReceived]
    rules:
    - level: Metadata
      resources:
      - group: ""
        resources: [pods, secrets, serviceaccounts/token]
    - level: None
    """)

    for arg <- [
          "--audit-policy-file=#{policy}",
          "--audit-log-path=#{audit_log}",
          "--audit-log-format=json"
        ],
        do: "--apiserver-arg=#{arg}"
  end

  @doc "Creates a namespace with a `default` ServiceAccount (no controller-manager creates it here)."
  @impl true
  def create_namespace!(kube, name) do
    {:ok, _} =
      Kube.request(kube, "POST", "/api/v1/namespaces", body: %{"metadata" => %{"name" => name}})

    create_service_account!(kube, name, "default")
    name
  end

  def create_service_account!(kube, namespace, name) do
    {:ok, _} =
      Kube.request(kube, "POST", "/api/v1/namespaces/#{namespace}/serviceaccounts",
        body: %{"metadata" => %{"name" => name}}
      )

    name
  end

  @doc """
  A ServiceAccount bound to a Role with `rules`; returns a connection that authenticates as
  that account with a TokenRequest token, to the API server or to `url`.
  """
  def service_account_kube!(kube, namespace, name, rules, url \\ nil) do
    token = service_account_token!(kube, namespace, name, rules)

    {:ok, sa_kube} =
      Kube.connect(url: url || info().server, ca_cert_pem: info().ca_pem, token: token)

    sa_kube
  end

  @doc """
  A copy of the admin kubeconfig whose server is `url` (e.g. a `TcpProxy` in front of the API
  server, on the same address so its certificate still matches); returns its path.
  """
  def kubeconfig_via!(url) do
    path = Path.join(info().state_dir, "kubeconfig-via-#{System.unique_integer([:positive])}")
    File.write!(path, info().kubeconfig |> File.read!() |> String.replace(info().server, url))
    path
  end

  @doc """
  A parent pod object for the test VM. `spec.nodeName` points at a node the simulated kubelet
  does not own, so the object exists for the backend to read but nothing runs it.
  """
  def create_parent_pod!(kube, namespace, opts \\ []) do
    container = %{
      "name" => "app",
      "image" => Keyword.get(opts, :image, "flame-runner:test"),
      "env" => [%{"name" => "FROM_PARENT", "value" => "inherited"}]
    }

    manifest = %{
      "metadata" => %{
        "name" => Keyword.get(opts, :name, "parent"),
        "labels" => %{"app" => "parent"}
      },
      "spec" => %{
        "nodeName" => "elsewhere",
        "serviceAccountName" => Keyword.get(opts, :service_account, "default"),
        "containers" => [container]
      }
    }

    {:ok, pod} = Kube.create_pod(kube, namespace, manifest)
    pod
  end

  @doc """
  The parent as in examples/kubernetes/deployment.yaml: a Secret `<name>-cookie` holding this
  VM's cookie, and a parent pod object (not run, as `create_parent_pod!/3`) whose
  `RELEASE_COOKIE` comes from it (`secretKeyRef`). Returns the cookie; the caller puts it in
  `RELEASE_COOKIE`, as a release started with that env would have it.
  """
  def create_documented_parent!(kube, namespace, opts \\ []) do
    name = Keyword.get(opts, :name, "parent")
    {cookie, env} = create_cookie_secret!(kube, namespace, name)

    {:ok, _} =
      Kube.create_pod(kube, namespace, %{
        "metadata" => %{"name" => name, "labels" => %{"app" => "parent"}},
        "spec" => %{
          "nodeName" => "elsewhere",
          "containers" => [%{"name" => "app", "image" => "flame-runner:test", "env" => [env]}]
        }
      })

    cookie
  end

  @doc """
  The documented parent's cookie: a Secret `<parent>-cookie` holding this VM's cookie as
  `RELEASE_COOKIE`. Returns `{cookie, env}`, `env` being the parent container's env entry that
  reads it (`secretKeyRef`).
  """
  def create_cookie_secret!(kube, namespace, parent_name) do
    cookie = Atom.to_string(Node.get_cookie())
    ref = %{"name" => "#{parent_name}-cookie", "key" => "RELEASE_COOKIE"}

    {:ok, _} =
      Kube.create_secret(kube, namespace, %{
        "metadata" => %{"name" => ref["name"]},
        "stringData" => %{"RELEASE_COOKIE" => cookie}
      })

    {cookie, %{"name" => "RELEASE_COOKIE", "valueFrom" => %{"secretKeyRef" => ref}}}
  end

  @doc "A pod manifest running `image` with `args` and extra `labels`."
  def pod_manifest(name, image, opts \\ []) do
    %{
      "metadata" => %{"name" => name, "labels" => Keyword.get(opts, :labels, %{})},
      "spec" => %{
        "restartPolicy" => "Never",
        "containers" => [
          %{"name" => "main", "image" => image, "args" => Keyword.get(opts, :args, [])}
          |> Map.merge(Keyword.get(opts, :container, %{}))
        ]
      }
    }
  end

  @doc "The kubelet log lines about `namespace`."
  def kubelet_log(namespace) do
    case File.read(info().kubelet_log) do
      {:ok, log} ->
        log |> String.split("\n") |> Enum.filter(&String.contains?(&1, namespace <> "/"))

      {:error, _} ->
        []
    end
  end

  # The runner image: a BEAM node with this project's test build on its code path. It starts
  # the FLAME application, whose terminator reads FLAME_PARENT and connects to the parent.
  # Runners may run as another user (the non-root code_sync scenario): they load a copy of the
  # compiled apps (priv's links followed) in the state dir, which anyone may read, rather than
  # the build in the clone, whose parent may be closed to others (mode 0700, as under mktemp -d).
  defp write_runner_entrypoint!(state_dir) do
    elixir = System.find_executable("elixir") || raise "elixir is not on PATH"
    apps = Path.join(state_dir, "runner-lib")
    File.mkdir_p!(apps)

    for app <- Path.wildcard(Path.join(Mix.Project.build_path(), "lib/*")) do
      {_, 0} = System.cmd("cp", ["-RL", app, apps])
    end

    pa = Enum.map_join(Path.wildcard(Path.join(apps, "*/ebin")), " ", &"-pa #{&1}")

    script = """
    #!/bin/sh
    # flame-runner:test, written by #{inspect(__MODULE__)}
    exec #{elixir} --name "$RELEASE_NODE" --cookie "$RELEASE_COOKIE" #{pa} \\
      -e 'FLAMEK8sBackend.Test.RunnerApp.start()' --no-halt
    """

    path = Path.join(state_dir, "flame-runner.sh")
    File.write!(path, script)
    File.chmod!(path, 0o755)
    path
  end

  defp run_script!(script) do
    case System.cmd(Path.join(@root, script), [], stderr_to_stdout: false) do
      {out, 0} -> out |> String.split("\n", trim: true) |> List.last()
      {out, status} -> raise "#{script} failed (exit #{status}): #{out}"
    end
  end

  defp await_ready(port, lines) do
    receive do
      {^port, {:data, {:eol, "READY " <> rest}}} ->
        {:ok, rest |> String.split(" ", trim: true) |> fields(& &1)}

      {^port, {:data, {:eol, "FAILED " <> reason}}} ->
        {:error, "local control plane failed to start: #{reason}"}

      {^port, {:data, {_, line}}} ->
        await_ready(port, [line | lines])

      {^port, {:exit_status, status}} ->
        {:error,
         "localkube exited with status #{status} before it was ready:\n" <>
           Enum.join(Enum.reverse(lines), "\n")}
    after
      180_000 -> {:error, "local control plane not ready after 180 s"}
    end
  end

  # localkube's `key=value` words, as a map of atoms to `value.(the value)`.
  defp fields(pairs, value) do
    Map.new(pairs, fn pair ->
      [key, v] = String.split(pair, "=", parts: 2)
      {String.to_atom(key), value.(v)}
    end)
  end
end
