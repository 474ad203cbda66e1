defmodule FLAMEK8sBackend.OptionsTest do
  use ExUnit.Case, async: true

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
end
