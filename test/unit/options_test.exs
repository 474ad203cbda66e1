defmodule FLAMEK8sBackend.OptionsTest do
  use ExUnit.Case, async: true

  @moduletag :unit

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
        {:app_container_name, :app, "a non-empty string"}
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
      assert_raise ArgumentError, fn -> Options.validate!(secret_env: %{"TOKEN" => 'hunter2'}) end

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
end
