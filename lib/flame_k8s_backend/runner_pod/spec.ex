defmodule FLAMEK8sBackend.RunnerPod.Spec do
  @moduledoc """
  Everything a runner pod and its secret are built from besides the parent pod, already
  validated: see `FLAMEK8sBackend.RunnerPod`.

  `inspect/1` leaves out `:secret_env` (its values are secrets) and `:flame_parent` (the
  parent's identity, which only the runner needs to see).

      iex> spec = %FLAMEK8sBackend.RunnerPod.Spec{runner_name: "web-1-flame-x7k2p",
      ...>   node_basename: "web-1-flame-x7k2p", flame_parent: "g2gD...",
      ...>   secret_env: %{"API_KEY" => "k3y"}}
      iex> inspect(spec) =~ "k3y"
      false
  """

  @enforce_keys [:runner_name, :node_basename, :flame_parent]
  @derive {Inspect, except: [:secret_env, :flame_parent]}
  defstruct [
    :runner_name,
    :node_basename,
    :flame_parent,
    app_container_name: nil,
    manifest: nil,
    boot_timeout: nil,
    env: %{},
    secret_env: %{},
    labels: %{},
    omit_owner_reference: false,
    forwarded_env: %{},
    tmp_dir: false,
    dist_port: nil,
    active_deadline_seconds: nil,
    cookie_secret_ref: nil,
    service_account_name: nil
  ]

  @typedoc """
    * `:runner_name` - the name of the runner pod and of its secret
    * `:node_basename` - the runner node's name before `@`
    * `:flame_parent` - the encoded `FLAME.Parent`, the runner's `FLAME_PARENT`
    * `:app_container_name` - the parent container the runner is made from; `nil`: the first
    * `:manifest`, `:env`, `:labels`, `:omit_owner_reference` - as the backend's options
    * `:boot_timeout` - the backend's `:boot_timeout` (ms), recorded on the pod and secret for
      the sweep; `nil`: not recorded
    * `:secret_env` - variables the runner gets through its secret only
    * `:forwarded_env` - the parent VM's `ERL_AFLAGS`/`ERL_ZFLAGS`, passed on at the defaults
      level (without a `-setcookie`)
    * `:tmp_dir` - where the app container gets a writable `emptyDir` (and `TMPDIR`), or `false`
    * `:dist_port` - the runner's fixed Erlang distribution port, or `nil`
    * `:active_deadline_seconds` - the pod's `activeDeadlineSeconds`, or `nil` for none
    * `:cookie_secret_ref` - the `secretKeyRef` the parent's own `RELEASE_COOKIE` comes from,
      for the runner to reference too; `nil`: the cookie goes in the runner secret
    * `:service_account_name` - the runner pod's ServiceAccount, or `nil` for the parent's
  """
  @type t :: %__MODULE__{
          runner_name: String.t(),
          node_basename: String.t(),
          flame_parent: String.t(),
          app_container_name: String.t() | nil,
          manifest: map() | (map(), map() -> map()) | nil,
          boot_timeout: pos_integer() | nil,
          env: %{String.t() => String.t() | map()},
          secret_env: %{String.t() => String.t()},
          labels: %{String.t() => String.t()},
          omit_owner_reference: boolean(),
          forwarded_env: %{String.t() => String.t()},
          tmp_dir: String.t() | false,
          dist_port: 1..65_535 | nil,
          active_deadline_seconds: pos_integer() | nil,
          cookie_secret_ref: %{String.t() => term()} | nil,
          service_account_name: String.t() | nil
        }
end
