defmodule FLAMEK8sBackend.Options.Types do
  @moduledoc false
  # The option types of FLAMEK8sBackend.Options's schema: each check/3 clause validates one
  # option's value and returns it normalized, or raises ArgumentError naming the option. The
  # user-facing rules live here and nowhere else (Kube trusts its callers; the NIF keeps only
  # what protects the VM and the request URL). Never inspect a :secret_env value.

  @dns_label ~r/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/
  @dns_subdomain ~r/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/
  # Kubernetes' quantity (resource.Quantity) without a sign: a decimal number and a binary,
  # decimal or exponent suffix.
  @quantity ~r/^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$/
  # A qualified name (resource names, label keys): an optional DNS-subdomain prefix and `/`,
  # then up to 63 letters, digits, `-`, `_` and `.`, starting and ending alphanumeric.
  @qualified_name ~r/^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/
  @label_value ~r/^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/
  @resources_shape ~s(a map such as %{requests: %{"cpu" => "500m", "memory" => "1Gi"}})
  @toleration_keys ~w(key operator value effect tolerationSeconds)
  @affinity_keys ~w(nodeAffinity podAffinity podAntiAffinity)
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

  # Options of earlier versions of the pure-Elixir flame_k8s_backend (mruoss/flame_k8s_backend)
  # that this backend spells differently: a user switching over is told what to write instead.
  # Every option of its 0.7 (app_container_name, manifest, env, secret_env, log, boot_timeout,
  # omit_owner_reference, terminator_sup) is accepted as is.
  @replaced %{
    runner_pod_tpl: """
    the pure-Elixir backend's :runner_pod_tpl (before its 0.6) is :manifest here: a map \
    deep-merged into the runner pod, or a function (parent_pod, app_container) -> pod. A \
    %FLAMEK8sBackend.RunnerPodTemplate{}'s :resources is the :resources option, and its \
    :env becomes manifest: %{"spec" => %{"containers" => [%{"env" => [...]}]}}\
    """,
    container_name: "use :app_container_name (the parent container the runner is made from)",
    token_path: """
    this backend reads the pod's service account token itself (and re-reads it when it \
    rotates); to use other credentials pass :kubeconfig (and :context)\
    """,
    insecure_skip_tls_verify: """
    not an option here: pass :kubeconfig with a kubeconfig whose cluster sets \
    `insecure-skip-tls-verify: true`, or better its `certificate-authority-data`\
    """
  }

  @doc "Raises an ArgumentError naming the options of `opts` not in `keys`."
  @spec known!(keyword(), [atom()]) :: :ok
  def known!(opts, keys) do
    case Keyword.keys(opts) -- keys do
      [] ->
        :ok

      unknown ->
        unknown = Enum.uniq(unknown)

        case Enum.find(unknown, &Map.has_key?(@replaced, &1)) do
          nil ->
            raise ArgumentError,
                  "FLAMEK8sBackend: unknown option(s) #{inspect(unknown)}, expected one of #{inspect(keys)}"

          old ->
            raise ArgumentError, "FLAMEK8sBackend option #{inspect(old)}: #{@replaced[old]}"
        end
    end
  end

  # Kubernetes counts activeDeadlineSeconds from the pod's start, so a deadline that is not
  # longer than the boot may kill every runner before or just as it boots: a boot that fails
  # (or a runner that does no work) on each call, for a setting that can never work.
  @doc "Refuses an `:active_deadline_seconds` no longer than `:boot_timeout`."
  @spec check_deadline!(opts) :: opts when opts: map()
  def check_deadline!(%{active_deadline_seconds: seconds, boot_timeout: boot_timeout})
      when is_integer(seconds) and seconds * 1_000 <= boot_timeout do
    raise ArgumentError,
          "FLAMEK8sBackend option :active_deadline_seconds (#{seconds} s) must be longer than " <>
            ":boot_timeout (#{boot_timeout} ms): Kubernetes would stop the runner pod before " <>
            "or as it boots. Raise :active_deadline_seconds above #{div(boot_timeout, 1_000)} s, " <>
            "or lower :boot_timeout"
  end

  def check_deadline!(opts), do: opts

  # Never inspect the options themselves here: they may hold :secret_env values.
  @doc "`opts` if it is a keyword list; an ArgumentError naming `what` otherwise."
  @spec keyword!(term(), String.t()) :: keyword()
  def keyword!(opts, what) do
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

  @doc "Validates `value` as the option `key` of type `type`; returns it normalized."
  @spec check(term(), atom(), term()) :: term()
  def check(:any, _key, value), do: value

  # A pod setting the runner otherwise takes (or would take) from the parent: `:inherit`
  # keeps the parent's, `nil` removes it, anything else must be a `type`.
  def check({:inheritable, _type}, _key, value) when value in [:inherit, nil], do: value
  def check({:inheritable, type}, key, value), do: check(type, key, value)

  # `%{requests: %{"cpu" => "500m"}, limits: %{"nvidia.com/gpu" => 1}}`: the container's
  # resources, with string keys and string quantities, as the API server takes them.
  def check(:resources, key, value)
      when (is_map(value) and not is_struct(value)) or (is_list(value) and value != []) do
    Map.new(value, fn
      {kind, list} when kind in [:requests, :limits, "requests", "limits"] ->
        {to_string(kind), resource_list!(key, kind, list)}

      {kind, _list} ->
        bad!(key, "only :requests and :limits", kind)

      _other ->
        bad!(key, @resources_shape, value)
    end)
  end

  def check(:resources, key, value),
    do: bad!(key, @resources_shape, value)

  def check(:node_selector, key, value) do
    value
    |> pairs!(key)
    |> Map.new(fn {name, v} ->
      qualified_name!(key, name, "a label key")

      if is_binary(v) and Regex.match?(@label_value, v),
        do: {name, v},
        else: bad!(key, "label values (strings of at most 63 characters), #{name} is", v)
    end)
  end

  def check(:tolerations, key, value) when is_list(value) do
    Enum.map(value, fn
      %{} = toleration when not is_struct(toleration) ->
        toleration = Map.new(toleration, fn {k, v} -> {to_string(k), v} end)
        Enum.each(toleration, &toleration_field!(key, &1))
        toleration

      other ->
        bad!(key, "a list of toleration maps", other)
    end)
  end

  def check(:tolerations, key, value), do: bad!(key, "a list of toleration maps", value)

  def check(:affinity, key, %{} = value) when not is_struct(value) do
    affinity = FLAMEK8sBackend.RunnerPod.Manifest.stringify(value)

    case Enum.find(affinity, fn {k, v} -> k not in @affinity_keys or not is_map(v) end) do
      nil -> affinity
      {k, _v} -> bad!(key, "a map of #{Enum.join(@affinity_keys, ", ")} (maps)", k)
    end
  end

  def check(:affinity, key, value),
    do: bad!(key, "a pod affinity map (nodeAffinity, podAffinity, podAntiAffinity)", value)

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
  def check(:tmp_dir, _key, :auto), do: :auto

  def check(:tmp_dir, key, value) do
    path = if is_binary(value), do: String.trim_trailing(value, "/")

    if is_binary(path) and String.starts_with?(path, "/") and
         not String.contains?(path, [":", "\\", "\n"]),
       do: path,
       else: bad!(key, "an absolute path other than / (or false, or :auto)", value)
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

  defp resource_list!(key, kind, list) when is_map(list) or is_list(list) do
    Map.new(list, fn
      {name, quantity} when is_atom(name) or is_binary(name) ->
        name = to_string(name)
        qualified_name!(key, name, "a resource name")
        {name, quantity!(key, name, quantity)}

      other ->
        bad!(key, "#{kind} as a map of resource names to quantities", other)
    end)
  end

  defp resource_list!(key, kind, list),
    do: bad!(key, "#{kind} as a map of resource names to quantities", list)

  defp quantity!(_key, _name, n) when is_integer(n) and n >= 0, do: Integer.to_string(n)

  defp quantity!(key, name, q) do
    if is_binary(q) and Regex.match?(@quantity, q),
      do: q,
      else:
        bad!(key, ~s[a quantity for #{name} (a string such as "500m" or "1Gi", or an integer)], q)
  end

  defp qualified_name!(key, name, what) do
    unless is_binary(name) and Regex.match?(@qualified_name, name),
      do: bad!(key, "#{what} (an optional prefix/ and a name of at most 63 characters)", name)
  end

  defp toleration_field!(key, {"operator", v}) when v not in ["Exists", "Equal"],
    do: bad!(key, ~s(a toleration operator "Exists" or "Equal"), v)

  defp toleration_field!(key, {"effect", v})
       when v not in ["NoSchedule", "PreferNoSchedule", "NoExecute"],
       do: bad!(key, ~s(a toleration effect "NoSchedule", "PreferNoSchedule" or "NoExecute"), v)

  defp toleration_field!(key, {"tolerationSeconds", v}) when not is_integer(v),
    do: bad!(key, "tolerationSeconds as an integer", v)

  defp toleration_field!(key, {field, v}) when field in ["key", "value"] and not is_binary(v),
    do: bad!(key, "the toleration's #{field} as a string", v)

  defp toleration_field!(key, {field, _v}) when field not in @toleration_keys,
    do: bad!(key, "toleration fields #{Enum.join(@toleration_keys, ", ")}", field)

  defp toleration_field!(_key, _field), do: :ok

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
