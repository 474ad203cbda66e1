defmodule FLAMEK8sBackend.OptionsTest do
  use ExUnit.Case, async: true

  @moduletag :unit

  doctest FLAMEK8sBackend.Options

  alias FLAMEK8sBackend.Options

  test "defaults" do
    opts = Options.validate!([])
    assert opts.boot_timeout == 30_000
    assert opts.unschedulable == :wait
    assert opts.log == false
    assert opts.env == %{}
  end

  test "accepts FLAME's own options" do
    assert %{boot_timeout: 5_000, log: :info} =
             Options.validate!(boot_timeout: 5_000, log: :info, terminator_sup: :sup)
  end

  test "env and labels take maps or keywords, names become strings" do
    opts = Options.validate!(env: [FOO: "1"], labels: %{excluster: "flame"})
    assert opts.env == %{"FOO" => "1"}
    assert opts.labels == %{"excluster" => "flame"}
  end

  test "unknown options are named" do
    error = assert_raise ArgumentError, fn -> Options.validate!(boot_timout: 1) end
    assert error.message =~ "unknown option(s) [:boot_timout]"
  end

  for {key, value, expected} <- [
        {:boot_timeout, 0, "a positive integer"},
        {:boot_timeout, "30s", "a positive integer"},
        {:manifest, &:erlang.date/0, "a map or a function of 2 arguments"},
        {:env, %{"A" => 1}, "string values"},
        {:labels, "app=web", "a map"},
        {:log, :loud, "false or a Logger level"},
        {:unschedulable, :maybe, ":fail or :wait"},
        {:parent_pod, "ns/name", "{namespace, name}"},
        {:omit_owner_reference, "yes", "a boolean"},
        {:app_container_name, :app, "a non-empty UTF-8 string"}
      ] do
    test "#{key}: #{inspect(value)} is rejected with the option's name" do
      error =
        assert_raise ArgumentError, fn ->
          Options.validate!([{unquote(key), unquote(Macro.escape(value))}])
        end

      assert error.message =~ inspect(unquote(key))
      assert error.message =~ unquote(expected)
    end
  end

  test "a bad secret_env value is rejected without echoing it" do
    error =
      assert_raise ArgumentError, fn ->
        Options.validate!(secret_env: %{"TOKEN" => ~c"hunter2"})
      end

    assert error.message =~ "TOKEN"
    refute error.message =~ "hunter2"
  end

  describe "secret values are never echoed" do
    test "in a list that is not a keyword list" do
      error =
        assert_raise ArgumentError, fn ->
          Options.validate!([{:secret_env, %{"A" => "hunter2"}}, "x"])
        end

      refute error.message =~ "hunter2"
    end

    test "in a bad name or a bad shape" do
      for bad <- [%{"" => "hunter2"}, %{"A B" => "hunter2"}, "API_KEY=hunter2", [{1, "hunter2"}]] do
        error = assert_raise ArgumentError, fn -> Options.validate!(secret_env: bad) end
        assert error.message =~ ":secret_env"
        refute error.message =~ "hunter2"
      end
    end

    test "in config that is not a keyword list" do
      error =
        assert_raise ArgumentError, fn ->
          Options.from(%{secret_env: %{"A" => "hunter2"}}, [])
        end

      assert error.message =~ "config :flame, FLAMEK8sBackend"
      refute error.message =~ "hunter2"
    end
  end

  test "given options win over config, but FLAME's log: false never hides a configured level" do
    assert %{boot_timeout: 2, log: :info} =
             Options.from([boot_timeout: 1, log: :info], boot_timeout: 2, log: false)

    assert %{log: :debug} = Options.from([log: :info], log: :debug)
    assert %{log: false} = Options.from([], log: false)
  end

  test "runner node basenames and parent pod names must be valid" do
    assert_raise ArgumentError, ~r/:runner_node_basename/, fn ->
      Options.validate!(runner_node_basename: "my app@x")
    end

    assert_raise ArgumentError, ~r/:parent_pod/, fn ->
      Options.validate!(parent_pod: {"a/b", "x"})
    end

    assert %{runner_node_basename: "web-runner_1"} =
             Options.validate!(runner_node_basename: "web-runner_1")
  end

  # The one place user input is checked: what reaches the Kubernetes client is valid, so its
  # errors never name the client's own arguments.
  test "timeouts are bounded and strings are UTF-8, each error naming the option" do
    for key <- [:boot_timeout, :request_timeout, :api_server_request_timeout],
        bad <- [0, -1, 4_000_000_001, 1.5, :infinity] do
      assert_raise ArgumentError,
                   ~r/^FLAMEK8sBackend option #{inspect(key)}: expected a positive integer \(ms\) of at most 4000000000/,
                   fn -> Options.validate!([{key, bad}]) end
    end

    assert %{request_timeout: 4_000_000_000} = Options.validate!(request_timeout: 4_000_000_000)

    for key <- [:kubeconfig, :context, :app_container_name], bad <- ["", <<255>>, :x] do
      assert_raise ArgumentError,
                   ~r/^FLAMEK8sBackend option #{inspect(key)}: expected a non-empty UTF-8 string/,
                   fn ->
                     Options.validate!([{key, bad}])
                   end
    end
  end

  test "inspecting validated options never shows :secret_env values" do
    opts = Options.validate!(secret_env: %{"API_KEY" => "hunter2"}, env: %{"ROLE" => "runner"})
    assert %Options{} = opts
    refute inspect(opts) =~ "hunter2"
    assert inspect(opts) =~ "runner"
  end

  describe "drop-in for the pure-Elixir backend (mruoss/flame_k8s_backend 0.7)" do
    test "every option it accepts is accepted here" do
      opts =
        Options.validate!(
          app_container_name: "app",
          manifest: %{"spec" => %{"containers" => [%{"resources" => %{}}]}},
          env: %{"FOO" => "bar"},
          secret_env: %{"API_KEY" => "k3y"},
          terminator_sup: :sup,
          log: :info,
          boot_timeout: 60_000,
          omit_owner_reference: true
        )

      assert %{app_container_name: "app", log: :info, boot_timeout: 60_000} = opts
      assert opts.omit_owner_reference
      assert opts.env == %{"FOO" => "bar"}
    end

    for {old, hint} <- [
          runner_pod_tpl: ":manifest",
          container_name: ":app_container_name",
          token_path: ":kubeconfig",
          insecure_skip_tls_verify: ":kubeconfig"
        ] do
      test "its earlier option #{inspect(old)} fails naming #{hint}" do
        error = assert_raise ArgumentError, fn -> Options.validate!([{unquote(old), "x"}]) end

        assert error.message =~ "FLAMEK8sBackend option #{inspect(unquote(old))}: "
        assert error.message =~ unquote(hint)
      end
    end

    test "RELEASE_COOKIE in :env or :secret_env fails, naming the reason and never the value" do
      for key <- [:env, :secret_env],
          cookie <- [%{"RELEASE_COOKIE" => "hunter2"}, [RELEASE_COOKIE: "hunter2"]] do
        error = assert_raise ArgumentError, fn -> Options.validate!([{key, cookie}]) end
        assert error.message =~ "#{inspect(key)}: RELEASE_COOKIE is always the parent's cookie"
        refute error.message =~ "hunter2"
      end
    end
  end

  describe "tmp_dir, dist_port, active_deadline_seconds" do
    test "defaults: a writable /tmp/flame only where the root is read-only, no fixed port, no deadline" do
      assert %{tmp_dir: :auto, dist_port: nil, active_deadline_seconds: nil} =
               Options.validate!([])
    end

    test "valid values; a trailing slash of tmp_dir is dropped" do
      assert %{tmp_dir: "/scratch", dist_port: 9000, active_deadline_seconds: 3600} =
               Options.validate!(
                 tmp_dir: "/scratch/",
                 dist_port: 9000,
                 active_deadline_seconds: 3600
               )

      assert %{tmp_dir: false} = Options.validate!(tmp_dir: false)
    end

    for {key, value, expected} <- [
          {:tmp_dir, "tmp", "an absolute path"},
          {:tmp_dir, "/", "an absolute path other than /"},
          {:tmp_dir, "//", "an absolute path other than /"},
          {:tmp_dir, true, "an absolute path"},
          {:dist_port, 0, "a TCP port"},
          {:dist_port, 70_000, "a TCP port"},
          {:dist_port, "9000", "a TCP port"},
          {:active_deadline_seconds, 0, "a positive integer (seconds)"},
          {:active_deadline_seconds, :infinity, "a positive integer (seconds)"}
        ] do
      test "#{key}: #{inspect(value)} is rejected" do
        error =
          assert_raise ArgumentError, fn ->
            Options.validate!([{unquote(key), unquote(value)}])
          end

        assert error.message =~ "option #{inspect(unquote(key))}: expected #{unquote(expected)}"
      end
    end

    test "active_deadline_seconds must be longer than the boot timeout, wherever each is set" do
      for {config, opts} <- [
            {[], [active_deadline_seconds: 30]},
            {[], [active_deadline_seconds: 10, boot_timeout: 10_000]},
            {[active_deadline_seconds: 60], [boot_timeout: 120_000]},
            {[boot_timeout: 45_500], [active_deadline_seconds: 45]}
          ] do
        error = assert_raise ArgumentError, fn -> Options.from(config, opts) end
        merged = Options.validate!(Keyword.delete(config ++ opts, :active_deadline_seconds))
        seconds = Keyword.fetch!(config ++ opts, :active_deadline_seconds)

        assert error.message =~
                 "option :active_deadline_seconds (#{seconds} s) must be longer than " <>
                   ":boot_timeout (#{merged.boot_timeout} ms)"
      end

      # Just longer: accepted (the default boot timeout is 30 s).
      assert %{active_deadline_seconds: 31} = Options.from([], active_deadline_seconds: 31)

      assert %{active_deadline_seconds: 11, boot_timeout: 10_999} =
               Options.from([active_deadline_seconds: 11], boot_timeout: 10_999)
    end
  end

  test "secret_env may be a function, called at validation: its values stay out of the pool's options" do
    opts = [secret_env: fn -> %{"API_KEY" => "k3y-from-fun"} end]
    refute inspect(opts, structs: false) =~ "k3y-from-fun"
    assert Options.validate!(opts).secret_env == %{"API_KEY" => "k3y-from-fun"}

    error =
      assert_raise ArgumentError, fn -> Options.validate!(secret_env: fn -> :not_a_map end) end

    assert error.message =~ "option :secret_env: expected a map of variable names to strings"
  end

  describe "service_account_name" do
    test "unset by default: runners run as the parent's service account" do
      assert %{service_account_name: nil} = Options.validate!([])

      assert %{service_account_name: "web-runner"} =
               Options.validate!(service_account_name: "web-runner")

      assert Options.docs() =~
               ~r/`:service_account_name` - .* Default: the parent pod's service account\./
    end

    for value <- ["", "Web_Runner", "-web", :web] do
      test "#{inspect(value)} is rejected naming the option" do
        error =
          assert_raise ArgumentError, fn ->
            Options.validate!(service_account_name: unquote(value))
          end

        assert error.message =~ "option :service_account_name: expected a Kubernetes name"
      end
    end
  end

  describe "resources and placement" do
    @placement [
      :resources,
      :node_selector,
      :tolerations,
      :affinity,
      :priority_class_name,
      :runtime_class_name
    ]

    test "default to :inherit; nil (clear) and :inherit are accepted as given" do
      defaults = Options.validate!([])
      assert Enum.map(@placement, &Map.fetch!(defaults, &1)) == List.duplicate(:inherit, 6)
      cleared = Options.validate!(Enum.map(@placement, &{&1, nil}))
      assert Enum.map(@placement, &Map.fetch!(cleared, &1)) == List.duplicate(nil, 6)
    end

    test "a pool's :inherit undoes a setting of the application config" do
      opts = Options.from([node_selector: %{"pool" => "gpu"}], node_selector: :inherit)
      assert opts.node_selector == :inherit
    end

    test "normalized as the API server takes them: string keys, quantities as strings" do
      opts =
        Options.validate!(
          resources: [requests: [cpu: "500m", memory: "1Gi"], limits: %{"nvidia.com/gpu" => 1}],
          node_selector: [gpu: "l4"],
          tolerations: [%{key: "gpu", operator: "Exists", tolerationSeconds: 30}],
          affinity: %{nodeAffinity: %{requiredDuringSchedulingIgnoredDuringExecution: %{}}}
        )

      assert opts.resources == %{
               "requests" => %{"cpu" => "500m", "memory" => "1Gi"},
               "limits" => %{"nvidia.com/gpu" => "1"}
             }

      assert opts.node_selector == %{"gpu" => "l4"}

      assert opts.tolerations == [
               %{"key" => "gpu", "operator" => "Exists", "tolerationSeconds" => 30}
             ]

      assert opts.affinity == %{
               "nodeAffinity" => %{"requiredDuringSchedulingIgnoredDuringExecution" => %{}}
             }
    end

    test "quantities Kubernetes writes are accepted" do
      for q <- ~w(1 0.5 500m 1Gi 128974848 129e6 129M 1.5Ki 100n .5) do
        assert Options.validate!(resources: %{limits: %{"memory" => q}}).resources ==
                 %{"limits" => %{"memory" => q}}
      end
    end

    for {key, value, expected} <- [
          {:resources, "1Gi", "a map such as"},
          {:resources, ["1Gi"], "a map such as"},
          {:resources, [cpu: "1"], "only :requests and :limits"},
          {:resources, %{request: %{"cpu" => "1"}}, "only :requests and :limits"},
          {:resources, %{limits: %{"cpu" => "1 core"}}, "a quantity for cpu"},
          {:resources, %{limits: %{"cpu" => 0.5}}, "a quantity for cpu"},
          {:resources, %{limits: %{"memory" => -1}}, "a quantity for memory"},
          {:resources, %{limits: %{"nvidia.com/gpu/x" => 1}}, "a resource name"},
          {:resources, %{limits: "1Gi"}, "limits as a map of resource names"},
          {:node_selector, "gpu=l4", "a map"},
          {:node_selector, %{"bad key!" => "x"}, "a label key"},
          {:node_selector, %{"gpu" => true}, "label values"},
          {:tolerations, %{key: "gpu"}, "a list of toleration maps"},
          {:tolerations, [%{key: "gpu", operator: "Maybe"}], "a toleration operator"},
          {:tolerations, [%{key: "gpu", effect: "NoRun"}], "a toleration effect"},
          {:tolerations, [%{key: "gpu", tolerationSeconds: "30"}], "tolerationSeconds"},
          {:tolerations, [%{key: :gpu}], "the toleration's key as a string"},
          {:tolerations, [%{keys: "gpu"}], "toleration fields"},
          {:affinity, [nodeAffinity: %{}], "a pod affinity map"},
          {:affinity, %{nodeAffinty: %{}}, "a map of nodeAffinity"},
          {:priority_class_name, "Batch Low", "a Kubernetes name"},
          {:runtime_class_name, :nvidia, "a Kubernetes name"},
          {:shutdown_timeout, 0, "a positive integer (ms)"}
        ] do
      test "#{key}: #{inspect(value)} is rejected with the option's name" do
        error =
          assert_raise ArgumentError, fn ->
            Options.validate!([{unquote(key), unquote(Macro.escape(value))}])
          end

        assert error.message =~ "FLAMEK8sBackend option #{inspect(unquote(key))}: expected"
        assert error.message =~ unquote(expected)
      end
    end

    test ":shutdown_timeout defaults to FLAME's 30 s" do
      assert Options.validate!([]).shutdown_timeout == 30_000
      assert Options.from([], []).shutdown_timeout == 30_000
    end

    # The runner runs the parent's release: the terminator's drain on SIGTERM is bounded by
    # the same `config :flame, :terminator` the parent has.
    test ":shutdown_timeout defaults to the release's `config :flame, :terminator`" do
      terminator = [shutdown_timeout: 120_000, log: :info]
      assert Options.from([], [], terminator).shutdown_timeout == 120_000
      assert Options.from([shutdown_timeout: 5_000], [], terminator).shutdown_timeout == 5_000
      assert Options.from([], [shutdown_timeout: 7_000], terminator).shutdown_timeout == 7_000

      error = assert_raise ArgumentError, fn -> Options.from([], [], shutdown_timeout: "1") end
      assert error.message =~ "config :flame, :terminator"
      assert error.message =~ ":shutdown_timeout"
    end
  end

  describe "docs/0, rendered from the schema that validates" do
    test "documents every option with its default, and only FLAME's own one is left out" do
      docs = Options.docs()
      documented = Regex.scan(~r/^  \* `:(\w+)` - /m, docs, capture: :all_but_first)

      assert List.flatten(documented) --
               Enum.map(Map.keys(Map.from_struct(%Options{})), &Atom.to_string/1) == []

      assert length(documented) == map_size(Map.from_struct(%Options{})) - 1
      refute docs =~ "terminator_sup"
      assert docs =~ ~r/`:boot_timeout` - .* Default: `30_000`\./
      assert docs =~ ~r/`:unschedulable` - .* Default: `:wait`\./
      assert docs =~ ~r/`:app_container_name` - .* Default: the first container\./
      assert docs =~ ~r/`:node_selector` - .* Default: the parent pod's\./

      assert docs =~
               ~r/`:shutdown_timeout` - .* Default: the runner's `config :flame, :terminator, shutdown_timeout:`/
    end

    test "is the option list of FLAMEK8sBackend's moduledoc" do
      {:docs_v1, _, :elixir, _, %{"en" => moduledoc}, _, _} = Code.fetch_docs(FLAMEK8sBackend)
      assert moduledoc =~ Options.docs()
    end
  end
end
