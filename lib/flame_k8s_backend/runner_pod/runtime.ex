defmodule FLAMEK8sBackend.RunnerPod.Runtime do
  @moduledoc false
  # What a runner pod and its secret are built from besides the parent pod and the validated
  # options: the values only `FLAMEK8sBackend.init/1` knows, gathered by `new/4`.
  #
  #   * `:runner_name` - the name of the runner pod and of its secret
  #   * `:node_basename` - the runner node's name before `@` (`:runner_node_basename`, else the
  #     runner name)
  #   * `:flame_parent` - the encoded `FLAME.Parent`, the runner's `FLAME_PARENT`
  #   * `:forwarded_env` - the parent VM's `ERL_AFLAGS`/`ERL_ZFLAGS`, passed on at the defaults
  #     level (without a `-setcookie`)
  #   * `:cookie_secret_ref` - the `secretKeyRef` the parent's own `RELEASE_COOKIE` comes from,
  #     for the runner to reference too; `nil`: the cookie goes in the runner secret
  #
  # `inspect/1` leaves out `:flame_parent` (the parent's identity, which only the runner needs
  # to see).

  alias FLAMEK8sBackend.{Options, RunnerName, RunnerPod}

  @enforce_keys [:runner_name, :node_basename, :flame_parent]
  @derive {Inspect, except: [:flame_parent]}
  defstruct [
    :runner_name,
    :node_basename,
    :flame_parent,
    forwarded_env: %{},
    cookie_secret_ref: nil
  ]

  @type t :: %__MODULE__{
          runner_name: String.t(),
          node_basename: String.t(),
          flame_parent: String.t(),
          forwarded_env: %{String.t() => String.t()},
          cookie_secret_ref: %{String.t() => term()} | nil
        }

  @doc """
  The runtime values of a new runner of `parent_pod`: a fresh runner name, the `FLAME.Parent`
  of the calling process (whose `remote_up` is tagged with `parent_ref`), this VM's
  `ERL_AFLAGS`/`ERL_ZFLAGS`, and the parent's cookie Secret when it holds `cookie`.

      runtime = FLAMEK8sBackend.RunnerPod.Runtime.new(parent_pod, opts, make_ref(), "c00kie")
      runtime.runner_name
      #=> "web-7d9f8b-x2k9p-flame-abcdefgh"
  """
  @spec new(map(), Options.t(), reference(), String.t()) :: t()
  def new(parent_pod, %Options{} = opts, parent_ref, cookie) do
    runner_name = RunnerName.new(parent_pod)
    basename = opts.runner_node_basename || runner_name

    %__MODULE__{
      runner_name: runner_name,
      node_basename: basename,
      flame_parent: flame_parent(parent_ref, basename),
      forwarded_env: forwarded_env(),
      cookie_secret_ref: cookie_secret_ref(parent_pod, cookie, opts)
    }
  end

  defp flame_parent(parent_ref, basename) do
    parent_ref
    |> FLAME.Parent.new(self(), FLAMEK8sBackend, basename, "POD_IP")
    |> FLAME.Parent.encode()
  end

  defp forwarded_env do
    for name <- ~w(ERL_AFLAGS ERL_ZFLAGS),
        value = System.get_env(name),
        value not in [nil, ""],
        into: %{} do
      {name, value}
    end
  end

  # The runner may take the cookie from the parent's Secret only when that Secret's value is
  # this VM's cookie: a release that sets its cookie otherwise (vm.args, env.sh, a COOKIE file)
  # has RELEASE_COOKIE from the Secret in its environment but runs with another cookie.
  defp cookie_secret_ref(parent_pod, cookie, opts) do
    if System.get_env("RELEASE_COOKIE") == cookie,
      do: RunnerPod.cookie_secret_ref(parent_pod, opts.app_container_name)
  end
end
