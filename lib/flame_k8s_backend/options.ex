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
  @dns_label ~r/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/
  @dns_subdomain ~r/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/
  @log_levels [:emergency, :alert, :critical, :error, :warning, :warn, :notice, :info, :debug]

  @doc """
  Merges `config :flame, FLAMEK8sBackend` (lowest) with the options FLAME passes, then
  validates. FLAME's pool always passes its own `log: false` default: a `false` never hides a
  level configured elsewhere.
  """
  @spec from(keyword(), keyword()) :: map()
  def from(app_env, opts) do
    app_env = keyword!(app_env, "config :flame, FLAMEK8sBackend")
    opts = keyword!(opts, "FLAMEK8sBackend options")
    merged = Keyword.merge(app_env, opts)
    log = Enum.find([opts[:log], app_env[:log]], false, & &1)
    validate!(Keyword.put(merged, :log, log))
  end

  @spec validate!(keyword()) :: map()
  def validate!(opts) do
    opts = keyword!(opts, "FLAMEK8sBackend options")

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

  # Never inspect the options themselves here: they may hold :secret_env values.
  defp keyword!(opts, what) do
    if is_list(opts) and Keyword.keyword?(opts) do
      opts
    else
      raise ArgumentError, "#{what}: expected a keyword list, got a #{type_name(opts)}"
    end
  end

  defp type_name(term) when is_list(term), do: "list that is not a keyword list"
  defp type_name(term) when is_map(term), do: "map"
  defp type_name(term) when is_binary(term), do: "string"
  defp type_name(_term), do: "term of another type"

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

  defp check!(:runner_node_basename, value) do
    if is_binary(value) and Regex.match?(~r/^[A-Za-z0-9_-]{1,200}$/, value),
      do: value,
      else:
        bad!(
          :runner_node_basename,
          "letters, digits, - and _ (the part of a node name before @)",
          value
        )
  end

  defp check!(key, value)
       when key in [:app_container_name, :kubeconfig, :context] do
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

  # Secret values are never echoed back, not even in an error: only names and types.
  defp check!(:secret_env, value) when is_map(value) or is_list(value) do
    Map.new(value, fn
      {name, v} when is_binary(name) or is_atom(name) ->
        name = to_string(name)

        cond do
          not Regex.match?(~r/^[A-Za-z_][A-Za-z0-9_]*$/, name) ->
            raise ArgumentError,
                  "FLAMEK8sBackend option :secret_env: #{inspect(name)} is not an environment variable name"

          not (is_binary(v) and String.valid?(v)) ->
            raise ArgumentError,
                  "FLAMEK8sBackend option :secret_env: the value of #{name} must be a UTF-8 string"

          true ->
            {name, v}
        end

      _ ->
        raise ArgumentError,
              "FLAMEK8sBackend option :secret_env: expected a map of variable names to strings"
    end)
  end

  defp check!(:secret_env, _value) do
    raise ArgumentError,
          "FLAMEK8sBackend option :secret_env: expected a map of variable names to strings"
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
       when is_binary(namespace) and is_binary(name) do
    if Regex.match?(@dns_label, namespace) and Regex.match?(@dns_subdomain, name),
      do: value,
      else: bad!(:parent_pod, "{namespace, name} of valid Kubernetes names", value)
  end

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
