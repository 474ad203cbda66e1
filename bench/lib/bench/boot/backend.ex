defmodule Bench.Boot.Backend do
  @moduledoc """
  A boot by the backend itself: `FLAMEK8sBackend.init/1`, then `remote_boot/1` (which watches
  the pod). Its milestones come from the booted state's `boot_timings` (ms since
  `remote_boot/1` started), put on the wall clock read just before the call.
  """

  alias Bench.Clock

  def run(opts) do
    t_init = Clock.wall()
    {:ok, state} = FLAMEK8sBackend.init(opts)
    t_boot = Clock.wall()
    key = "#{state.namespace}/#{state.runner_name}"
    # Whether this runner gets a secret of its own (the teardown waits for its DELETE).
    secret = FLAMEK8sBackend.runner_manifests(state).secret != nil

    case FLAMEK8sBackend.remote_boot(state) do
      {:ok, terminator, %FLAMEK8sBackend{boot_timings: timings}} ->
        %{
          key: key,
          runner_node: node(terminator),
          secret: secret,
          runner: state.runner_name,
          t_init: t_init,
          t_boot: t_boot,
          t_done: Clock.wall(),
          t_created: t_boot + timings.created * 1000,
          t_remote_up: t_boot + timings.remote_up * 1000,
          t_running_seen: if(timings[:running], do: t_boot + timings.running * 1000)
        }

      {:error, error} ->
        %{key: key, secret: secret, error: Exception.message(error)}
    end
  end
end
