defmodule FLAMEK8sBackend.Options.Types do
  @moduledoc false
  # The option types of FLAMEK8sBackend.Options's schema: each check/3 clause validates one
  # option's value and returns it normalized, or raises ArgumentError naming the option. The
  # user-facing rules live here and nowhere else (Kube trusts its callers; the NIF keeps only
  # what protects the VM and the request URL). Never inspect a :secret_env value.

  @dns_label ~r/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/
  @dns_subdomain ~r/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/
  @log_levels [:emergency, :alert, :critical, :error, :warning, :warn, :notice, :info, :debug]
  # A wait of more is no setting anyone means, and this bound keeps every wait derived from
  # one (plus margins) within what `receive ... after` accepts (2^32 - 1 ms).
  @max_ms 4_000_000_000

  # Variables the runner must get from the backend alone: with another cookie a runner could
  # never connect to its parent (the pure-Elixir backend let :env override it).
  @reserved_env %{
    "RELEASE_COOKIE" => """
    is always the parent's cookie, which the runner gets through its own secret (or the \
    parent's Secret its RELEASE_COOKIE comes from): a runner \
    with another cookie cannot connect to the parent. Set the parent's cookie instead\
    """
  }

  @doc "Validates `value` as the option `key` of type `type`; returns it normalized."
  @spec check(term(), atom(), term()) :: term()
  def check(:any, _key, value), do: value

  def check(:non_empty_string, key, value) do
    if is_binary(value) and value != "" and String.valid?(value),
      do: value,
      else: bad!(key, "a non-empty UTF-8 string", value)
  end

  def check(:boolean, key, value) do
    if is_boolean(value), do: value, else: bad!(key, "a boolean", value)
  end

  def check(:milliseconds, key, value) do
    if is_integer(value) and value in 1..@max_ms,
      do: value,
      else: bad!(key, "a positive integer (ms) of at most #{@max_ms}", value)
  end

  def check({:one_of, allowed}, key, value) do
    if value in allowed,
      do: value,
      else: bad!(key, Enum.map_join(allowed, " or ", &inspect/1), value)
  end

  def check(:log, key, value) do
    if value == false or value in @log_levels,
      do: value,
      else: bad!(key, "false or a Logger level", value)
  end

  def check(:node_basename, key, value) do
    if is_binary(value) and Regex.match?(~r/^[A-Za-z0-9_-]{1,200}$/, value),
      do: value,
      else: bad!(key, "letters, digits, - and _ (the part of a node name before @)", value)
  end

  def check(:manifest, _key, value) when is_function(value, 2), do: value
  def check(:manifest, _key, %{} = value) when not is_struct(value), do: value
  def check(:manifest, key, value), do: bad!(key, "a map or a function of 2 arguments", value)

  def check(:port, key, value) do
    if is_integer(value) and value in 1..65_535,
      do: value,
      else: bad!(key, "a TCP port (1..65535)", value)
  end

  def check(:seconds, key, value) do
    if is_integer(value) and value > 0,
      do: value,
      else: bad!(key, "a positive integer (seconds)", value)
  end

  def check(:tmp_dir, _key, false), do: false

  def check(:tmp_dir, key, value) do
    path = if is_binary(value), do: String.trim_trailing(value, "/")

    if is_binary(path) and String.starts_with?(path, "/") and
         not String.contains?(path, [":", "\\", "\n"]),
       do: path,
       else: bad!(key, "an absolute path other than / (or false)", value)
  end

  def check(:env, key, value) do
    value
    |> pairs!(key)
    |> reserved!(key)
    |> Map.new(fn
      {name, v} when is_binary(v) -> {name, v}
      {name, %{} = source} when not is_struct(source) -> {name, source}
      {name, v} -> bad!(key, "string values (or EnvVarSource maps), #{name} is", v)
    end)
  end

  def check(:labels, key, value) do
    value
    |> pairs!(key)
    |> Map.new(fn
      {name, v} when is_binary(v) -> {name, v}
      {name, v} -> bad!(key, "string values, #{name} is", v)
    end)
  end

  def check(:dns_subdomain, key, value) do
    if is_binary(value) and Regex.match?(@dns_subdomain, value),
      do: value,
      else: bad!(key, "a Kubernetes name (lowercase letters, digits, - and .)", value)
  end

  def check(:parent_pod, key, {namespace, name} = value)
      when is_binary(namespace) and is_binary(name) do
    if Regex.match?(@dns_label, namespace) and Regex.match?(@dns_subdomain, name),
      do: value,
      else: bad!(key, "{namespace, name} of valid Kubernetes names", value)
  end

  def check(:parent_pod, key, value), do: bad!(key, "{namespace, name}", value)

  # Secret values are never echoed back, not even in an error: only names and types.
  def check(:secret_env, key, fun) when is_function(fun, 0) do
    case fun.() do
      # One call only: a function returning a function is no map.
      value when is_function(value) -> check(:secret_env, key, :not_a_map)
      value -> check(:secret_env, key, value)
    end
  end

  def check(:secret_env, key, value) when is_map(value) or is_list(value) do
    value
    |> Enum.map(fn
      {name, v} when is_atom(name) -> {Atom.to_string(name), v}
      pair -> pair
    end)
    |> reserved!(key)
    |> Map.new(fn
      {name, v} when is_binary(name) or is_atom(name) ->
        name = to_string(name)

        cond do
          not Regex.match?(~r/^[A-Za-z_][A-Za-z0-9_]*$/, name) ->
            raise ArgumentError,
                  "FLAMEK8sBackend option #{inspect(key)}: #{inspect(name)} is not an environment variable name"

          not (is_binary(v) and String.valid?(v)) ->
            raise ArgumentError,
                  "FLAMEK8sBackend option #{inspect(key)}: the value of #{name} must be a UTF-8 string"

          true ->
            {name, v}
        end

      _ ->
        raise ArgumentError,
              "FLAMEK8sBackend option #{inspect(key)}: expected a map of variable names to strings"
    end)
  end

  def check(:secret_env, key, _value) do
    raise ArgumentError,
          "FLAMEK8sBackend option #{inspect(key)}: expected a map of variable names to strings"
  end

  # Only names are shown: the pairs may be :secret_env's.
  defp reserved!(pairs, key) do
    Enum.each(pairs, fn
      {name, _} when is_map_key(@reserved_env, name) ->
        raise ArgumentError,
              "FLAMEK8sBackend option #{inspect(key)}: #{name} #{@reserved_env[name]}"

      _ ->
        :ok
    end)

    pairs
  end

  defp pairs!(value, key) when is_map(value) or is_list(value) do
    Enum.map(value, fn
      {name, v} when is_binary(name) and name != "" -> {name, v}
      {name, v} when is_atom(name) -> {Atom.to_string(name), v}
      other -> bad!(key, "a map of names (strings) to values", other)
    end)
  end

  defp pairs!(value, key), do: bad!(key, "a map", value)

  @spec bad!(atom(), String.t(), term()) :: no_return()
  defp bad!(key, expected, got) do
    raise ArgumentError,
          "FLAMEK8sBackend option #{inspect(key)}: expected #{expected}, got: #{inspect(got)}"
  end
end
