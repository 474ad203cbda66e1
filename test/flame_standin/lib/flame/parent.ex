defmodule FLAME.Parent do
  @moduledoc """
  The parent's identity as a runner sees it, carried in the `FLAME_PARENT` environment
  variable: Base64 of `:erlang.term_to_binary/1` of a map with the keys `ref`, `pid`,
  `backend`, `flame_vsn`, `backend_app`, `backend_vsn`, `node_base`, `host_env` (as FLAME
  0.5.3's).
  """

  @flame_vsn Mix.Project.config()[:version]

  defstruct [:pid, :ref, :backend, :node_base, :flame_vsn, :backend_vsn, :backend_app, :host_env]

  @fields [:ref, :pid, :backend, :flame_vsn, :backend_app, :backend_vsn, :node_base, :host_env]

  def new(ref, pid, backend, node_base, host_env)
      when is_reference(ref) and is_pid(pid) and is_atom(backend) do
    {app, vsn} =
      case :application.get_application(backend) do
        {:ok, app} -> {app, to_string(Application.spec(app, :vsn))}
        :undefined -> {nil, nil}
      end

    %__MODULE__{
      ref: ref,
      pid: pid,
      backend: backend,
      node_base: node_base,
      host_env: host_env,
      flame_vsn: @flame_vsn,
      backend_app: app,
      backend_vsn: vsn
    }
  end

  def encode(%__MODULE__{} = parent) do
    parent
    |> Map.from_struct()
    |> Map.take(@fields)
    |> :erlang.term_to_binary()
    |> Base.encode64()
  end

  @doc "The parent, or `nil` without `FLAME_PARENT`; a value that does not decode raises."
  def get do
    case System.fetch_env("FLAME_PARENT") do
      {:ok, encoded} ->
        %{ref: ref, pid: pid, backend: backend, node_base: base, host_env: host_env} =
          encoded |> Base.decode64!() |> :erlang.binary_to_term()

        new(ref, pid, backend, base, host_env)

      :error ->
        nil
    end
  end
end
