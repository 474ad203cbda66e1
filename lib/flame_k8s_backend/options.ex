defmodule FLAMEK8sBackend.Options do
  @moduledoc false
  # Validates the backend's options into a map, raising ArgumentError that names the option.

  @defaults [
    app_container_name: nil,
    manifest: nil,
    env: %{},
    secret_env: %{},
    labels: %{},
    omit_owner_reference: false,
    boot_timeout: 30_000,
    log: false,
    runner_node_basename: nil,
    unschedulable: :wait,
    parent_pod: nil,
    kubeconfig: nil,
    context: nil,
    request_timeout: 15_000,
    terminator_sup: nil
  ]

  @keys Keyword.keys(@defaults)
  @log_levels [:emergency, :alert, :critical, :error, :warning, :warn, :notice, :info, :debug]

  @spec keys() :: [atom()]
  def keys, do: @keys

  @spec validate!(keyword()) :: map()
  def validate!(opts) do
    unless Keyword.keyword?(opts) do
      raise ArgumentError,
            "FLAMEK8sBackend options: expected a keyword list, got: #{inspect(opts)}"
    end

    case Keyword.keys(opts) -- @keys do
      [] ->
        :ok

      unknown ->
        raise ArgumentError,
              "FLAMEK8sBackend: unknown option(s) #{inspect(Enum.uniq(unknown))}, expected one of #{inspect(@keys)}"
    end

    opts = Keyword.merge(@defaults, opts)
    Map.new(opts, fn {key, value} -> {key, check!(key, value)} end)
  end

  defp check!(key, nil)
       when key in [
              :app_container_name,
              :manifest,
              :runner_node_basename,
              :parent_pod,
              :kubeconfig,
              :context,
              :terminator_sup
            ],
       do: nil

  defp check!(key, value)
       when key in [:app_container_name, :runner_node_basename, :kubeconfig, :context] do
    if is_binary(value) and value != "", do: value, else: bad!(key, "a non-empty string", value)
  end

  defp check!(:manifest, value) when is_function(value, 2), do: value
  defp check!(:manifest, %{} = value) when not is_struct(value), do: value
  defp check!(:manifest, value), do: bad!(:manifest, "a map or a function of 2 arguments", value)

  defp check!(:env, value) do
    value
    |> pairs!(:env)
    |> Map.new(fn
      {name, v} when is_binary(v) -> {name, v}
      {name, %{} = source} when not is_struct(source) -> {name, source}
      {name, v} -> bad!(:env, "string values (or EnvVarSource maps), #{name} is", v)
    end)
  end

  defp check!(:secret_env, value) do
    value
    |> pairs!(:secret_env)
    |> Map.new(fn
      {name, v} when is_binary(v) ->
        {name, v}

      # Secret values are never echoed back, not even in an error.
      {name, _} ->
        raise ArgumentError,
              "FLAMEK8sBackend option :secret_env: the value of #{name} must be a string"
    end)
  end

  defp check!(:labels, value) do
    value
    |> pairs!(:labels)
    |> Map.new(fn
      {name, v} when is_binary(v) -> {name, v}
      {name, v} -> bad!(:labels, "string values, #{name} is", v)
    end)
  end

  defp check!(:omit_owner_reference, value) when is_boolean(value), do: value
  defp check!(:omit_owner_reference, value), do: bad!(:omit_owner_reference, "a boolean", value)

  defp check!(key, value) when key in [:boot_timeout, :request_timeout] do
    if is_integer(value) and value > 0,
      do: value,
      else: bad!(key, "a positive integer (ms)", value)
  end

  defp check!(:log, value) when value == false or value in @log_levels, do: value
  defp check!(:log, value), do: bad!(:log, "false or a Logger level", value)

  defp check!(:unschedulable, value) when value in [:fail, :wait], do: value
  defp check!(:unschedulable, value), do: bad!(:unschedulable, ":fail or :wait", value)

  defp check!(:parent_pod, {namespace, name} = value)
       when is_binary(namespace) and namespace != "" and is_binary(name) and name != "",
       do: value

  defp check!(:parent_pod, value), do: bad!(:parent_pod, "{namespace, name}", value)

  # FLAME passes its own terminator supervisor; this backend has no use for it.
  defp check!(:terminator_sup, value), do: value

  defp pairs!(value, key) when is_map(value) or is_list(value) do
    Enum.map(value, fn
      {name, v} when is_binary(name) and name != "" -> {name, v}
      {name, v} when is_atom(name) -> {Atom.to_string(name), v}
      other -> bad!(key, "a map of names (strings) to values", other)
    end)
  end

  defp pairs!(value, key), do: bad!(key, "a map", value)

  defp bad!(key, expected, got) do
    raise ArgumentError,
          "FLAMEK8sBackend option #{inspect(key)}: expected #{expected}, got: #{inspect(got)}"
  end
end
