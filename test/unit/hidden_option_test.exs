defmodule FLAMEK8sBackend.HiddenOptionTest do
  # The :hidden option: validated once in Options, and `-hidden` in the runner's ERL_AFLAGS,
  # which both a release's `bin/app start` and plain `elixir`/`erl` read, in front of whatever
  # ERL_AFLAGS the runner gets otherwise.
  use ExUnit.Case, async: true

  @moduletag :unit

  alias FLAMEK8sBackend.{Options, RunnerPod}
  alias FLAMEK8sBackend.RunnerPod.Runtime

  @parent %{
    "metadata" => %{"name" => "web-7d9f8b-x2k9p", "namespace" => "prod", "uid" => "1111"},
    "spec" => %{
      "containers" => [
        %{
          "name" => "app",
          "image" => "registry.example/web:42",
          "env" => [%{"name" => "DATABASE_URL", "value" => "ecto://db"}]
        }
      ]
    }
  }

  defp build(opts, forwarded_env \\ %{}) do
    opts = Options.validate!(Keyword.merge([tmp_dir: false], opts))

    runtime = %Runtime{
      node_basename: "web",
      flame_parent: "ENCODED",
      runner_name: "web-7d9f8b-x2k9p-flame-abcdefgh",
      forwarded_env: forwarded_env
    }

    RunnerPod.build(@parent, opts, runtime)
  end

  defp env(opts, forwarded_env \\ %{}) do
    {:ok, pod} = build(opts, forwarded_env)
    [container] = pod["spec"]["containers"]
    Map.new(container["env"], &{&1["name"], &1["value"] || &1["valueFrom"]})
  end

  describe "the option" do
    test "defaults to false: runners stay visible nodes" do
      assert Options.validate!([]).hidden == false
      refute Map.has_key?(env([]), "ERL_AFLAGS")
    end

    test "takes true or false, also from config :flame, FLAMEK8sBackend" do
      assert Options.validate!(hidden: true).hidden == true
      assert Options.validate!(hidden: false).hidden == false
      assert Options.from([hidden: true], []).hidden == true
      assert Options.from([hidden: true], hidden: false).hidden == false
    end

    for value <- ["true", 1, nil, :yes] do
      test "#{inspect(value)} is rejected with the option's name" do
        error =
          assert_raise ArgumentError, fn ->
            Options.validate!(hidden: unquote(value))
          end

        assert error.message =~ "FLAMEK8sBackend option :hidden: expected a boolean"
      end
    end

    test "is documented among the options" do
      assert Options.docs() =~ "* `:hidden` - `true` starts the runner's VM as a hidden"
    end
  end

  describe "the runner's ERL_AFLAGS" do
    test "is -hidden when nothing else sets it" do
      assert env(hidden: true)["ERL_AFLAGS"] == "-hidden"
    end

    test "keeps the parent's forwarded ERL_AFLAGS after -hidden, and ERL_ZFLAGS as it is" do
      env =
        env([hidden: true], %{
          "ERL_AFLAGS" => "-kernel shell_history enabled",
          "ERL_ZFLAGS" => "-proto_dist inet6_tcp"
        })

      assert env["ERL_AFLAGS"] == "-hidden -kernel shell_history enabled"
      assert env["ERL_ZFLAGS"] == "-proto_dist inet6_tcp"
    end

    test ":env's ERL_AFLAGS replaces the forwarded one and is kept after -hidden" do
      env =
        env([hidden: true, env: %{"ERL_AFLAGS" => "+S 2"}], %{
          "ERL_AFLAGS" => "-kernel shell_history enabled"
        })

      assert env["ERL_AFLAGS"] == "-hidden +S 2"
    end

    test "a :manifest's ERL_AFLAGS is kept after -hidden too" do
      manifest = %{
        "spec" => %{"containers" => [%{"env" => [%{"name" => "ERL_AFLAGS", "value" => "+A 4"}]}]}
      }

      assert env(hidden: true, manifest: manifest)["ERL_AFLAGS"] == "-hidden +A 4"
    end

    test "comes after :dist_port's flags, whose kernel parameters stay first" do
      env = env([hidden: true, dist_port: 9000], %{"ERL_AFLAGS" => "+S 2"})

      assert env["ERL_AFLAGS"] ==
               "-kernel inet_dist_listen_min 9000 inet_dist_listen_max 9000 -hidden +S 2"
    end

    test "gets no second -hidden, but one in front of an -extra (a plain argument after it)" do
      assert env(hidden: true, env: %{"ERL_AFLAGS" => "+S 2 -hidden"})["ERL_AFLAGS"] ==
               "+S 2 -hidden"

      assert env(hidden: true, env: %{"ERL_AFLAGS" => "+S 2 -extra -hidden"})["ERL_AFLAGS"] ==
               "-hidden +S 2 -extra -hidden"
    end

    test "still loses a -setcookie of the forwarded flags" do
      env = env([hidden: true], %{"ERL_AFLAGS" => "-setcookie s3cr3t +S 2"})
      assert env["ERL_AFLAGS"] == "-hidden +S 2"
      refute inspect(env) =~ "s3cr3t"
    end

    test "hidden: false leaves the flags as they are, a -hidden of the parent's own included" do
      assert env([hidden: false], %{"ERL_AFLAGS" => "-hidden +S 2"})["ERL_AFLAGS"] ==
               "-hidden +S 2"
    end

    test "from valueFrom is an invalid manifest naming :hidden and what to do" do
      source = %{"valueFrom" => %{"configMapKeyRef" => %{"name" => "vm", "key" => "flags"}}}

      assert {:error, {:invalid_manifest, message}} =
               build(hidden: true, env: %{"ERL_AFLAGS" => source})

      assert message ==
               "ERL_AFLAGS comes from valueFrom, so :hidden cannot go in front of it: give " <>
                 "ERL_AFLAGS as a value, or set -hidden in it and leave :hidden out"

      assert {:error, {:invalid_manifest, message}} =
               build(hidden: true, dist_port: 9000, env: %{"ERL_AFLAGS" => source})

      assert message =~ "so :dist_port and :hidden cannot go in front of it"
    end

    test "the flag makes a VM started with it hidden" do
      # What the runner VM does with the variable: erl reads ERL_AFLAGS (a release's
      # `bin/app start` execs erl too).
      erl = System.find_executable("erl")

      {out, 0} =
        System.cmd(
          erl,
          ["-noshell", "-eval", "io:format(\"~p\", [init:get_argument(hidden)]), halt()."],
          env: [{"ERL_AFLAGS", env(hidden: true)["ERL_AFLAGS"]}]
        )

      assert out == "{ok,[[]]}"
    end
  end
end
