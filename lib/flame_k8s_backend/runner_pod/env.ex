defmodule FLAMEK8sBackend.RunnerPod.Env do
  @moduledoc false
  # The app container's environment, by the precedence FLAMEK8sBackend.RunnerPod documents
  # (step 4): which variables it gets, which win, in what order, and what never becomes a
  # plain variable (the cookie, :secret_env, a -setcookie in the emulator's flags).

  alias FLAMEK8sBackend.Options
  alias FLAMEK8sBackend.RunnerPod.{Manifest, Runtime}

  # Every variable the emulator reads flags from.
  @flag_vars ~w(ERL_AFLAGS ERL_FLAGS ERL_ZFLAGS)
  @downward_api ~w(POD_NAME POD_NAMESPACE POD_IP)
  @secret_only ~w(RELEASE_COOKIE)

  @doc """
  The runner's default node name, `basename` at the pod's IP (which Kubernetes fills in).

      iex> FLAMEK8sBackend.RunnerPod.Env.release_node("web-1-flame-x7k2p")
      "web-1-flame-x7k2p@$(POD_IP)"
  """
  @spec release_node(String.t()) :: String.t()
  def release_node(basename), do: "#{basename}@$(POD_IP)"

  @doc """
  The runner's app container env: `container_env` (what the pod built so far gives the app
  container), `manifest_env` (what of it the user's `:manifest` asked for, see
  `manifest_env/4`), the options and the runtime values, merged by precedence. `own_secret?`:
  whether the runner has a secret of its own (else its cookie comes from the parent's).

      iex> opts = FLAMEK8sBackend.Options.validate!(tmp_dir: false, env: %{"ROLE" => "runner"})
      iex> runtime = %FLAMEK8sBackend.RunnerPod.Runtime{runner_name: "web-1-flame-x7k2p",
      ...>   node_basename: "web", flame_parent: "g2gD..."}
      iex> {:ok, env} = FLAMEK8sBackend.RunnerPod.Env.build(
      ...>   [%{"name" => "ROLE", "value" => "web"}], [], opts, runtime, true)
      iex> Enum.map(env, &{&1["name"], &1["value"]})
      [{"POD_NAME", nil}, {"POD_NAMESPACE", nil}, {"POD_IP", nil},
       {"FLAME_K8S_RUNNER_SECRET", "web-1-flame-x7k2p"}, {"FLAME_K8S_CA_CERT", nil},
       {"ROLE", "runner"},
       {"PHX_SERVER", "false"}, {"RELEASE_DISTRIBUTION", "name"},
       {"RELEASE_NODE", "web@$(POD_IP)"}, {"RELEASE_MODE", "interactive"},
       {"FLAME_PARENT", "g2gD..."}]
  """
  @spec build([map()], [map()], Options.t(), Runtime.t(), boolean()) ::
          {:ok, [map()]} | {:error, {:invalid_manifest, String.t()}}
  def build(container_env, manifest_env, %Options{} = opts, %Runtime{} = runtime, own_secret?) do
    parent_env = drop_parent(container_env)

    defaults =
      [
        var("PHX_SERVER", "false"),
        var("RELEASE_DISTRIBUTION", "name"),
        var("RELEASE_NODE", release_node(runtime.node_basename))
      ] ++
        release_mode(opts.release_mode) ++
        Enum.map(Enum.sort(runtime.forwarded_env), fn {k, v} -> var(k, v) end)

    user_env = Enum.map(Enum.sort(opts.env), fn {name, value} -> var(name, value) end)
    # Lowest of all: a TMPDIR the container already has points somewhere it may write too.
    tmp_env = if opts.tmp_dir, do: [var("TMPDIR", opts.tmp_dir)], else: []

    fixed =
      [
        field_var("POD_NAME", "metadata.name"),
        field_var("POD_NAMESPACE", "metadata.namespace"),
        field_var("POD_IP", "status.podIP")
      ] ++ cookie_env(runtime, own_secret?) ++ ca_env(opts.service_account_token)

    last = [var("FLAME_PARENT", runtime.flame_parent)]

    merged =
      [tmp_env, parent_env, defaults, manifest_env, user_env, fixed, last]
      |> Enum.reduce(%{order: [], by_name: %{}}, &merge/2)

    with {:ok, merged} <- merged |> without_cookie_flags() |> put_backend_flags(opts) do
      fixed_names = Enum.map(fixed ++ last, & &1["name"])
      # A plain env var would win over the secret's envFrom value of the same name.
      secret_only = @secret_only ++ Map.keys(opts.secret_env)

      # $(VAR) expansion only sees variables defined earlier in the list: the downward-API vars
      # come first so RELEASE_NODE=<basename>@$(POD_IP) resolves.
      ordered =
        Enum.map(fixed, & &1["name"]) ++
          Enum.reject(merged.order, &(&1 in fixed_names or &1 in secret_only)) ++
          Enum.map(last, & &1["name"])

      {:ok, Enum.map(ordered, &Map.fetch!(merged.by_name, &1))}
    end
  end

  # A handed-over token needs the cluster's CA, which the mounted token volume would bring.
  defp ca_env(:handover), do: [FLAMEK8sBackend.RunnerToken.ca_env()]
  defp ca_env(_mount_or_none), do: []

  defp release_mode(:inherit), do: []
  defp release_mode(mode), do: [var("RELEASE_MODE", Atom.to_string(mode))]

  @doc """
  `env` without the parent's own downward-API and backend variables: they describe the
  parent, not the runner.

      iex> FLAMEK8sBackend.RunnerPod.Env.drop_parent([%{"name" => "POD_IP"}, %{"name" => "A"}])
      [%{"name" => "A"}]
  """
  @spec drop_parent([map()]) :: [map()]
  def drop_parent(env) do
    Enum.reject(
      env,
      &(&1["name"] in (@downward_api ++
                         ~w(FLAME_PARENT RELEASE_NODE FLAME_K8S_RUNNER_SECRET FLAME_K8S_REAPER)))
    )
  end

  @doc """
  The env the user's `:manifest` asked for in the app container `app_name` of `pod`, so that
  it outranks the defaults while the env copied from the parent's container `app` does not.
  For a function, the entries it copied unchanged from the parent's container stay parent env.

      iex> manifest = %{spec: %{containers: [%{env: [%{name: "A", value: "1"}]}]}}
      iex> FLAMEK8sBackend.RunnerPod.Env.manifest_env(manifest, "app", %{}, %{})
      [%{"name" => "A", "value" => "1"}]
  """
  @spec manifest_env(map() | (map(), map() -> term()) | nil, String.t(), map(), map()) ::
          [map()]
  def manifest_env(fun, app_name, pod, app) when is_function(fun, 2),
    do: container_env(pod, app_name) -- (app["env"] || [])

  def manifest_env(nil, _app_name, _pod, _app), do: []

  def manifest_env(manifest, app_name, _pod, _app),
    do: container_env(Manifest.stringify(manifest), app_name)

  defp container_env(pod, app_name) do
    case get_in(pod, ["spec", "containers"]) do
      containers when is_list(containers) ->
        Enum.find_value(containers, [], fn
          %{} = c -> c["name"] in [nil, app_name] && (c["env"] || [])
          _ -> nil
        end)

      _ ->
        []
    end
  end

  @doc """
  `:ok` when every container of `pod` has a list of named env entries (or none).

      iex> FLAMEK8sBackend.RunnerPod.Env.validate(%{"spec" => %{"containers" => [%{"env" => [%{}]}]}})
      {:error, {:invalid_manifest, "spec.containers[0].env[0]: expected a map with a \\"name\\""}}
  """
  @spec validate(map()) :: :ok | {:error, {:invalid_manifest, String.t()}}
  def validate(pod) do
    pod["spec"]["containers"]
    |> Enum.with_index()
    |> Enum.find_value(:ok, fn {container, i} ->
      case container["env"] do
        nil ->
          nil

        env when is_list(env) ->
          Enum.find_value(Enum.with_index(env), fn
            {%{"name" => name}, _} when is_binary(name) and name != "" ->
              nil

            {_, j} ->
              {:error,
               {:invalid_manifest,
                "spec.containers[#{i}].env[#{j}]: expected a map with a \"name\""}}
          end)

        _ ->
          {:error, {:invalid_manifest, "spec.containers[#{i}].env: expected a list"}}
      end
    end)
  end

  # A cookie in the emulator's flags would be readable by anyone who may read pods: left out,
  # and the variable with it when nothing else was in it.
  defp without_cookie_flags(merged) do
    Enum.reduce(@flag_vars, merged, fn name, acc ->
      case acc.by_name[name] do
        %{"value" => value} = var when is_binary(value) ->
          case strip_cookie_flags(value) do
            ^value ->
              acc

            "" ->
              %{acc | order: List.delete(acc.order, name), by_name: Map.delete(acc.by_name, name)}

            stripped ->
              %{acc | by_name: Map.put(acc.by_name, name, Map.put(var, "value", stripped))}
          end

        _ ->
          acc
      end
    end)
  end

  @doc """
  Emulator flags (as in `ERL_AFLAGS`) without `-setcookie` and its values, read as `erl` reads
  them: words split at white space, `"..."` and `'...'` quoting, `\\` escapes; a flag's values
  run up to the next word that starts with `-` or `+`; nothing after `-extra` is a flag. The
  other words are kept, separated by one space; flags without `-setcookie` come back as they
  are.

      iex> FLAMEK8sBackend.RunnerPod.Env.strip_cookie_flags("-kernel shell_history enabled -setcookie s3cr3t +S 2")
      "-kernel shell_history enabled +S 2"
      iex> FLAMEK8sBackend.RunnerPod.Env.strip_cookie_flags("-setcookie web@10.0.0.1 'my cookie'")
      ""
  """
  @spec strip_cookie_flags(String.t()) :: String.t()
  def strip_cookie_flags(flags) do
    words = words(flags, [])
    kept = drop_setcookie(words)
    if kept == words, do: flags, else: Enum.map_join(kept, " ", fn {_value, raw} -> raw end)
  end

  defp drop_setcookie([]), do: []
  defp drop_setcookie([{"-extra", _} | _] = plain), do: plain

  defp drop_setcookie([{"-setcookie", _} | rest]),
    do: rest |> Enum.drop_while(fn {value, _} -> not flag?(value) end) |> drop_setcookie()

  defp drop_setcookie([word | rest]), do: [word | drop_setcookie(rest)]

  defp flag?(value), do: String.starts_with?(value, ["-", "+"])

  # The words of `flags`, each as {its value, its text as written}.
  defp words(<<c, rest::binary>>, acc) when c in ~c" \t\n\r", do: words(rest, acc)
  defp words(<<>>, acc), do: Enum.reverse(acc)

  defp words(flags, acc) do
    {value, length} = word(flags, [], 0, nil)
    <<raw::binary-size(length), rest::binary>> = flags
    words(rest, [{IO.iodata_to_binary(value), raw} | acc])
  end

  # Reads one word: its value (iodata) and how many bytes it takes, within `quote` (nil, ?" or ?').
  defp word(<<>>, value, n, _quote), do: {value, n}
  defp word(<<c, _::binary>>, value, n, nil) when c in ~c" \t\n\r", do: {value, n}

  defp word(<<q, rest::binary>>, value, n, nil) when q in [?", ?'],
    do: word(rest, value, n + 1, q)

  defp word(<<q, rest::binary>>, value, n, q), do: word(rest, value, n + 1, nil)

  defp word(<<?\\, c, rest::binary>>, value, n, quote) when quote != ?',
    do: word(rest, [value, c], n + 2, quote)

  defp word(<<c, rest::binary>>, value, n, quote), do: word(rest, [value, c], n + 1, quote)

  # The flags the backend itself gives the runner go in front of its final ERL_AFLAGS (the
  # parent's forwarded one, or :env's, which is kept after them): Erlang takes the first setting
  # of a kernel parameter, and ERL_AFLAGS comes before the command line (a release's vm.args)
  # and ERL_ZFLAGS, so nothing later moves the port; and a `-hidden` in front cannot fall
  # behind an `-extra` of the user's, after which it would be a plain argument.
  defp put_backend_flags(merged, %Options{} = opts) do
    current = merged.by_name["ERL_AFLAGS"]

    value =
      case current do
        %{"value" => value} when is_binary(value) -> value
        _ -> ""
      end

    port = opts.dist_port

    # {option, what to set instead, the flags, whether they are wanted}
    flags =
      for {option, what, flags, true} <- [
            {:dist_port, "inet_dist_listen_min/max",
             "-kernel inet_dist_listen_min #{port} inet_dist_listen_max #{port}", port != nil},
            {:hidden, "-hidden", "-hidden", opts.hidden and not hidden_flag?(value)}
          ],
          do: {option, what, flags}

    case {flags, current} do
      {[], _} ->
        {:ok, merged}

      {_, %{"valueFrom" => _}} ->
        options = Enum.map_join(flags, " and ", fn {option, _, _} -> inspect(option) end)
        wanted = Enum.map_join(flags, " and ", fn {_, what, _} -> what end)

        {:error,
         {:invalid_manifest,
          "ERL_AFLAGS comes from valueFrom, so #{options} cannot go in front of it: give " <>
            "ERL_AFLAGS as a value, or set #{wanted} in it and leave #{options} out"}}

      _ ->
        flags = Enum.map(flags, fn {_, _, flag} -> flag end) ++ [value]

        {:ok,
         merge([var("ERL_AFLAGS", flags |> Enum.reject(&(&1 == "")) |> Enum.join(" "))], merged)}
    end
  end

  # Whether `flags` (as in ERL_AFLAGS) already make the node hidden.
  defp hidden_flag?(flags) do
    flags
    |> words([])
    |> Enum.take_while(&(elem(&1, 0) != "-extra"))
    |> List.keymember?("-hidden", 0)
  end

  defp merge(vars, acc) do
    Enum.reduce(vars, acc, fn %{"name" => name} = var, acc ->
      order = if Map.has_key?(acc.by_name, name), do: acc.order, else: acc.order ++ [name]
      %{order: order, by_name: Map.put(acc.by_name, name, var)}
    end)
  end

  # With a secret of its own the runner learns its name (SelfDelete deletes it); without, the
  # cookie comes from the parent's Secret, referenced like the parent does.
  defp cookie_env(runtime, true), do: [var("FLAME_K8S_RUNNER_SECRET", runtime.runner_name)]

  defp cookie_env(runtime, false),
    do: [
      %{
        "name" => "RELEASE_COOKIE",
        "valueFrom" => %{"secretKeyRef" => runtime.cookie_secret_ref}
      }
    ]

  defp var(name, %{} = source), do: source |> Manifest.stringify() |> Map.put("name", name)
  defp var(name, value), do: %{"name" => name, "value" => value}

  defp field_var(name, path),
    do: %{"name" => name, "valueFrom" => %{"fieldRef" => %{"fieldPath" => path}}}
end
