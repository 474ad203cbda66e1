defmodule FLAMEK8sBackend.LostCreateTest do
  # The lost-create race: a create whose answer never came (the client timed out, the FLAME
  # Runner was killed mid-request) may still be committed by the API server afterwards, after
  # the reaper's first DELETE found nothing. The fake API server here holds the create and
  # commits it just after answering that first DELETE with a 404, as a slow admission webhook
  # would; the parent must still delete what was committed.
  use ExUnit.Case, async: true

  @moduletag :unit
  @moduletag :tmp_dir

  Code.require_file("support/fake_api_server.exs", __DIR__)

  alias FLAMEK8sBackend.BootError
  alias FLAMEK8sBackend.Test.FakeApiServer

  @list ~s({"kind":"List","apiVersion":"v1","metadata":{},"items":[]})
  @success ~s({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success"})
  @not_found ~s({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",) <>
               ~s("message":"not found","reason":"NotFound","code":404})

  defp plural(:pod), do: "pods"
  defp plural(:secret), do: "secrets"

  # A fake API server with the parent pod `prod/name`, whose create of a `held` (`:pod` or
  # `:secret`) never answers. That object is committed right after the first DELETE of it was
  # answered 404; a later DELETE finds it (200) and the test gets `{:deleted_after_commit, kind}`.
  defp api_server!(name, held) do
    test = self()
    {:ok, store} = Agent.start_link(fn -> :absent end)
    parent_path = "/api/v1/namespaces/prod/pods/#{name}"
    held_prefix = "/api/v1/namespaces/prod/#{plural(held)}"

    parent =
      ~s({"kind":"Pod","apiVersion":"v1","metadata":{"name":"#{name}","namespace":"prod",) <>
        ~s("uid":"uid-#{name}"},"spec":{"containers":[{"name":"app","image":"app:1"}]}})

    FakeApiServer.start!(test, fn
      "GET", ^parent_path ->
        {200, parent}

      "GET", _list ->
        {200, @list}

      "POST", ^held_prefix ->
        Agent.update(store, fn _ -> :in_flight end)
        send(test, {:create_held, held})
        # Never answered: this connection's handler waits for the test to end.
        monitor = Process.monitor(test)

        receive do
          {:DOWN, ^monitor, :process, _, _} -> exit(:normal)
        end

      "POST", "/api/v1/namespaces/prod/" <> kind ->
        {201, ~s({"kind":"#{kind}","apiVersion":"v1","metadata":{"name":"created"}})}

      "DELETE", path ->
        if String.starts_with?(path, held_prefix <> "/"),
          do: delete_held(store, test, held),
          else: {200, @success}
    end)
  end

  defp delete_held(store, test, held) do
    case Agent.get_and_update(store, fn
           :in_flight -> {:not_found, :committed}
           :committed -> {:deleted, :deleted}
           other -> {:not_found, other}
         end) do
      :not_found ->
        {404, @not_found}

      :deleted ->
        send(test, {:deleted_after_commit, held})
        {200, @success}
    end
  end

  defp init!(dir, held) do
    name = "web-#{System.unique_integer([:positive])}"
    url = api_server!(name, held)

    {:ok, state} =
      FLAMEK8sBackend.init(
        parent_pod: {"prod", name},
        kubeconfig: FakeApiServer.kubeconfig!(dir, url),
        request_timeout: 1_000,
        boot_timeout: 10_000,
        # The fake server's own deadline for a request, as kube-apiserver's --request-timeout.
        api_server_request_timeout: 2_000
      )

    state
  end

  for held <- [:pod, :secret] do
    test "a #{held} create that timed out and was committed after the reaper's first DELETE is deleted",
         %{tmp_dir: dir} do
      held = unquote(held)
      state = init!(dir, held)
      path = "/api/v1/namespaces/prod/#{plural(held)}/#{state.runner_name}"

      assert {:error, %BootError{reason: {:outcome_unknown, %{reason: {:timeout, _}}}} = error} =
               FLAMEK8sBackend.remote_boot(state)

      assert error.phase == %{pod: :create_pod, secret: :create_secret}[held]
      assert_received {:create_held, ^held}

      # The first DELETE found nothing (404); the API server committed the create after it.
      assert_receive {:api_request, "DELETE", ^path, _}, 5_000
      assert_receive {:deleted_after_commit, ^held}, 30_000
    end
  end

  test "the Runner killed while its pod create is in flight: the pod committed later is deleted",
       %{tmp_dir: dir} do
    state = init!(dir, :pod)
    path = "/api/v1/namespaces/prod/pods/#{state.runner_name}"
    {runner, monitor} = spawn_monitor(fn -> FLAMEK8sBackend.remote_boot(state) end)

    assert_receive {:create_held, :pod}, 5_000
    Process.exit(runner, :kill)
    assert_receive {:DOWN, ^monitor, :process, ^runner, :killed}

    assert_receive {:api_request, "DELETE", ^path, _}, 5_000
    assert_receive {:deleted_after_commit, :pod}, 30_000
  end
end
