defmodule FLAMEK8sBackend.RunnerPodTest do
  use ExUnit.Case, async: true

  @moduletag :unit
  doctest FLAMEK8sBackend.RunnerPod
  doctest FLAMEK8sBackend.RunnerPod.Env
  doctest FLAMEK8sBackend.RunnerPod.Manifest
  doctest FLAMEK8sBackend.RunnerPod.Metadata
  doctest FLAMEK8sBackend.RunnerPod.Runtime

  alias FLAMEK8sBackend.{Options, RunnerPod}
  alias FLAMEK8sBackend.RunnerPod.{Env, Runtime}

  @parent %{
    "metadata" => %{
      "name" => "web-7d9f8b-x2k9p",
      "namespace" => "prod",
      "uid" => "1111-2222",
      "labels" => %{"app" => "web", "pod-template-hash" => "7d9f8b"}
    },
    "spec" => %{
      "serviceAccountName" => "web",
      "nodeName" => "node-3",
      "imagePullSecrets" => [%{"name" => "registry"}],
      "containers" => [
        %{
          "name" => "sidecar",
          "image" => "envoy:1"
        },
        %{
          "name" => "app",
          "image" => "registry.example/web:42",
          "env" => [
            %{"name" => "DATABASE_URL", "value" => "ecto://db"},
            %{"name" => "PHX_SERVER", "value" => "true"},
            %{"name" => "RELEASE_COOKIE", "value" => "plain-cookie"},
            %{
              "name" => "POD_IP",
              "valueFrom" => %{"fieldRef" => %{"fieldPath" => "status.podIP"}}
            }
          ],
          "envFrom" => [%{"configMapRef" => %{"name" => "web-config"}}],
          "ports" => [%{"containerPort" => 4000}],
          "readinessProbe" => %{"httpGet" => %{"path" => "/health", "port" => 4000}},
          "resources" => %{"limits" => %{"memory" => "1Gi"}}
        }
      ]
    }
  }

  @runtime_keys [:runner_name, :node_basename, :flame_parent, :forwarded_env, :cookie_secret_ref]

  # The validated options and the runtime values to build from, as init/1 has them; overrides
  # of either kind in one map. Without a :tmp_dir unless a test gives one, so that the env
  # other tests look at is only theirs.
  defp inputs(overrides \\ %{}) do
    {runtime, opts} = Map.split(overrides, @runtime_keys)

    opts =
      Options.validate!(
        Keyword.merge([app_container_name: "app", tmp_dir: false], Enum.to_list(opts))
      )

    runtime =
      struct!(
        %Runtime{
          node_basename: "web",
          flame_parent: "ENCODED",
          runner_name: "web-7d9f8b-x2k9p-flame-abcdefgh"
        },
        runtime
      )

    {opts, runtime}
  end

  defp build(overrides, parent \\ @parent) do
    {opts, runtime} = inputs(overrides)
    RunnerPod.build(parent, opts, runtime)
  end

  defp build!(overrides \\ %{}, parent \\ @parent) do
    {:ok, pod} = build(overrides, parent)
    pod
  end

  defp secret(overrides, cookie, parent \\ @parent) do
    {opts, runtime} = inputs(overrides)
    RunnerPod.secret(parent, opts, runtime, cookie)
  end

  defp app_container(pod, name \\ "app"),
    do: Enum.find(pod["spec"]["containers"], &(&1["name"] == name))

  defp env_map(container),
    do: Map.new(container["env"], &{&1["name"], &1["value"] || &1["valueFrom"]})

  defp env_names(container), do: Enum.map(container["env"], & &1["name"])

  test "takes the app container's image and the pod's service account, never its node or labels" do
    pod = build!()

    assert pod["metadata"]["name"] == "web-7d9f8b-x2k9p-flame-abcdefgh"
    assert pod["metadata"]["namespace"] == "prod"
    assert [%{"name" => "app", "image" => "registry.example/web:42"}] = pod["spec"]["containers"]
    assert pod["spec"]["serviceAccountName"] == "web"
    assert pod["spec"]["imagePullSecrets"] == [%{"name" => "registry"}]
    assert pod["spec"]["restartPolicy"] == "Never"
    refute Map.has_key?(pod["spec"], "nodeName")
    refute Map.has_key?(pod["metadata"]["labels"], "app")
    refute Map.has_key?(pod["metadata"]["labels"], "pod-template-hash")
  end

  test "drops ports and probes: the runner serves no traffic" do
    container = app_container(build!())
    refute Map.has_key?(container, "ports")
    refute Map.has_key?(container, "readinessProbe")
    assert container["resources"] == %{"limits" => %{"memory" => "1Gi"}}
  end

  test "the first container is the app container by default" do
    pod = build!(%{app_container_name: nil})
    assert [%{"name" => "sidecar", "image" => "envoy:1"}] = pod["spec"]["containers"]
  end

  test "a missing app container is an error naming the available ones" do
    assert {:error, {:app_container_not_found, "nope", ["sidecar", "app"]}} =
             build(%{app_container_name: "nope"})
  end

  test "identifying labels, extra labels and an owner reference to the parent" do
    pod = build!(%{labels: %{"excluster" => "flame"}})

    assert pod["metadata"]["labels"] == %{
             "excluster" => "flame",
             "app.kubernetes.io/managed-by" => "flame_k8s_backend",
             "flame-k8s-backend.io/parent-uid" => "1111-2222"
           }

    assert pod["metadata"]["annotations"]["flame-k8s-backend.io/parent-pod"] == "web-7d9f8b-x2k9p"

    assert [%{"kind" => "Pod", "name" => "web-7d9f8b-x2k9p", "uid" => "1111-2222"}] =
             pod["metadata"]["ownerReferences"]

    assert RunnerPod.selector(@parent) ==
             "app.kubernetes.io/managed-by=flame_k8s_backend,flame-k8s-backend.io/parent-uid=1111-2222"
  end

  test ":omit_owner_reference leaves the owner reference out" do
    refute Map.has_key?(build!(%{omit_owner_reference: true})["metadata"], "ownerReferences")
  end

  test "defaults, downward API and FLAME_PARENT; the parent's PHX_SERVER does not leak through" do
    env = app_container(build!()) |> env_map()

    assert env["PHX_SERVER"] == "false"
    assert env["RELEASE_DISTRIBUTION"] == "name"
    assert env["RELEASE_NODE"] == "web@$(POD_IP)"
    assert env["DATABASE_URL"] == "ecto://db"
    assert env["FLAME_PARENT"] == "ENCODED"
    assert env["POD_NAME"] == %{"fieldRef" => %{"fieldPath" => "metadata.name"}}
    assert env["POD_NAMESPACE"] == %{"fieldRef" => %{"fieldPath" => "metadata.namespace"}}
    assert env["POD_IP"] == %{"fieldRef" => %{"fieldPath" => "status.podIP"}}
  end

  test "POD_IP comes before every variable that may reference it" do
    names = env_names(app_container(build!(%{env: %{"URL" => "http://$(POD_IP):4000"}})))
    assert Enum.take(names, 3) == ["POD_NAME", "POD_NAMESPACE", "POD_IP"]
    assert List.last(names) == "FLAME_PARENT"
    assert names == Enum.uniq(names)
  end

  test "precedence: defaults < manifest < :env < fixed" do
    manifest = %{
      "spec" => %{
        "containers" => [
          %{
            "name" => "app",
            "env" => [
              %{"name" => "PHX_SERVER", "value" => "from-manifest"},
              %{"name" => "RELEASE_DISTRIBUTION", "value" => "from-manifest"},
              %{"name" => "POD_IP", "value" => "from-manifest"}
            ]
          }
        ]
      }
    }

    env =
      build!(%{
        manifest: manifest,
        env: %{"RELEASE_DISTRIBUTION" => "from-env", "FLAME_PARENT" => "from-env"}
      })
      |> app_container()
      |> env_map()

    assert env["PHX_SERVER"] == "from-manifest"
    assert env["RELEASE_DISTRIBUTION"] == "from-env"
    assert env["POD_IP"] == %{"fieldRef" => %{"fieldPath" => "status.podIP"}}
    assert env["FLAME_PARENT"] == "ENCODED"
  end

  test "RELEASE_COOKIE never appears as plain env; the secret comes in through envFrom" do
    # Options refuses RELEASE_COOKIE in :env; the builder holds the line on its own too.
    {opts, runtime} = inputs()
    opts = %{opts | env: %{"RELEASE_COOKIE" => "also-plain"}}
    {:ok, pod} = RunnerPod.build(@parent, opts, runtime)
    container = app_container(pod)

    refute "RELEASE_COOKIE" in env_names(container)

    assert container["envFrom"] == [
             %{"configMapRef" => %{"name" => "web-config"}},
             %{"secretRef" => %{"name" => "web-7d9f8b-x2k9p-flame-abcdefgh"}}
           ]
  end

  test "ERL_AFLAGS and ERL_ZFLAGS of the parent VM are forwarded at the defaults level" do
    env =
      build!(%{forwarded_env: %{"ERL_AFLAGS" => "-kernel shell_history enabled"}})
      |> app_container()
      |> env_map()

    assert env["ERL_AFLAGS"] == "-kernel shell_history enabled"
  end

  test ":env accepts EnvVarSource maps" do
    source = %{"valueFrom" => %{"secretKeyRef" => %{"name" => "s", "key" => "k"}}}
    env = build!(%{env: %{"TOKEN" => source}}) |> app_container() |> env_map()
    assert env["TOKEN"] == %{"secretKeyRef" => %{"name" => "s", "key" => "k"}}
  end

  test "a map manifest deep-merges: labels, node selector, an extra container, atom keys" do
    manifest = %{
      metadata: %{labels: %{"team" => "data"}},
      spec: %{
        nodeSelector: %{"pool" => "flame"},
        containers: [
          %{resources: %{limits: %{cpu: "2"}}},
          %{name: "helper", image: "busybox"}
        ]
      }
    }

    pod = build!(%{manifest: manifest})
    assert pod["metadata"]["labels"]["team"] == "data"
    assert pod["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "flame_k8s_backend"
    assert pod["spec"]["nodeSelector"] == %{"pool" => "flame"}

    assert app_container(pod)["resources"] == %{
             "limits" => %{"memory" => "1Gi", "cpu" => "2"}
           }

    assert app_container(pod, "helper")["image"] == "busybox"
    refute Map.has_key?(app_container(pod, "helper"), "envFrom")
  end

  # The README's "Migrating from ... (0.7)" and mesh notes, pinned.
  test "unlike 0.7: the container keeps the parent's name and, without a manifest, its settings" do
    parent =
      @parent
      |> put_in(["spec", "volumes"], [%{"name" => "certs", "secret" => %{"secretName" => "c"}}])
      |> put_in(["spec", "securityContext"], %{"runAsUser" => 1000})
      |> update_in(["spec", "containers", Access.at(1)], fn app ->
        Map.merge(app, %{
          "command" => ["/app/bin/web"],
          "args" => ["start"],
          "securityContext" => %{"readOnlyRootFilesystem" => true}
        })
      end)

    pod = build!(%{}, parent)
    container = app_container(pod)

    assert container["name"] == "app"
    assert Enum.map(pod["spec"]["containers"], & &1["name"]) == ["app"]
    assert env_map(container)["DATABASE_URL"] == "ecto://db"
    assert %{"configMapRef" => %{"name" => "web-config"}} in container["envFrom"]
    assert {container["command"], container["args"]} == {["/app/bin/web"], ["start"]}
    assert container["securityContext"] == %{"readOnlyRootFilesystem" => true}
    assert pod["spec"]["securityContext"] == %{"runAsUser" => 1000}
    assert %{"name" => "certs", "secret" => %{"secretName" => "c"}} in pod["spec"]["volumes"]
  end

  test "the mesh opt-out of the docs: Istio's label and Linkerd's annotation reach the pod" do
    manifest = %{
      "metadata" => %{
        "labels" => %{"sidecar.istio.io/inject" => "false"},
        "annotations" => %{"linkerd.io/inject" => "disabled"}
      }
    }

    pod = build!(%{manifest: manifest})
    assert pod["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
    assert pod["metadata"]["annotations"]["linkerd.io/inject"] == "disabled"
    # Alongside the backend's own.
    assert pod["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "flame_k8s_backend"
    assert pod["metadata"]["annotations"]["flame-k8s-backend.io/app-container"] == "app"
  end

  test "a function manifest gets the parent pod and app container and returns the whole pod" do
    manifest = fn parent, app ->
      # With the runner's grace period (see "resources and placement").
      assert parent == put_in(@parent, ["spec", "terminationGracePeriodSeconds"], 40)
      assert app["name"] == "app"

      %{
        "metadata" => %{"labels" => %{"custom" => "yes"}},
        "spec" => %{
          "nodeName" => "pinned",
          "containers" => [%{"name" => "app", "env" => [%{"name" => "ONLY", "value" => "1"}]}]
        }
      }
    end

    pod = build!(%{manifest: manifest})
    container = app_container(pod)
    assert container["image"] == "registry.example/web:42"
    assert env_map(container)["ONLY"] == "1"
    refute Map.has_key?(env_map(container), "DATABASE_URL")
    refute Map.has_key?(pod["spec"], "nodeName")
    refute Map.has_key?(pod["spec"], "serviceAccountName")
    assert pod["metadata"]["labels"]["custom"] == "yes"
    assert pod["spec"]["restartPolicy"] == "Never"
  end

  describe "resources and placement" do
    @gpu_tolerations [%{"key" => "nvidia.com/gpu", "operator" => "Exists"}]

    # A parent with every placement setting of its own.
    defp placed_parent do
      @parent
      |> update_in(["spec"], fn spec ->
        Map.merge(spec, %{
          "nodeSelector" => %{"pool" => "web"},
          "tolerations" => [%{"key" => "dedicated", "value" => "web", "effect" => "NoSchedule"}],
          "affinity" => %{"podAntiAffinity" => %{"x" => 1}},
          "priorityClassName" => "web-critical",
          "runtimeClassName" => "runc-web",
          "terminationGracePeriodSeconds" => 60
        })
      end)
    end

    test "not given: the parent's resources, node selector and tolerations; none of the rest" do
      pod = build!(%{}, placed_parent())
      assert pod["spec"]["nodeSelector"] == %{"pool" => "web"}
      assert [%{"key" => "dedicated"}] = pod["spec"]["tolerations"]
      assert app_container(pod)["resources"] == %{"limits" => %{"memory" => "1Gi"}}

      for key <- ~w(affinity priorityClassName runtimeClassName),
          do: refute(Map.has_key?(pod["spec"], key), key)
    end

    test "each option replaces the parent's setting as a whole" do
      pod =
        build!(
          %{
            resources: %{requests: %{cpu: "2"}, limits: %{"nvidia.com/gpu" => 1}},
            node_selector: %{"gpu" => "l4"},
            tolerations: @gpu_tolerations,
            affinity: %{nodeAffinity: %{preferredDuringSchedulingIgnoredDuringExecution: []}},
            priority_class_name: "batch-low",
            runtime_class_name: "nvidia"
          },
          placed_parent()
        )

      assert app_container(pod)["resources"] == %{
               "requests" => %{"cpu" => "2"},
               "limits" => %{"nvidia.com/gpu" => "1"}
             }

      assert pod["spec"]["nodeSelector"] == %{"gpu" => "l4"}
      assert pod["spec"]["tolerations"] == @gpu_tolerations

      assert pod["spec"]["affinity"] == %{
               "nodeAffinity" => %{"preferredDuringSchedulingIgnoredDuringExecution" => []}
             }

      assert pod["spec"]["priorityClassName"] == "batch-low"
      assert pod["spec"]["runtimeClassName"] == "nvidia"
      # The other containers of the parent are no business of the runner's.
      assert Enum.map(pod["spec"]["containers"], & &1["name"]) == ["app"]
    end

    test "node_selector: nil removes the parent's node selector, which a merged manifest cannot" do
      clearing_manifest = %{"spec" => %{"nodeSelector" => %{}}}

      assert build!(%{manifest: clearing_manifest}, placed_parent())["spec"]["nodeSelector"] ==
               %{"pool" => "web"}

      pod = build!(%{node_selector: nil, tolerations: nil, resources: nil}, placed_parent())
      refute Map.has_key?(pod["spec"], "nodeSelector")
      refute Map.has_key?(pod["spec"], "tolerations")
      refute Map.has_key?(app_container(pod), "resources")
    end

    test "a map manifest still has the last word, merged over what the options made" do
      manifest = %{
        spec: %{
          nodeSelector: %{"zone" => "a"},
          tolerations: [%{key: "spot", operator: "Exists"}],
          priorityClassName: "from-manifest",
          containers: [%{resources: %{limits: %{"memory" => "2Gi"}}}]
        }
      }

      pod =
        build!(
          %{
            manifest: manifest,
            node_selector: %{"gpu" => "l4"},
            tolerations: @gpu_tolerations,
            priority_class_name: "batch-low",
            resources: %{limits: %{"memory" => "1Gi", "nvidia.com/gpu" => 1}}
          },
          placed_parent()
        )

      assert pod["spec"]["nodeSelector"] == %{"gpu" => "l4", "zone" => "a"}
      assert pod["spec"]["tolerations"] == [%{"key" => "spot", "operator" => "Exists"}]
      assert pod["spec"]["priorityClassName"] == "from-manifest"

      assert app_container(pod)["resources"] == %{
               "limits" => %{"memory" => "2Gi", "nvidia.com/gpu" => "1"}
             }
    end

    test "a function manifest receives the parent and app container as the options leave them" do
      manifest = fn parent, app ->
        assert parent["spec"]["nodeSelector"] == %{"gpu" => "l4"}
        refute Map.has_key?(parent["spec"], "tolerations")
        assert parent["spec"]["runtimeClassName"] == "nvidia"
        assert parent["spec"]["terminationGracePeriodSeconds"] == 40
        assert app["resources"] == %{"limits" => %{"nvidia.com/gpu" => "1"}}
        assert app in parent["spec"]["containers"]
        assert %{"name" => "sidecar", "image" => "envoy:1"} in parent["spec"]["containers"]
        %{"spec" => %{"containers" => [app], "nodeSelector" => %{"mine" => "yes"}}}
      end

      pod =
        build!(
          %{
            manifest: manifest,
            node_selector: %{"gpu" => "l4"},
            tolerations: nil,
            runtime_class_name: "nvidia",
            resources: %{limits: %{"nvidia.com/gpu" => 1}}
          },
          placed_parent()
        )

      assert pod["spec"]["nodeSelector"] == %{"mine" => "yes"}
      assert app_container(pod)["resources"] == %{"limits" => %{"nvidia.com/gpu" => "1"}}
    end

    test "terminationGracePeriodSeconds: :shutdown_timeout rounded up plus 10 s" do
      # Not the parent's 60 s: the runner's drain is FLAME's, not the parent's.
      assert build!(%{}, placed_parent())["spec"]["terminationGracePeriodSeconds"] == 40
      assert build!(%{shutdown_timeout: 120_000})["spec"]["terminationGracePeriodSeconds"] == 130
      assert build!(%{shutdown_timeout: 1_500})["spec"]["terminationGracePeriodSeconds"] == 12
    end

    test "a terminationGracePeriodSeconds of the manifest wins over :shutdown_timeout" do
      manifest = %{"spec" => %{"terminationGracePeriodSeconds" => 5}}

      assert build!(%{manifest: manifest, shutdown_timeout: 120_000})["spec"][
               "terminationGracePeriodSeconds"
             ] == 5

      function = fn _parent, app ->
        %{"spec" => %{"containers" => [app], "terminationGracePeriodSeconds" => 0}}
      end

      assert build!(%{manifest: function})["spec"]["terminationGracePeriodSeconds"] == 0

      # One that copies the parent's spec copies the runner's grace period, not the parent's.
      copy = fn parent, _app -> %{"spec" => parent["spec"]} end

      assert build!(%{manifest: copy}, placed_parent())["spec"]["terminationGracePeriodSeconds"] ==
               40
    end
  end

  test "a function manifest that returns no pod is an error" do
    assert {:error, {:invalid_manifest, message}} =
             build(%{manifest: fn _, _ -> :nope end})

    assert message =~ "returned :nope"

    assert {:error, {:invalid_manifest, "the runner pod has no spec.containers"}} =
             build(%{manifest: fn _, _ -> %{"spec" => %{}} end})
  end

  test "secret_env names never appear as plain env, whoever set them" do
    container =
      build!(%{
        secret_env: %{"DATABASE_URL" => "ecto://secret", "API_KEY" => "k3y"},
        env: %{"API_KEY" => "plain"}
      })
      |> app_container()

    refute "DATABASE_URL" in env_names(container)
    refute "API_KEY" in env_names(container)
  end

  test "the secret carries the same controller owner reference as the pod" do
    secret = secret(%{}, "c")
    assert [%{"uid" => "1111-2222", "controller" => true}] = secret["metadata"]["ownerReferences"]

    refute Map.has_key?(
             secret(%{omit_owner_reference: true}, "c")["metadata"],
             "ownerReferences"
           )
  end

  test "the secret is named like the pod and holds the cookie and :secret_env" do
    overrides = %{secret_env: %{"API_KEY" => "k3y"}}
    secret = secret(overrides, "cookie")

    assert secret["metadata"]["name"] == build!(overrides)["metadata"]["name"]

    assert secret["stringData"] == %{"API_KEY" => "k3y", "RELEASE_COOKIE" => "cookie"}
  end

  test "inspecting the inputs shows neither :secret_env values nor FLAME_PARENT" do
    shown = inspect(inputs(%{secret_env: %{"API_KEY" => "k3y"}}))
    refute shown =~ "k3y"
    refute shown =~ "ENCODED"
    assert shown =~ "web-7d9f8b-x2k9p-flame-abcdefgh"
  end

  test "the runner's owner reference to the parent is the controller: no ReplicaSet adopts it" do
    assert [%{"controller" => true}] = build!()["metadata"]["ownerReferences"]
  end

  test "a function that returns the parent pod itself loses what makes it the parent's" do
    parent =
      @parent
      |> put_in(["metadata", "ownerReferences"], [
        %{"kind" => "ReplicaSet", "name" => "web-7d9f8b", "uid" => "rs", "controller" => true}
      ])
      |> put_in(["metadata", "managedFields"], [%{"manager" => "kube-controller-manager"}])
      |> Map.put("status", %{"phase" => "Running", "podIP" => "10.0.0.9"})

    pod = build!(%{manifest: fn parent, _app -> parent end}, parent)

    assert [%{"kind" => "Pod", "uid" => "1111-2222"}] = pod["metadata"]["ownerReferences"]
    refute Map.has_key?(pod, "status")
    refute Map.has_key?(pod["metadata"], "managedFields")
    refute Map.has_key?(pod["metadata"]["labels"], "app")
    refute Map.has_key?(pod["metadata"]["labels"], "pod-template-hash")
    refute Map.has_key?(pod["spec"], "nodeName")

    env = pod |> app_container() |> env_map()
    # Copied unchanged from the parent, so it ranks below the defaults.
    assert env["PHX_SERVER"] == "false"
    assert env["DATABASE_URL"] == "ecto://db"
  end

  test "automountServiceAccountToken: false on the parent stays false on the runner" do
    parent = put_in(@parent, ["spec", "automountServiceAccountToken"], false)
    assert build!(%{}, parent)["spec"]["automountServiceAccountToken"] == false
  end

  test "malformed env entries are an invalid manifest naming the path" do
    manifest = %{"spec" => %{"containers" => [%{"name" => "app", "env" => [%{"value" => "x"}]}]}}

    assert {:error, {:invalid_manifest, "spec.containers[0].env[" <> _}} =
             build(%{manifest: manifest})

    manifest = %{"spec" => %{"containers" => [%{"name" => "app", "env" => "A=1"}]}}

    assert {:error, {:invalid_manifest, "spec.containers[0].env: expected a list"}} =
             build(%{manifest: manifest})
  end

  describe "a writable tmp_dir (code_sync on read-only-root and non-root runners)" do
    test "an emptyDir mounted at the path, TMPDIR pointing at it" do
      pod = build!(%{tmp_dir: "/tmp/flame"})
      container = app_container(pod)

      assert %{"name" => "flame-tmp", "emptyDir" => %{}} in pod["spec"]["volumes"]
      assert %{"name" => "flame-tmp", "mountPath" => "/tmp/flame"} in container["volumeMounts"]
      assert env_map(container)["TMPDIR"] == "/tmp/flame"
    end

    test "the parent's volumes and mounts stay, and the read-only root is kept" do
      parent =
        @parent
        |> put_in(["spec", "volumes"], [%{"name" => "certs", "secret" => %{"secretName" => "c"}}])
        |> put_in(["spec", "securityContext"], %{"runAsNonRoot" => true, "runAsUser" => 1000})
        |> update_in(["spec", "containers", Access.at(1)], fn app ->
          app
          |> Map.put("volumeMounts", [%{"name" => "certs", "mountPath" => "/certs"}])
          |> Map.put("securityContext", %{"readOnlyRootFilesystem" => true})
        end)

      pod = build!(%{tmp_dir: "/tmp/flame"}, parent)
      container = app_container(pod)

      assert Enum.map(pod["spec"]["volumes"], & &1["name"]) == ["certs", "flame-tmp"]
      assert Enum.map(container["volumeMounts"], & &1["mountPath"]) == ["/certs", "/tmp/flame"]
      assert container["securityContext"] == %{"readOnlyRootFilesystem" => true}
      assert pod["spec"]["securityContext"]["runAsUser"] == 1000
    end

    test "a TMPDIR the container sets itself wins; the volume is still there" do
      parent =
        update_in(
          @parent,
          ["spec", "containers", Access.at(1), "env"],
          &[%{"name" => "TMPDIR", "value" => "/scratch"} | &1]
        )

      assert env_map(app_container(build!(%{tmp_dir: "/tmp/flame"}, parent)))["TMPDIR"] ==
               "/scratch"

      env =
        build!(%{tmp_dir: "/tmp/flame", env: %{"TMPDIR" => "/mine"}})
        |> app_container()
        |> env_map()

      assert env["TMPDIR"] == "/mine"
    end

    test "a flame-tmp volume of the manifest replaces the default one" do
      manifest = %{
        "spec" => %{
          "volumes" => [%{"name" => "flame-tmp", "emptyDir" => %{"medium" => "Memory"}}]
        }
      }

      pod = build!(%{tmp_dir: "/tmp/flame", manifest: manifest})

      assert pod["spec"]["volumes"] == [
               %{"name" => "flame-tmp", "emptyDir" => %{"medium" => "Memory"}}
             ]
    end

    test "something already mounted at the path is kept, and no volume is added for nothing" do
      manifest = %{
        "spec" => %{
          "volumes" => [%{"name" => "scratch", "emptyDir" => %{}}],
          "containers" => [
            %{"volumeMounts" => [%{"name" => "scratch", "mountPath" => "/tmp/flame/"}]}
          ]
        }
      }

      pod = build!(%{tmp_dir: "/tmp/flame", manifest: manifest})

      assert app_container(pod)["volumeMounts"] == [
               %{"name" => "scratch", "mountPath" => "/tmp/flame/"}
             ]

      assert pod["spec"]["volumes"] == [%{"name" => "scratch", "emptyDir" => %{}}]
      assert env_map(app_container(pod))["TMPDIR"] == "/tmp/flame"
    end

    test "tmp_dir: :auto (the default) adds nothing to a container that may write its root" do
      pod = build!(%{tmp_dir: :auto})
      refute Map.has_key?(pod["spec"], "volumes")
      refute Map.has_key?(app_container(pod), "volumeMounts")
      refute Map.has_key?(env_map(app_container(pod)), "TMPDIR")
    end

    test "tmp_dir: :auto mounts /tmp/flame where the root filesystem is read-only" do
      manifest = %{
        "spec" => %{
          "containers" => [
            %{"name" => "app", "securityContext" => %{"readOnlyRootFilesystem" => true}}
          ]
        }
      }

      pod = build!(%{tmp_dir: :auto, manifest: manifest})
      assert pod["spec"]["volumes"] == [%{"name" => "flame-tmp", "emptyDir" => %{}}]

      assert app_container(pod)["volumeMounts"] == [
               %{"name" => "flame-tmp", "mountPath" => "/tmp/flame"}
             ]

      assert env_map(app_container(pod))["TMPDIR"] == "/tmp/flame"
    end

    test "tmp_dir: false adds nothing" do
      pod = build!(%{tmp_dir: false})
      refute Map.has_key?(pod["spec"], "volumes")
      refute Map.has_key?(app_container(pod), "volumeMounts")
      refute Map.has_key?(env_map(app_container(pod)), "TMPDIR")
    end
  end

  describe "dist_port" do
    test "goes in front of ERL_AFLAGS, before the parent's forwarded flags" do
      env =
        build!(%{
          dist_port: 9000,
          forwarded_env: %{"ERL_AFLAGS" => "-kernel inet_dist_listen_min 4000"}
        })
        |> app_container()
        |> env_map()

      assert env["ERL_AFLAGS"] ==
               "-kernel inet_dist_listen_min 9000 inet_dist_listen_max 9000 -kernel inet_dist_listen_min 4000"
    end

    test "is ERL_AFLAGS when nothing else sets it, and wins over :env's ERL_AFLAGS too" do
      assert build!(%{dist_port: 9000}) |> app_container() |> env_map() |> Map.get("ERL_AFLAGS") ==
               "-kernel inet_dist_listen_min 9000 inet_dist_listen_max 9000"

      env =
        build!(%{dist_port: 9000, env: %{"ERL_AFLAGS" => "+S 2"}}) |> app_container() |> env_map()

      assert env["ERL_AFLAGS"] ==
               "-kernel inet_dist_listen_min 9000 inet_dist_listen_max 9000 +S 2"
    end

    test "an ERL_AFLAGS from valueFrom is an invalid manifest saying what to do" do
      source = %{"valueFrom" => %{"configMapKeyRef" => %{"name" => "vm", "key" => "flags"}}}

      assert {:error, {:invalid_manifest, message}} =
               build(%{dist_port: 9000, env: %{"ERL_AFLAGS" => source}})

      assert message =~ "ERL_AFLAGS comes from valueFrom"
    end
  end

  describe "release_mode" do
    defp with_parent_env(parent, extra) do
      update_in(parent, ["spec", "containers"], fn containers ->
        Enum.map(containers, fn
          %{"name" => "app"} = app -> Map.update(app, "env", extra, &(&1 ++ extra))
          other -> other
        end)
      end)
    end

    test "runners load code on first use by default, whatever the parent's RELEASE_MODE" do
      parent = with_parent_env(@parent, [env("RELEASE_MODE", "embedded")])

      assert build!(%{}, parent) |> app_container() |> env_map() |> Map.get("RELEASE_MODE") ==
               "interactive"

      assert build!(%{release_mode: :embedded})
             |> app_container()
             |> env_map()
             |> Map.get("RELEASE_MODE") == "embedded"
    end

    test ":inherit leaves the parent's, and :env wins over the option" do
      parent = with_parent_env(@parent, [env("RELEASE_MODE", "embedded")])
      env = build!(%{release_mode: :inherit}, parent) |> app_container() |> env_map()
      assert env["RELEASE_MODE"] == "embedded"

      refute Map.has_key?(
               build!(%{release_mode: :inherit}) |> app_container() |> env_map(),
               "RELEASE_MODE"
             )

      env = build!(%{env: %{"RELEASE_MODE" => "embedded"}}) |> app_container() |> env_map()
      assert env["RELEASE_MODE"] == "embedded"
    end

    test "is validated with the other options" do
      error = assert_raise ArgumentError, fn -> Options.validate!(release_mode: :lazy) end
      assert error.message =~ ":release_mode"
    end
  end

  describe "a parent whose RELEASE_COOKIE comes from a Secret" do
    @cookie_ref %{"name" => "web-cookie", "key" => "RELEASE_COOKIE"}

    defp secret_cookie_parent do
      update_in(@parent, ["spec", "containers", Access.at(1), "env"], fn env ->
        Enum.map(env, fn
          %{"name" => "RELEASE_COOKIE"} ->
            %{"name" => "RELEASE_COOKIE", "valueFrom" => %{"secretKeyRef" => @cookie_ref}}

          var ->
            var
        end)
      end)
    end

    test "cookie_secret_ref/2 finds the app container's secretKeyRef, and only that" do
      assert RunnerPod.cookie_secret_ref(secret_cookie_parent(), "app") == @cookie_ref
      # A plain value, another container, a parent without containers: no reference.
      assert RunnerPod.cookie_secret_ref(@parent, "app") == nil
      assert RunnerPod.cookie_secret_ref(secret_cookie_parent(), "sidecar") == nil
      assert RunnerPod.cookie_secret_ref(%{}, nil) == nil

      from_configmap =
        put_in(secret_cookie_parent(), ["spec", "containers", Access.at(1), "env"], [
          %{"name" => "RELEASE_COOKIE", "valueFrom" => %{"configMapKeyRef" => @cookie_ref}}
        ])

      assert RunnerPod.cookie_secret_ref(from_configmap, "app") == nil
    end

    test "the runner references the same key and gets no secret of its own" do
      overrides = %{cookie_secret_ref: @cookie_ref}
      {:ok, pod} = build(overrides, secret_cookie_parent())
      container = app_container(pod)

      assert secret(overrides, "cookie", secret_cookie_parent()) == nil
      assert env_map(container)["RELEASE_COOKIE"] == %{"secretKeyRef" => @cookie_ref}
      assert container["envFrom"] == [%{"configMapRef" => %{"name" => "web-config"}}]
      refute "FLAME_K8S_RUNNER_SECRET" in env_names(container)
      # :manifest and :env cannot put another cookie in front of it.
      manifest = %{"spec" => %{"containers" => [%{"env" => [env("RELEASE_COOKIE", "m")]}]}}
      {:ok, pod} = build(Map.put(overrides, :manifest, manifest), secret_cookie_parent())

      assert Enum.filter(app_container(pod)["env"], &(&1["name"] == "RELEASE_COOKIE")) == [
               %{"name" => "RELEASE_COOKIE", "valueFrom" => %{"secretKeyRef" => @cookie_ref}}
             ]
    end

    test "with :secret_env the runner has its secret, holding the cookie as before" do
      overrides = %{cookie_secret_ref: @cookie_ref, secret_env: %{"API_KEY" => "k3y"}}
      {:ok, pod} = build(overrides, secret_cookie_parent())
      container = app_container(pod)
      secret = secret(overrides, "cookie", secret_cookie_parent())

      assert secret["stringData"] == %{"API_KEY" => "k3y", "RELEASE_COOKIE" => "cookie"}
      refute "RELEASE_COOKIE" in env_names(container)
      assert %{"secretRef" => %{"name" => name}} = List.last(container["envFrom"])
      assert name == secret["metadata"]["name"]
      assert env_map(container)["FLAME_K8S_RUNNER_SECRET"] == name
    end
  end

  test "a runner with a secret of its own is told its name; the parent's is not passed on" do
    parent =
      update_in(@parent, ["spec", "containers", Access.at(1), "env"], fn env ->
        env ++ [env("FLAME_K8S_RUNNER_SECRET", "the-parents-own")]
      end)

    {:ok, pod} = build(%{}, parent)

    assert Enum.filter(app_container(pod)["env"], &(&1["name"] == "FLAME_K8S_RUNNER_SECRET")) ==
             [env("FLAME_K8S_RUNNER_SECRET", "web-7d9f8b-x2k9p-flame-abcdefgh")]
  end

  test "service_account_name becomes the pod's serviceAccountName, over the parent's and the manifest's" do
    assert build!()["spec"]["serviceAccountName"] == "web"

    manifest = %{"spec" => %{"serviceAccountName" => "m", "serviceAccount" => "m"}}
    pod_spec = build!(%{manifest: manifest, service_account_name: "web-runner"})["spec"]
    assert pod_spec["serviceAccountName"] == "web-runner"
    refute Map.has_key?(pod_spec, "serviceAccount")
  end

  defp env(name, value), do: %{"name" => name, "value" => value}

  test "active_deadline_seconds becomes the pod's activeDeadlineSeconds, over the manifest's" do
    refute Map.has_key?(build!()["spec"], "activeDeadlineSeconds")

    manifest = %{"spec" => %{"activeDeadlineSeconds" => 60}}
    assert build!(%{manifest: manifest})["spec"]["activeDeadlineSeconds"] == 60

    assert build!(%{manifest: manifest, active_deadline_seconds: 7200})["spec"][
             "activeDeadlineSeconds"
           ] == 7200
  end

  test "the app container's name is recorded in an annotation" do
    pod = build!()
    assert RunnerPod.app_container_name(pod) == "app"
    assert pod["metadata"]["annotations"]["flame-k8s-backend.io/app-container"] == "app"
  end

  describe "drop-in for the pure-Elixir backend 0.7" do
    test ":app_container_name of a container that is not the first, with :secret_env: the secret reaches that container" do
      # 0.7 looked the container up by name in the runner pod, where it was renamed "runner":
      # the secret's envFrom was lost.
      pod = build!(%{app_container_name: "app", secret_env: %{"API_KEY" => "k3y"}})
      assert [container] = pod["spec"]["containers"]
      assert container["name"] == "app"

      assert %{"secretRef" => %{"name" => "web-7d9f8b-x2k9p-flame-abcdefgh"}} in container[
               "envFrom"
             ]

      refute "API_KEY" in env_names(container)

      manifest = fn parent, _app ->
        %{"spec" => %{"containers" => parent["spec"]["containers"]}}
      end

      pod =
        build!(%{
          app_container_name: "app",
          secret_env: %{"API_KEY" => "k3y"},
          manifest: manifest
        })

      assert Enum.map(pod["spec"]["containers"], & &1["name"]) == ["sidecar", "app"]

      assert %{"secretRef" => %{"name" => "web-7d9f8b-x2k9p-flame-abcdefgh"}} in app_container(
               pod
             )["envFrom"]

      refute Map.has_key?(app_container(pod, "sidecar"), "envFrom")
    end

    test "a 0.7-style manifest map: its first container configures the app container when unnamed" do
      manifest = %{
        "spec" => %{
          "containers" => [
            %{
              "env" => [%{"name" => "FOO", "value" => "bar"}],
              "resources" => %{"requests" => %{"memory" => "256Mi", "cpu" => "100m"}}
            }
          ]
        }
      }

      container = app_container(build!(%{manifest: manifest}))
      assert env_map(container)["FOO"] == "bar"
      assert container["resources"]["requests"] == %{"memory" => "256Mi", "cpu" => "100m"}
    end

    test "a first container named otherwise and without image fails saying what to write" do
      manifest = %{"spec" => %{"containers" => [%{"name" => "runner", "resources" => %{}}]}}

      assert {:error, {:invalid_manifest, message}} =
               build(%{manifest: manifest})

      assert message =~ ~s(spec.containers[0] is named "runner")
      assert message =~ ~s{leave the name out (or write "app")}
    end

    test "a manifest namespace other than the parent's fails" do
      manifest = %{"metadata" => %{"namespace" => "elsewhere"}}

      assert {:error, {:invalid_manifest, message}} =
               build(%{manifest: manifest})

      assert message =~ ~s{runner pods run in the parent pod's namespace ("prod")}

      assert build!(%{manifest: %{"metadata" => %{"namespace" => "prod"}}})["metadata"][
               "namespace"
             ] == "prod"
    end
  end

  describe "service_account_token" do
    @ca_env %{
      "name" => "FLAME_K8S_CA_CERT",
      "valueFrom" => %{
        "configMapKeyRef" => %{
          "name" => "kube-root-ca.crt",
          "key" => "ca.crt",
          "optional" => true
        }
      }
    }

    test ":handover (the default): no token volume, the cluster's CA from kube-root-ca.crt" do
      pod = build!()
      assert pod["spec"]["automountServiceAccountToken"] == false
      assert @ca_env in app_container(pod)["env"]
    end

    test ":handover wins over the manifest's automountServiceAccountToken" do
      pod = build!(%{manifest: %{"spec" => %{"automountServiceAccountToken" => true}}})
      assert pod["spec"]["automountServiceAccountToken"] == false
    end

    test ":mount leaves it to the parent, the manifest or the account; no CA env" do
      pod = build!(%{service_account_token: :mount})
      refute Map.has_key?(pod["spec"], "automountServiceAccountToken")
      refute @ca_env in app_container(pod)["env"]

      manifest = %{"spec" => %{"automountServiceAccountToken" => false}}
      pod = build!(%{service_account_token: :mount, manifest: manifest})
      assert pod["spec"]["automountServiceAccountToken"] == false
    end

    test ":none: no token and no CA env" do
      pod = build!(%{service_account_token: :none})
      assert pod["spec"]["automountServiceAccountToken"] == false
      refute @ca_env in app_container(pod)["env"]
    end

    test "a value that is none of these is refused, naming the option" do
      assert_raise ArgumentError, ~r/service_account_token/, fn ->
        build!(%{service_account_token: true})
      end
    end
  end

  describe "service-account tokens (the parent's are never copied)" do
    @sa_path "/var/run/secrets/kubernetes.io/serviceaccount"

    # What the ServiceAccount admission plugin adds to every pod that automounts a token.
    @injected %{
      "name" => "kube-api-access-x2k9p",
      "projected" => %{
        "defaultMode" => 420,
        "sources" => [
          %{"serviceAccountToken" => %{"expirationSeconds" => 3607, "path" => "token"}},
          %{
            "configMap" => %{
              "name" => "kube-root-ca.crt",
              "items" => [%{"key" => "ca.crt", "path" => "ca.crt"}]
            }
          },
          %{
            "downwardAPI" => %{
              "items" => [
                %{
                  "path" => "namespace",
                  "fieldRef" => %{"apiVersion" => "v1", "fieldPath" => "metadata.namespace"}
                }
              ]
            }
          }
        ]
      }
    }

    @certs %{"name" => "certs", "secret" => %{"secretName" => "web-certs"}}
    @config %{
      "name" => "config",
      "projected" => %{"sources" => [%{"configMap" => %{"name" => "web-config"}}]}
    }

    defp token_parent(volumes, app_mounts) do
      @parent
      |> put_in(["spec", "volumes"], volumes)
      |> update_in(["spec", "containers"], fn [sidecar, app] ->
        [
          Map.put(sidecar, "volumeMounts", [
            %{"name" => "kube-api-access-x2k9p", "mountPath" => @sa_path, "readOnly" => true}
          ]),
          Map.put(app, "volumeMounts", app_mounts)
        ]
      end)
    end

    defp volume_names(pod), do: Enum.map(pod["spec"]["volumes"] || [], & &1["name"])

    defp mount_names(pod),
      do: Enum.map(app_container(pod)["volumeMounts"] || [], & &1["name"])

    test "the admission-injected kube-api-access volume and its mount are left out; the others stay" do
      parent =
        token_parent([@certs, @injected, @config], [
          %{"name" => "certs", "mountPath" => "/certs"},
          %{"name" => "kube-api-access-x2k9p", "mountPath" => @sa_path, "readOnly" => true},
          %{"name" => "config", "mountPath" => "/config"}
        ])

      pod = build!(%{}, parent)

      assert volume_names(pod) == ["certs", "config"]
      assert mount_names(pod) == ["certs", "config"]
      refute inspect(pod, limit: :infinity) =~ "serviceAccountToken"
      refute inspect(pod, limit: :infinity) =~ @sa_path
    end

    test "whatever its name: any projected volume with a serviceAccountToken source" do
      vault = %{
        "name" => "vault-token",
        "projected" => %{
          "sources" => [
            %{"serviceAccountToken" => %{"audience" => "vault", "path" => "token"}}
          ]
        }
      }

      parent =
        token_parent([vault, @certs], [
          %{"name" => "vault-token", "mountPath" => "/var/run/secrets/vault"},
          %{"name" => "certs", "mountPath" => "/certs"}
        ])

      pod = build!(%{}, parent)
      assert volume_names(pod) == ["certs"]
      assert mount_names(pod) == ["certs"]
    end

    test "a legacy token Secret (<account>-token-xxxxx at the service-account path) is left out" do
      legacy = %{
        "name" => "web-token-7f9kq",
        "secret" => %{"secretName" => "web-token-7f9kq", "defaultMode" => 420}
      }

      parent =
        token_parent([legacy, @certs], [
          %{"name" => "web-token-7f9kq", "mountPath" => @sa_path, "readOnly" => true},
          %{"name" => "certs", "mountPath" => "/certs"}
        ])

      pod = build!(%{}, parent)
      assert volume_names(pod) == ["certs"]
      assert mount_names(pod) == ["certs"]
    end

    test "a function manifest that copies the parent's pod: its token volume and mounts go too" do
      parent =
        token_parent([@injected, @certs], [
          %{"name" => "kube-api-access-x2k9p", "mountPath" => @sa_path, "readOnly" => true},
          %{"name" => "certs", "mountPath" => "/certs"}
        ])

      pod = build!(%{manifest: fn parent, _app -> parent end}, parent)

      assert volume_names(pod) == ["certs"]

      for container <- pod["spec"]["containers"],
          mount <- container["volumeMounts"] || [],
          do: refute(mount["mountPath"] == @sa_path)
    end

    test "a token volume the :manifest asks for is the user's choice, and stays" do
      own = %{
        "name" => "runner-token",
        "projected" => %{
          "sources" => [%{"serviceAccountToken" => %{"audience" => "vault", "path" => "t"}}]
        }
      }

      manifest = %{
        "spec" => %{
          "volumes" => [own],
          "containers" => [
            %{"volumeMounts" => [%{"name" => "runner-token", "mountPath" => "/vault"}]}
          ]
        }
      }

      pod = build!(%{manifest: manifest}, token_parent([@injected], []))
      assert volume_names(pod) == ["runner-token"]
      assert mount_names(pod) == ["runner-token"]
    end
  end

  describe "a cookie in ERL_AFLAGS / ERL_ZFLAGS (-setcookie) never becomes pod env" do
    defp all_text(pod), do: inspect(pod, limit: :infinity, printable_limit: :infinity)

    test "the forwarded flags lose -setcookie and its values, and keep the rest" do
      pod =
        build!(%{
          forwarded_env: %{
            "ERL_AFLAGS" => "-kernel shell_history enabled -setcookie s3cr3t-c00kie +S 2",
            "ERL_ZFLAGS" => "-setcookie other@host 0th3r-c00kie -proto_dist inet6_tcp"
          }
        })

      env = env_map(app_container(pod))
      assert env["ERL_AFLAGS"] == "-kernel shell_history enabled +S 2"
      assert env["ERL_ZFLAGS"] == "-proto_dist inet6_tcp"
      refute all_text(pod) =~ "c00kie"
    end

    test "flags that held nothing but the cookie are not set at all" do
      pod = build!(%{forwarded_env: %{"ERL_AFLAGS" => "  -setcookie 'a c00kie with spaces' "}})
      refute "ERL_AFLAGS" in env_names(app_container(pod))
      refute all_text(pod) =~ "c00kie"
    end

    test "whoever set them: the parent container's env, the manifest, :env" do
      parent =
        update_in(@parent, ["spec", "containers", Access.at(1), "env"], fn env ->
          env ++ [%{"name" => "ERL_ZFLAGS", "value" => "-setcookie p4r3nt-c00kie"}]
        end)

      pod = build!(%{env: %{"ERL_AFLAGS" => "+S 2 -setcookie \"us3r c00kie\""}}, parent)
      env = env_map(app_container(pod))
      assert env["ERL_AFLAGS"] == "+S 2"
      refute Map.has_key?(env, "ERL_ZFLAGS")
      refute all_text(pod) =~ "c00kie"
    end

    test "with :dist_port the port still goes in front" do
      env =
        build!(%{dist_port: 9000, forwarded_env: %{"ERL_AFLAGS" => "-setcookie c00kie +S 2"}})
        |> app_container()
        |> env_map()

      assert env["ERL_AFLAGS"] ==
               "-kernel inet_dist_listen_min 9000 inet_dist_listen_max 9000 +S 2"
    end

    test "strip_cookie_flags/1 reads flags as erlexec does: quotes, several values, no match inside a word" do
      assert Env.strip_cookie_flags(~s(-a 1 -setcookie "x y" 'z' -b)) == "-a 1 -b"
      assert Env.strip_cookie_flags("-setcookie c +A 4") == "+A 4"

      assert Env.strip_cookie_flags("-nosetcookie -xsetcookie x") ==
               "-nosetcookie -xsetcookie x"

      assert Env.strip_cookie_flags("-setcookie") == ""

      assert Env.strip_cookie_flags("-s mod -extra -setcookie x") ==
               "-s mod -extra -setcookie x"
    end
  end

  test "the pod and its secret record the boot timeout they were made for (the sweep reads it)" do
    pod = build!(%{boot_timeout: 45_000})
    assert pod["metadata"]["annotations"]["flame-k8s-backend.io/boot-timeout-ms"] == "45000"

    secret = secret(%{boot_timeout: 45_000}, "c00kie")
    assert secret["metadata"]["annotations"]["flame-k8s-backend.io/boot-timeout-ms"] == "45000"
  end

  test "Runtime.new/4: a fresh runner name, the node basename option, FLAME_PARENT kept from inspect" do
    opts = Options.validate!(runner_node_basename: "worker")
    runtime = Runtime.new(@parent, opts, make_ref(), "not-the-vm-environment-cookie")

    assert runtime.runner_name =~ ~r/\Aweb-7d9f8b-x2k9p-flame-[a-z0-9]+\z/
    assert Runtime.new(@parent, opts, make_ref(), "c").runner_name != runtime.runner_name
    assert runtime.node_basename == "worker"
    # Only a VM whose RELEASE_COOKIE is this very cookie may hand the runner its Secret.
    assert runtime.cookie_secret_ref == nil
    refute inspect(runtime) =~ runtime.flame_parent

    default = Runtime.new(@parent, Options.validate!([]), make_ref(), "c")
    assert default.node_basename == default.runner_name
  end

  test "rename/4: a replacement pod's runner node follows its name, unless the node name was set" do
    old = "web-7d9f8b-x2k9p-flame-abcdefgh"
    new = "web-7d9f8b-x2k9p-flame-bcdefghi"
    release_node = fn pod -> env_map(app_container(pod))["RELEASE_NODE"] end

    renamed = build!(%{node_basename: old}) |> RunnerPod.rename("app", old, new)
    assert renamed["metadata"]["name"] == new
    assert release_node.(renamed) == "#{new}@$(POD_IP)"

    # The basename "web" (as :runner_node_basename gives) is not the pod's name: it stays.
    basename = build!()
    assert release_node.(RunnerPod.rename(basename, "app", old, new)) == "web@$(POD_IP)"

    user = build!(%{env: %{"RELEASE_NODE" => "mine@$(POD_IP)"}})
    assert release_node.(RunnerPod.rename(user, "app", old, new)) == "mine@$(POD_IP)"
  end
end
