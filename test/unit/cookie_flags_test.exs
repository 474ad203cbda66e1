defmodule FLAMEK8sBackend.CookieFlagsTest do
  # A release's env.sh may put the cookie into ERL_AFLAGS or ERL_ZFLAGS (`-setcookie`), which
  # init/1 forwards to runners. Anyone who may read pod specs (the built-in `view` role) would
  # read it there: the runner gets the flags without it, and the cookie through its Secret.
  # Not async: it sets ERL_AFLAGS, ERL_ZFLAGS and RELEASE_COOKIE in this VM's environment.
  use ExUnit.Case, async: false

  @moduletag :unit
  @moduletag :tmp_dir

  Code.require_file("support/fake_api_server.exs", __DIR__)

  alias FLAMEK8sBackend.Test.FakeApiServer

  setup do
    saved = for name <- ~w(ERL_AFLAGS ERL_ZFLAGS RELEASE_COOKIE), do: {name, System.get_env(name)}

    on_exit(fn ->
      for {name, value} <- saved,
          do: if(value, do: System.put_env(name, value), else: System.delete_env(name))
    end)
  end

  defp manifests!(dir) do
    name = "web-#{System.unique_integer([:positive])}"

    parent =
      ~s({"kind":"Pod","apiVersion":"v1","metadata":{"name":"#{name}","namespace":"prod",) <>
        ~s("uid":"uid-#{name}"},"spec":{"containers":[{"name":"app","image":"app:1"}]}})

    url =
      FakeApiServer.start!(self(), fn
        "GET", "/api/v1/namespaces/prod/pods/" <> _ -> {200, parent}
        "GET", _list -> {200, ~s({"kind":"List","apiVersion":"v1","metadata":{},"items":[]})}
      end)

    opts = [parent_pod: {"prod", name}, kubeconfig: FakeApiServer.kubeconfig!(dir, url)]
    {:ok, state} = FLAMEK8sBackend.init(opts)
    FLAMEK8sBackend.runner_manifests(state)
  end

  test "the cookie of -setcookie in ERL_AFLAGS/ERL_ZFLAGS reaches the runner through its Secret only",
       %{tmp_dir: dir} do
    cookie = Atom.to_string(Node.get_cookie())
    System.put_env("ERL_AFLAGS", "-setcookie #{cookie} -kernel shell_history enabled")
    System.put_env("ERL_ZFLAGS", "+S 2 -setcookie #{Node.self()} #{cookie}")
    System.delete_env("RELEASE_COOKIE")

    %{pod: pod, secret: secret} = manifests!(dir)
    [app] = pod["spec"]["containers"]
    env = Map.new(app["env"], &{&1["name"], &1["value"]})

    refute inspect(pod, limit: :infinity, printable_limit: :infinity) =~ cookie
    assert env["ERL_AFLAGS"] == "-kernel shell_history enabled"
    assert env["ERL_ZFLAGS"] == "+S 2"
    assert secret["stringData"]["RELEASE_COOKIE"] == cookie
    assert %{"secretRef" => %{"name" => secret["metadata"]["name"]}} in app["envFrom"]
  end
end
