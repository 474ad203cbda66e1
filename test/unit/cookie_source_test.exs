defmodule FLAMEK8sBackend.CookieSourceTest do
  # Where a runner's cookie comes from, decided by init/1: the parent's own Secret only when the
  # parent's RELEASE_COOKIE comes from one and this VM runs with that very cookie. Not async:
  # it sets RELEASE_COOKIE in this VM's environment.
  use ExUnit.Case, async: false

  @moduletag :unit
  @moduletag :tmp_dir

  Code.require_file("support/fake_api_server.exs", __DIR__)

  alias FLAMEK8sBackend.Test.FakeApiServer

  defp init!(dir, parent), do: FLAMEK8sBackend.runner_manifests(init_state!(dir, parent))

  defp init_state!(dir, parent) do
    url =
      FakeApiServer.start!(self(), fn
        "GET", "/api/v1/namespaces/prod/pods/" <> _ ->
          {200, parent}

        # The sweep's lists of runner pods and secrets.
        "GET", "/api/v1/namespaces/prod/" <> kind when kind in ["pods", "secrets"] ->
          {200, ~s({"kind":"List","apiVersion":"v1","metadata":{},"items":[]})}
      end)

    kubeconfig = FakeApiServer.kubeconfig!(dir, url)

    # A parent name of its own: the parent pod is read once per VM and name.
    name = "web-#{System.unique_integer([:positive])}"
    {:ok, state} = FLAMEK8sBackend.init(parent_pod: {"prod", name}, kubeconfig: kubeconfig)
    state
  end

  defp parent(cookie_env) do
    ~s({"kind":"Pod","apiVersion":"v1","metadata":{"name":"web","namespace":"prod","uid":"u"},) <>
      ~s("spec":{"containers":[{"name":"app","image":"app:1","env":[#{cookie_env}]}]}})
  end

  @from_secret ~s({"name":"RELEASE_COOKIE","valueFrom":{"secretKeyRef":{"name":"web-cookie","key":"c"}}})

  defp with_release_cookie(value, fun) do
    previous = System.get_env("RELEASE_COOKIE")

    if value,
      do: System.put_env("RELEASE_COOKIE", value),
      else: System.delete_env("RELEASE_COOKIE")

    try do
      fun.()
    after
      if previous,
        do: System.put_env("RELEASE_COOKIE", previous),
        else: System.delete_env("RELEASE_COOKIE")
    end
  end

  defp app_env(pod), do: hd(pod["spec"]["containers"])["env"]

  test "cookie from a Secret and this VM runs with it: the runner references it, no secret", %{
    tmp_dir: dir
  } do
    %{pod: pod, secret: secret} =
      with_release_cookie(Atom.to_string(Node.get_cookie()), fn ->
        init!(dir, parent(@from_secret))
      end)

    assert secret == nil

    assert %{
             "name" => "RELEASE_COOKIE",
             "valueFrom" => %{"secretKeyRef" => %{"name" => "web-cookie", "key" => "c"}}
           } in app_env(pod)
  end

  test "cookie from a Secret, but this VM runs with another one: the runner gets its own secret",
       %{tmp_dir: dir} do
    for release_cookie <- [nil, "some-other-cookie"] do
      %{pod: pod, secret: secret} =
        with_release_cookie(release_cookie, fn -> init!(dir, parent(@from_secret)) end)

      assert secret["stringData"]["RELEASE_COOKIE"] == Atom.to_string(Node.get_cookie())
      refute Enum.any?(app_env(pod), &(&1["name"] == "RELEASE_COOKIE"))
    end
  end

  test "a plain cookie: the runner gets its own secret", %{tmp_dir: dir} do
    cookie = Atom.to_string(Node.get_cookie())
    plain = ~s({"name":"RELEASE_COOKIE","value":"#{cookie}"})

    %{pod: pod, secret: secret} = with_release_cookie(cookie, fn -> init!(dir, parent(plain)) end)

    assert secret["stringData"]["RELEASE_COOKIE"] == cookie
    refute Enum.any?(app_env(pod), &(&1["name"] == "RELEASE_COOKIE"))
  end

  test "runner_manifests/1: what remote_boot/1 would create, unredacted, with no reaper; gone once booted",
       %{tmp_dir: dir} do
    cookie = Atom.to_string(Node.get_cookie())
    state = with_release_cookie(nil, fn -> init_state!(dir, parent(@from_secret)) end)
    %{pod: pod, secret: secret} = FLAMEK8sBackend.runner_manifests(state)

    assert pod["metadata"]["name"] == state.runner_name
    assert secret["metadata"]["name"] == state.runner_name
    assert secret["stringData"] == %{"RELEASE_COOKIE" => cookie}
    names = Enum.map(app_env(pod), & &1["name"])
    # The default node basename is the runner pod's name (0.7: flame_runner for every runner).
    assert %{"name" => "RELEASE_NODE", "value" => "#{state.runner_name}@$(POD_IP)"} in app_env(
             pod
           )

    assert "FLAME_PARENT" in names
    refute "FLAME_K8S_REAPER" in names

    assert_raise ArgumentError, ~r/this state has booted/, fn ->
      FLAMEK8sBackend.runner_manifests(%{state | sealed: nil})
    end
  end
end
