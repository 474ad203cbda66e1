defmodule FLAMEK8sBackend.Test.Proper do
  @moduledoc """
  PropEr (Debian's `erlang-proper`, an OTP application under `:code.lib_dir/0`) from ExUnit,
  without hex, and the generators of hostile terms the property tests use.

  Kept as an `.exs` that the property tests `Code.require_file/2`: `mix compile` never sees it,
  so a machine without PropEr still compiles the project (only these tests need it).

  PropEr's own `atom()` and `any()` generators create new atoms; the generators here draw atoms
  only from a fixed pool of existing ones, so the atom table measures the library alone.
  """

  @doc "Puts PropEr on the code path; raises with the install command when it is missing."
  def ensure_loaded! do
    unless Code.ensure_loaded?(:proper) do
      for dir <- Path.wildcard(Path.join(to_string(:code.lib_dir()), "proper-*/ebin")) do
        :code.add_pathz(String.to_charlist(dir))
      end
    end

    Code.ensure_loaded?(:proper) ||
      raise "PropEr is not installed: apt-get install erlang-proper (an OTP application " <>
              "under #{:code.lib_dir()})"
  end

  @doc """
  Runs `fun` on `numtests` values of `gen`. `fun` returns `true`, or anything else to fail.
  Returns `:ok`, `{:failed, counterexample}` or, when `fun` raised,
  `{:failed, counterexample, formatted_exception}`.
  """
  def check(gen, fun, numtests, opts \\ []) do
    # PropEr 1.2 calls erlang:get_stacktrace/0 (gone since OTP 23) when a property raises:
    # exceptions are caught here and reported as a failure with the exception.
    prop =
      :proper.forall(gen, fn value ->
        try do
          fun.(value) == true
        rescue
          e ->
            send(self(), {:proper_exception, Exception.format(:error, e, __STACKTRACE__)})
            false
        catch
          kind, reason ->
            send(self(), {:proper_exception, Exception.format(kind, reason, __STACKTRACE__)})
            false
        end
      end)

    max_size = Keyword.get(opts, :max_size, 20)

    case :proper.quickcheck(prop, [
           :quiet,
           :long_result,
           {:numtests, numtests},
           {:max_size, max_size},
           {:start_size, 1},
           # No shrinking by default: PropEr 1.2 crashes shrinking improper lists inside fixed_list
           # types; the tests report the first failing case themselves.
           {:max_shrinks, Keyword.get(opts, :max_shrinks, 0)}
         ]) do
      true ->
        :ok

      counterexample ->
        receive do
          {:proper_exception, text} -> {:failed, counterexample, text}
        after
          0 -> {:failed, counterexample}
        end
    end
  end

  ## Generators (PropEr types)

  alias :proper_types, as: T

  @doc "Atoms that already exist: generated terms never add to the atom table."
  def atom_pool do
    [
      nil,
      true,
      false,
      :ok,
      :error,
      :pod,
      :secret,
      :get,
      :post,
      :put,
      :patch,
      :delete,
      :fail,
      :wait,
      :in_cluster,
      :kubeconfig,
      :explicit,
      :auto,
      :mode,
      :url,
      :token,
      :context,
      :ca_cert_pem,
      :insecure_skip_tls_verify,
      :request_timeout,
      :request_timeout_ms,
      :timeout,
      :timeout_ms,
      :unschedulable,
      :report_ready,
      :grace_period,
      :label_selector,
      :body,
      :content_type,
      :handle,
      :ref,
      :resource,
      :server,
      :metadata,
      :spec,
      :name,
      :image,
      :containers,
      :__struct__,
      :"",
      :"with space",
      :é
    ]
  end

  @doc "Keys that name fields of pods and secrets, so generated maps reach deep validation."
  def field_names do
    ~w(metadata spec status containers initContainers name image env value valueFrom
       labels annotations namespace generateName apiVersion kind command args resources
       limits requests cpu memory volumes volumeMounts mountPath nodeSelector tolerations
       stringData data type restartPolicy serviceAccountName ports containerPort
       securityContext runAsUser ownerReferences uid node_selector)
  end

  @doc "A Kubernetes name: such arguments pass the Elixir checks and reach the network step."
  def k8s_name do
    T.bind(
      T.non_empty(T.list(T.elements(~c"abcdefghijklmnopqrstuvwxyz0123456789-._:"))),
      &to_string/1,
      false
    )
  end

  def big_integer do
    T.bind(
      T.tuple([T.integer(60, 300), T.integer(-3, 3), T.boolean()]),
      fn {bits, delta, neg} ->
        n = Bitwise.bsl(1, bits) + delta
        if neg, do: -n, else: n
      end,
      false
    )
  end

  def nul_binary do
    T.bind(T.tuple([T.binary(), T.binary()]), fn {a, b} -> a <> <<0>> <> b <> <<0>> end, false)
  end

  def invalid_utf8 do
    T.bind(
      T.tuple([T.binary(), T.elements([<<255>>, <<0xC0, 0x80>>, <<0xED, 0xA0, 0x80>>, <<0xE2>>])]),
      fn {a, bad} -> a <> bad end,
      false
    )
  end

  @doc "Terms no JSON holds, made once per run (they cannot live in a module attribute)."
  def opaque_values do
    port = Port.list() |> List.first()
    [self(), make_ref(), fn -> :x end, &Enum.map/2, port, {}, {:a, 1}, <<1::3>>]
  end

  # Types are values: built once per process (the recursive generators ask for them often).
  defp cached(key, build) do
    case Process.get({__MODULE__, key}) do
      nil ->
        value = build.()
        Process.put({__MODULE__, key}, value)
        value

      value ->
        value
    end
  end

  def scalar, do: cached(:scalar, &build_scalar/0)

  defp build_scalar do
    T.frequency([
      {4, T.integer()},
      {1, big_integer()},
      {1,
       T.elements([0, -1, 4_294_967_295, 4_294_967_296, 4_000_000_001, 9_223_372_036_854_775_808])},
      {2, T.float()},
      {1, T.elements([0.0, -0.0, 1.0e308, -1.0e308, 5.0e-324])},
      {3, T.binary()},
      {2, nul_binary()},
      {2, invalid_utf8()},
      {3, :proper_unicode.utf8()},
      {3, k8s_name()},
      {1, T.elements(field_names())},
      {1, T.bitstring()},
      {3, T.elements(atom_pool())},
      {2, T.elements(opaque_values())}
    ])
  end

  @doc "Any term: scalars, lists (proper and improper), maps, tuples, keyword lists, shared subterms."
  def term, do: T.sized(&term/1)

  def term(size) when size <= 1, do: scalar()
  def term(size), do: cached({:term, size}, fn -> build_term(size) end)

  defp build_term(size) do
    sub = T.lazy(fn -> term(div(size, 3)) end)

    T.frequency([
      {5, scalar()},
      {2, T.list(sub)},
      {1, improper_list(sub)},
      {3, map_of(sub)},
      {1, T.bind(T.list(sub), &List.to_tuple/1, false)},
      {1, T.list(T.tuple([T.elements(atom_pool()), sub]))},
      {1, shared(sub)},
      {1, nested(sub)}
    ])
  end

  def improper_list(sub) do
    T.bind(
      T.tuple([T.non_empty(T.list(sub)), sub]),
      fn {list, tail} -> build_improper(list, tail) end,
      false
    )
  end

  # [a, b | tail], whatever the tail (a proper list when the tail is one).
  defp build_improper(list, tail), do: List.foldr(list, tail, fn x, acc -> [x | acc] end)

  def map_of(sub) do
    key =
      T.frequency([
        {4, T.elements(field_names())},
        {2, :proper_unicode.utf8()},
        {1, T.elements(atom_pool())},
        {1, T.binary()},
        {1, sub}
      ])

    T.bind(T.list(T.tuple([key, sub])), &Map.new/1, false)
  end

  @doc "A term whose subterms are shared: small on the heap, large when flattened (copied)."
  def shared(sub) do
    T.bind(
      # Few levels: shares nest (a shared term's leaf may be shared itself), and the flattened
      # size multiplies; the big ones have tests of their own.
      T.tuple([sub, T.integer(1, 4), T.elements([:list, :map, :tuple])]),
      fn {leaf, levels, shape} -> dag(leaf, levels, shape) end,
      false
    )
  end

  def dag(leaf, levels, shape) do
    Enum.reduce(1..levels, leaf, fn _, acc ->
      case shape do
        :list -> [acc, acc]
        :map -> %{"a" => acc, "b" => acc}
        :tuple -> {acc, acc}
      end
    end)
  end

  @doc "A term nested up to 100 levels (the NIF's bound is 64)."
  def nested(sub) do
    T.bind(
      T.tuple([sub, T.integer(1, 100), T.elements([:list, :map, :atom_map])]),
      fn {leaf, levels, shape} -> nest(leaf, levels, shape) end,
      false
    )
  end

  def nest(leaf, levels, shape) do
    Enum.reduce(1..levels, leaf, fn _, acc ->
      case shape do
        :list -> [acc]
        :map -> %{"x" => acc}
        :atom_map -> %{metadata: acc}
      end
    end)
  end

  @doc """
  Large and odd values, built once: drawn now and then by `hostile/0`. The biggest ones are
  kept for their own tests (each costs a copy per call).
  """
  def huge_values do
    nul = :binary.copy(<<0>>, 1_000_000)

    [
      nul,
      :binary.copy("a", 70_000),
      :binary.copy("é", 200),
      Enum.to_list(1..100_000),
      Map.new(1..20_000, &{"k#{&1}", &1}),
      nest("leaf", 10_000, :map),
      nest("leaf", 10_000, :list),
      dag("x", 12, :list),
      dag("x", 10, :map),
      build_improper(Enum.to_list(1..1000), :tail),
      Bitwise.bsl(1, 20_000),
      %{"metadata" => %{"name" => nul}}
    ]
  end

  @doc """
  The hostile term: mostly `term/0`, sometimes `{marker, i}` standing for the i-th of the
  `count` huge values: PropEr walks every value it generates, so the huge ones are looked up
  by the caller (`resolve/3`) instead of passing through it.
  """
  def hostile(_marker, 0), do: term()

  def hostile(marker, count),
    do: T.frequency([{60, term()}, {1, T.tuple([T.exactly(marker), T.integer(0, count - 1)])}])

  def resolve({marker, i}, marker, huge), do: elem(huge, i)
  def resolve(term, _marker, _huge), do: term
end
