Code.require_file("../support/proper_helper.exs", __DIR__)
# Before the module compiles: its calls into PropEr resolve at compile time.
FLAMEK8sBackend.Test.Proper.ensure_loaded!()

defmodule FLAMEK8sBackend.HostileInputTest do
  # Property-based tests with PropEr: generated hostile terms into every NIF of
  # FLAMEK8sBackend.Native, against a port that refuses connections (nothing waits). The NIF
  # is the boundary where a crash would take the VM down; FLAMEK8sBackend.Kube trusts its
  # callers (user input is validated by FLAMEK8sBackend.Options) and is only tried here for
  # what it must keep whatever it is given: the token stays out of every answer. Every
  # answer must be {:ok, _}, :ok, {:error, r} with a documented r, or an ArgumentError naming
  # an argument that was given a hostile value; the VM lives on; the atom table does not grow
  # with the input; no answer shows the token.
  #
  # Not async: the atom table and the NIF's live-task count are global.
  use ExUnit.Case, async: false

  @moduletag :unit
  @moduletag timeout: 120_000

  alias FLAMEK8sBackend.{Kube, Native}
  alias FLAMEK8sBackend.Test.Proper, as: P
  alias :proper_types, as: T

  @numtests String.to_integer(System.get_env("HOSTILE_NUMTESTS", "10000"))
  # Many generated values must not leave this many atoms behind (module loading after the
  # warm-up is the only expected source: none is expected).
  @atom_slack 20

  @token "hostile-token-" <> Base.encode32(:crypto.strong_rand_bytes(20), padding: false)

  setup_all do
    P.ensure_loaded!()

    {:ok, kube} = Kube.connect(url: "https://127.0.0.1:1", token: @token, request_timeout: 2_000)

    %{kube: kube}
  end

  ## The targets: each argument position has a name (what an ArgumentError for a hostile
  ## value there may start with) and a valid value; a test case replaces some positions with
  ## generated terms.

  @pod %{
    "metadata" => %{"name" => "p"},
    "spec" => %{"containers" => [%{"name" => "c", "image" => "i"}]}
  }

  # Any CA certificate: a connection given one does not load the system's roots (~10 ms per
  # connection), which keeps the many successful connects of the property cheap.
  @ca_pem (case Path.wildcard("/etc/ssl/certs/*.pem") do
             [file | _] -> File.read!(file)
             [] -> nil
           end)

  defp connect_opts_map do
    %{
      mode: :explicit,
      kubeconfig: nil,
      context: nil,
      url: "https://127.0.0.1:1",
      ca_cert_pem: @ca_pem,
      token: @token,
      insecure_skip_tls_verify: false,
      request_timeout_ms: 2_000,
      # Newer NIFs read it, older ones ignore the key.
      max_concurrent_creates: 32
    }
  end

  # label_selector: read by newer NIFs (shared watches), ignored by older ones.
  @await_opts %{timeout_ms: 60_000, unschedulable: :fail, report_ready: true, label_selector: nil}

  # {label, kind, [{position, valid value, ArgumentError prefixes}], call}
  # kind: :kube (a Kube function: waits itself), :native (returns {:ok, handle}, a reply
  # follows), :native_await (an await: cancelled at once), :sync (answers directly).
  defp targets(kube) do
    c = kube.resource
    ref = :fresh_ref

    [
      {"Native.connect/2", :native,
       [{:opts, connect_opts_map(), ["opts:"]}, {:ref, ref, ["ref:"]}], &Native.connect/2},
      {"Native.client_info/1", :sync, [{:client, c, ["client:"]}], &Native.client_info/1},
      {"Native.get_pod/4", :native,
       [
         {:client, c, ["client:"]},
         {:ns, "d", ["namespace:"]},
         {:name, "p", ["name:"]},
         {:ref, ref, ["ref:"]}
       ], &Native.get_pod/4},
      {"Native.list_pods/4", :native,
       [
         {:client, c, ["client:"]},
         {:ns, "d", ["namespace:"]},
         {:selector, "a=b", ["label_selector:"]},
         {:ref, ref, ["ref:"]}
       ], &Native.list_pods/4},
      {"Native.create/7", :native,
       [
         {:client, c, ["client:"]},
         {:kind, :pod, ["kind:"]},
         {:ns, "d", ["namespace:"]},
         {:manifest, @pod, ["manifest:"]},
         {:queue, 0, ["queue_ms:"]},
         {:idempotent, false, ["idempotent:"]},
         {:ref, ref, ["ref:"]}
       ], &Native.create/7},
      {"Native.delete/6", :native,
       [
         {:client, c, ["client:"]},
         {:kind, :secret, ["kind:"]},
         {:ns, "d", ["namespace:"]},
         {:name, "p", ["name:"]},
         {:grace, 0, ["grace_period_seconds:"]},
         {:ref, ref, ["ref:"]}
       ], &Native.delete/6},
      {"Native.request/6", :native,
       [
         {:client, c, ["client:"]},
         {:method, :get, ["method:"]},
         {:path, "/version", ["path:"]},
         {:body, nil, ["body:"]},
         {:content_type, nil, ["content_type:"]},
         {:ref, ref, ["ref:"]}
       ], &Native.request/6},
      {"Native.await_pod/5", :native_await,
       [
         {:client, c, ["client:"]},
         {:ns, "d", ["namespace:"]},
         {:name, "p", ["name:"]},
         {:opts, @await_opts, ["opts:"]},
         {:ref, ref, ["ref:"]}
       ], &Native.await_pod/5},
      {"Native.cancel/1", :sync, [{:handle, :fresh_handle, ["handle:"]}], &Native.cancel/1}
    ] ++ optional_targets(kube)
  end

  # Functions that newer versions of the library have: tried when they exist.
  defp optional_targets(kube) do
    [
      {Native, :open_watches, 1,
       {"Native.open_watches/1", :sync, [{:client, kube.resource, ["client:"]}],
        &apply(Native, :open_watches, [&1])}},
      {Native, :follow_pod, 5,
       {"Native.follow_pod/5", :native_await,
        [
          {:client, kube.resource, ["client:"]},
          {:ns, "d", ["namespace:"]},
          {:name, "p", ["name:"]},
          {:selector, "a=b", ["label_selector:"]},
          {:ref, :fresh_ref, ["ref:"]}
        ], &apply(Native, :follow_pod, [&1, &2, &3, &4, &5])}}
    ]
    |> Enum.filter(fn {mod, fun, arity, _} ->
      Code.ensure_loaded?(mod) and function_exported?(mod, fun, arity)
    end)
    |> Enum.map(&elem(&1, 3))
  end

  ## The hostile values
  #
  # PropEr generates, per test case, a pool of @pool hostile terms (P.hostile/1: scalars,
  # lists, improper lists, maps, tuples, keyword lists, shared and nested terms, now and then
  # a huge one) and, per target, a few integers that choose which positions get a hostile
  # value and how it is shaped for the position (an option list around it, a connect map with
  # one field replaced...). Generating terms is what costs; shaping them is cheap.

  @pool 4
  @choices 8

  defp case_gen(targets, {marker, huge}) do
    choice = T.integer(0, 1_000_000)

    T.tuple([
      T.vector(@pool, P.hostile(marker, tuple_size(huge))),
      T.fixed_list(Enum.map(targets, fn _ -> T.vector(@choices, choice) end))
    ])
  end

  # The arguments of one target: {mask of hostile positions, the value for each position}.
  defp shape({label, _kind, positions, _call}, pool, [pick, subset | choices]) do
    n = length(positions)

    # One hostile position most of the time; the client only now and then, since nothing past
    # it runs when it is bad.
    conn = if elem(hd(positions), 0) == :client and n > 1, do: 1, else: 0

    mask =
      cond do
        rem(pick, 8) < 6 -> Bitwise.bsl(1, conn + rem(div(pick, 8), n - conn))
        rem(pick, 8) == 6 -> rem(subset, Bitwise.bsl(1, n) - 1) + 1
        true -> Bitwise.bsl(1, rem(div(pick, 8), n))
      end

    choices = List.to_tuple(choices)
    k = tuple_size(choices)

    values =
      positions
      |> Enum.with_index()
      |> Enum.map(fn {position, i} ->
        c = for j <- 0..3, do: elem(choices, rem(i + j, k))
        position_value(position, label, pool, c)
      end)

    {mask, values}
  end

  defp pick(list, c), do: Enum.at(list, rem(c, length(list)))

  defp position_value({:opts, valid, _}, "Native." <> _, pool, [c1, c2, c3, c4]) do
    fields = Map.keys(valid) ++ [:extra, "url"]
    pool = connect_values(pool) ++ [:fail, :wait, true, 0, 1, 4_294_967_296]

    case rem(c1, 5) do
      0 ->
        pick(pool, c2)

      1 ->
        Map.delete(valid, pick(Map.keys(valid), c2))

      _ ->
        valid
        |> Map.put(pick(fields, c2), pick(pool, c3))
        |> Map.put(pick(fields, c4), pick(pool, c2))
    end
  end

  defp position_value({:method, _, _}, _, pool, [c1, c2 | _]),
    do: special(pool, c1, c2, [:get, :post, :brew, "get", :delete])

  defp position_value({:kind, _, _}, _, pool, [c1, c2 | _]),
    do: special(pool, c1, c2, [:pod, :secret, :configmap, "pod"])

  defp position_value({:path, _, _}, _, pool, [c1, c2 | _]) do
    case {rem(c1, 3), pick(pool, c2)} do
      {0, x} when is_binary(x) -> "/" <> x
      {1, x} when is_binary(x) -> "/api/v1/namespaces/d/pods?labelSelector=" <> x
      {_, x} -> x
    end
  end

  # Strings go where strings are expected half of the time (when the pool has one): their
  # content is what is hostile there.
  defp position_value({pos, _, _}, _label, pool, [c1, c2 | _])
       when pos in [:ns, :name, :selector, :content_type] do
    strings = Enum.filter(pool, &is_binary/1)

    if rem(c1, 2) == 0 and strings != [],
      do: pick(strings, c2),
      else: pick(pool, c2)
  end

  defp position_value(_position, _label, pool, [c | _]), do: pick(pool, c)

  # A known value now and then, a hostile one else.
  defp special(pool, c1, c2, known),
    do: if(rem(c1, 4) == 0, do: pick(known, c2), else: pick(pool, c2))

  # Values for connect options: the hostile ones, and the real modes and a few paths, so
  # that kubeconfig and in-cluster resolution run with hostile paths, contexts and URLs.
  defp connect_values(pool) do
    pool ++
      [:in_cluster, :kubeconfig, :explicit, :auto, "https://127.0.0.1:1"] ++
      ["/", "/nonexistent", "/dev/null", "/proc/self/status", "~", "http://[::1"]
  end

  ## Running one call and judging its answer

  defp run_case(targets, {marker, huge}, {pool, choices}, stats) do
    pool = Enum.map(pool, &P.resolve(&1, marker, huge))

    targets
    |> Enum.zip(choices)
    |> Enum.all?(fn {target, c} ->
      {mask, values} = shape(target, pool, c)
      run_target(target, mask, values, stats)
    end)
  end

  defp run_target({label, kind, positions, call}, mask, values, stats) do
    {args, hostile_positions} =
      positions
      |> Enum.zip(values)
      |> Enum.with_index()
      |> Enum.map(fn {{{pos, valid, prefixes}, value}, i} ->
        if Bitwise.band(mask, Bitwise.bsl(1, i)) != 0,
          do: {value, [{pos, prefixes, value}]},
          else: {fresh(valid), []}
      end)
      |> Enum.unzip()

    hostile_positions = List.flatten(hostile_positions)
    started = System.monotonic_time(:microsecond)
    result = outcome(fn -> apply(call, args) end)
    result = follow(kind, args, result)
    elapsed = System.monotonic_time(:microsecond) - started
    :counters.add(stats.calls, index(stats, label), 1)
    :counters.add(stats.micros, index(stats, label), elapsed)
    record_slowest(stats, label, elapsed)

    case judge(kind, label, hostile_positions, result) do
      :ok ->
        classify(stats, label, result)
        true

      {:bad, why} ->
        send(self(), {:hostile_failure, label, why, hostile_positions, result})
        false
    end
  end

  defp fresh(:fresh_ref), do: make_ref()

  defp fresh(:fresh_handle) do
    kube = Process.get(:hostile_kube)
    ref = make_ref()
    {:ok, handle} = Native.get_pod(kube.resource, "d", "p", ref)
    Process.put({:pending_ref, handle}, ref)
    handle
  end

  defp fresh(valid), do: valid

  defp outcome(fun) do
    {:returned, fun.()}
  rescue
    e -> {:raised, e}
  catch
    kind, reason -> {:caught, kind, reason}
  end

  # What follows a call: the NIF's reply (awaited), an await (cancelled).
  defp follow(:native, args, {:returned, {:ok, handle}} = result) when is_reference(handle) do
    ref = List.last(args)

    receive do
      {:flame_k8s, ^ref, reply} -> {:replied, result, reply}
    after
      10_000 -> {:no_reply, result}
    end
  end

  defp follow(:native_await, args, {:returned, {:ok, handle}} = result)
       when is_reference(handle) do
    cancel_and_drain(handle, List.last(args))
    result
  end

  # A cancel of a live request (Native.cancel/1 with a fresh handle): `:ok`, its reply is not
  # coming; `:sent`, it is in the mailbox or on its way.
  defp follow(:sync, [handle], result) when is_reference(handle) do
    case {Process.delete({:pending_ref, handle}), result} do
      {nil, _} ->
        result

      {ref, {:returned, :sent}} ->
        receive do
          {:flame_k8s, ^ref, _} -> result
        after
          10_000 -> {:no_reply, result}
        end

      {_ref, _} ->
        result
    end
  end

  defp follow(_, _args, result), do: result

  # A cancel that lost the race to the reply (`:sent`) means the reply is in the mailbox or on
  # its way: wait for it, so it is not taken for a reply nobody waited for.
  defp cancel_and_drain(handle, ref) do
    with :sent <- Native.cancel(handle) do
      receive do
        {:flame_k8s, ^ref, _} -> :ok
      after
        10_000 -> :ok
      end
    end

    flush(ref)
  end

  defp flush(ref) do
    receive do
      {:flame_k8s, ^ref, _} -> flush(ref)
    after
      0 -> :ok
    end
  end

  @reasons [:api, :connect, :timeout, :invalid_manifest, :config, :decode]

  defp judge(_kind, _label, _hostile, {:no_reply, _}), do: {:bad, "no reply from the task"}

  defp judge(_kind, label, hostile, {:replied, {:returned, {:ok, _}}, reply}),
    do: judge(:reply, label, hostile, {:returned, reply})

  defp judge(_kind, _label, _hostile, {:returned, result}) do
    case result do
      :ok -> :ok
      {:ok, _} -> :ok
      {:error, reason} -> judge_reason(reason)
      %{server: _, request_timeout_ms: _} -> :ok
      :sent -> :ok
      n when is_integer(n) -> :ok
      other -> {:bad, "unexpected answer #{inspect(other, limit: 5)}"}
    end
  end

  defp judge(_kind, _label, hostile, {:raised, %ArgumentError{message: message}}) do
    prefixes = Enum.flat_map(hostile, fn {_pos, prefixes, _} -> prefixes end)

    cond do
      String.contains?(message, @token) ->
        {:bad, "the token is in the message"}

      Enum.any?(prefixes, &String.starts_with?(message, &1)) ->
        :ok

      true ->
        {:bad, "ArgumentError naming no hostile argument: #{String.slice(message, 0, 200)}"}
    end
  end

  defp judge(_kind, _label, _hostile, other), do: {:bad, "raised #{inspect(other, limit: 5)}"}

  defp judge_reason({:timeout, ms}) when is_integer(ms), do: :ok

  defp judge_reason({:api, status, reason, message})
       when is_integer(status) and is_binary(reason) and is_binary(message),
       do: no_token(message)

  defp judge_reason({tag, message}) when tag in @reasons and is_binary(message),
    do: no_token(message)

  defp judge_reason(other), do: {:bad, "undocumented error #{inspect(other, limit: 10)}"}

  defp no_token(message) do
    if String.contains?(message, @token), do: {:bad, "the token is in an error"}, else: :ok
  end

  ## Figures

  defp new_stats(targets) do
    labels = Enum.map(targets, &elem(&1, 0))

    %{
      labels: labels,
      index: labels |> Enum.with_index(1) |> Map.new(),
      calls: :counters.new(length(labels), []),
      micros: :counters.new(length(labels), []),
      slowest: :ets.new(:slowest, [:public]),
      outcomes: :ets.new(:outcomes, [:public])
    }
  end

  defp index(stats, label), do: Map.fetch!(stats.index, label)

  defp record_slowest(stats, label, us) do
    case :ets.lookup(stats.slowest, label) do
      [{_, prev}] when prev >= us -> :ok
      _ -> :ets.insert(stats.slowest, {label, us})
    end
  end

  defp classify(stats, label, result) do
    class =
      case result do
        {:replied, _, {:error, {tag, _}}} -> {:error, tag}
        {:replied, _, {:error, {tag, _, _, _}}} -> {:error, tag}
        {:replied, _, _} -> :ok
        {:returned, {:error, {tag, _}}} -> {:error, tag}
        {:returned, {:error, {tag, _, _, _}}} -> {:error, tag}
        {:returned, _} -> :ok
        {:raised, %ArgumentError{}} -> :argument_error
      end

    :ets.update_counter(stats.outcomes, {label, class}, 1, {{label, class}, 0})
  end

  defp report(stats, seconds) do
    rows =
      for label <- stats.labels do
        calls = :counters.get(stats.calls, index(stats, label))
        [{_, slowest}] = :ets.lookup(stats.slowest, label)

        classes =
          :ets.match_object(stats.outcomes, {{label, :_}, :_})
          |> Enum.map(fn {{_, class}, n} -> "#{format_class(class)}=#{n}" end)
          |> Enum.sort()
          |> Enum.join(" ")

        total = :counters.get(stats.micros, index(stats, label))

        String.pad_trailing(label, 22) <>
          String.pad_leading("#{calls}", 7) <>
          String.pad_leading("#{div(total, 1000)} ms", 10) <>
          String.pad_leading("#{div(slowest, 1000)} ms", 9) <> "  " <> classes
      end

    IO.puts(
      "\nhostile input: #{@numtests} cases in #{Float.round(seconds, 1)} s\n" <>
        "target                   calls     total  slowest  outcomes\n" <> Enum.join(rows, "\n")
    )
  end

  defp format_class({:error, tag}), do: "error:#{tag}"
  defp format_class(class), do: to_string(class)

  defp failure_message(counterexample) do
    failures =
      Stream.repeatedly(fn ->
        receive do
          {:hostile_failure, label, why, hostile, _result} ->
            "#{label}: #{why}; hostile: #{inspect(hostile, limit: 8, printable_limit: 200)}"
        after
          0 -> nil
        end
      end)
      |> Enum.take_while(& &1)
      |> Enum.uniq()
      |> Enum.take(-5)

    "counterexample (shrunk): #{inspect(counterexample, limit: 8, printable_limit: 200)}\n" <>
      Enum.join(failures, "\n")
  end

  defp check!(gen, fun, numtests) do
    case check(gen, fun, numtests) do
      :ok -> :ok
      {:failed, message} -> flunk(message)
    end
  end

  # In the calling process: the failures it reports are messages to itself.
  defp check(gen, fun, numtests) do
    case P.check(gen, fun, numtests, max_size: 14) do
      :ok ->
        :ok

      {:failed, counterexample} ->
        {:failed, failure_message(counterexample)}

      {:failed, counterexample, exception} ->
        {:failed, failure_message(counterexample) <> "\n" <> exception}
    end
  end

  # The cases run in @workers processes at once (each is the caller of its own requests).
  @workers 2

  ## The tests

  test "#{@numtests} generated cases into every NIF", %{kube: kube} do
    Process.put(:hostile_kube, kube)
    targets = targets(kube)
    huge = {make_ref(), List.to_tuple(P.huge_values())}
    gen = case_gen(targets, huge)

    # Warm-up: loads every module the calls touch, so the atom count below measures the input.
    stats = new_stats(targets)
    check!(gen, &run_case(targets, huge, &1, stats), 200)
    assert Native.noop() == :ok
    base_tasks = settled_live_tasks()

    atoms_before = :erlang.system_info(:atom_count)
    stats = new_stats(targets)
    started = System.monotonic_time(:millisecond)

    results =
      1..@workers
      |> Enum.map(fn _ ->
        Task.async(fn ->
          Process.put(:hostile_kube, kube)
          result = check(gen, &run_case(targets, huge, &1, stats), div(@numtests, @workers))
          # Nothing may be left for this process: every reply was awaited or cancelled.
          receive do
            {:flame_k8s, _, _} = stray -> {:stray, stray}
          after
            0 -> result
          end
        end)
      end)
      |> Task.await_many(:infinity)

    for result <- results do
      case result do
        :ok -> :ok
        {:failed, message} -> flunk(message)
        {:stray, message} -> flunk("a reply nobody waited for: #{inspect(message, limit: 5)}")
      end
    end

    seconds = (System.monotonic_time(:millisecond) - started) / 1000
    atoms_after = :erlang.system_info(:atom_count)
    report(stats, seconds)
    IO.puts("atoms: #{atoms_before} before, #{atoms_after} after")

    for label <- stats.labels do
      assert :counters.get(stats.calls, index(stats, label)) >= @numtests, label
    end

    assert Native.noop() == :ok
    assert atoms_after - atoms_before <= @atom_slack
    # Every request answered or cancelled: no task is left behind.
    assert eventually(fn -> Kube.live_tasks() <= base_tasks end)
  end

  test "unique strings in every atom-like position never become atoms", %{kube: kube} do
    c = kube.resource
    # Warm-up: a batch like the measured ones loads every module their paths touch (the
    # first batch of a fresh VM added 90 atoms that way, the next ones none).
    for i <- 1..200, do: atom_attempts(kube, c, -i)
    atoms_before = :erlang.system_info(:atom_count)

    deltas =
      for batch <- 0..9 do
        before = :erlang.system_info(:atom_count)
        for i <- 1..200, do: atom_attempts(kube, c, batch * 200 + i)
        :erlang.system_info(:atom_count) - before
      end

    IO.inspect(deltas, label: "atom deltas per batch")
    atoms_after = :erlang.system_info(:atom_count)

    IO.puts(
      "atom exhaustion attempts: 2000 x 9 unique names; atoms #{atoms_before} -> #{atoms_after}"
    )

    assert atoms_after - atoms_before <= @atom_slack
    assert Native.noop() == :ok
  end

  # Each call gets names that were never seen: a String.to_atom anywhere would add them.
  defp atom_attempts(kube, c, i) do
    u = "zz_atom_attempt_#{i}_#{System.unique_integer([:positive])}"
    ref = make_ref()

    attempts = [
      fn -> Kube.connect(mode: u) end,
      fn -> Kube.await_pod(kube, "d", "p", timeout: 1, unschedulable: u) end,
      fn -> Kube.create_pod(kube, "d", %{u => u, "metadata" => %{u => [u]}}) end,
      fn -> Kube.create_secret(kube, "d", %{"stringData" => %{u => u}, u => %{u => u}}) end,
      fn -> Native.create(c, u, "d", %{}, 0, false, ref) end,
      fn -> Native.request(c, u, "/", nil, nil, ref) end,
      fn -> Native.connect(%{connect_opts_map() | mode: u}, ref) end,
      fn -> Native.await_pod(c, "d", "p", %{@await_opts | unschedulable: u}, ref) end,
      fn -> Native.connect(Map.put(connect_opts_map(), u, 1), ref) end
    ]

    for attempt <- attempts do
      case outcome(attempt) do
        {:returned, {:ok, handle}} when is_reference(handle) ->
          _ = Native.cancel(handle)

        {:returned, _} ->
          :ok

        {:raised, %ArgumentError{}} ->
          :ok
      end
    end

    flush(ref)
  end

  # Replies of a server carry keys, reasons and values never seen before: decoded JSON has
  # binary keys, error reasons are binaries.
  test "unique keys and reasons in the server's answers never become atoms" do
    {port, server} = json_server()
    {:ok, kube} = Kube.connect(url: "http://127.0.0.1:#{port}", token: @token)
    assert {:ok, %{}} = Kube.request(kube, "GET", "/warm-up")
    assert {:error, {:api, 418, _, _}} = Kube.request(kube, "GET", "/status")
    atoms_before = :erlang.system_info(:atom_count)

    for _ <- 1..200 do
      assert {:ok, map} = Kube.request(kube, "GET", "/json")
      assert map_size(map) == 100
      assert {:error, {:api, 418, "Reason" <> _, _}} = Kube.request(kube, "GET", "/status")
    end

    atoms_after = :erlang.system_info(:atom_count)

    IO.puts(
      "server answers: 200 x 100 unique keys + 200 unique reasons; atoms #{atoms_before} -> #{atoms_after}"
    )

    assert atoms_after - atoms_before <= @atom_slack
    send(server, :stop)
  end

  # A minimal HTTP/1.1 server on loopback: /json answers an object of 100 fresh keys,
  # anything with "status" a Kubernetes Status of code 418 with a fresh reason.
  defp json_server do
    {:ok, listen} =
      :gen_tcp.listen(0, [
        :binary,
        active: false,
        ip: {127, 0, 0, 1},
        packet: :http_bin,
        reuseaddr: true
      ])

    {:ok, port} = :inet.port(listen)
    server = spawn_link(fn -> accept_loop(listen) end)
    :ok = :gen_tcp.controlling_process(listen, server)
    {port, server}
  end

  defp accept_loop(listen) do
    receive do
      :stop -> :gen_tcp.close(listen)
    after
      0 ->
        case :gen_tcp.accept(listen, 100) do
          {:ok, socket} ->
            serve(socket)
            accept_loop(listen)

          {:error, :timeout} ->
            accept_loop(listen)
        end
    end
  end

  defp serve(socket) do
    case read_request(socket, nil) do
      {:ok, path} ->
        u = System.unique_integer([:positive])

        {status, body} =
          if String.contains?(path, "status") do
            {418,
             ~s({"kind":"Status","apiVersion":"v1","status":"Failure","message":"m#{u}","reason":"Reason#{u}","code":418})}
          else
            keys = Enum.map_join(1..100, ",", &~s("k#{u}_#{&1}":#{&1}))
            {200, "{#{keys}}"}
          end

        :gen_tcp.send(socket, [
          "HTTP/1.1 #{status} X\r\ncontent-type: application/json\r\ncontent-length: #{byte_size(body)}\r\n\r\n",
          body
        ])

        serve(socket)

      :closed ->
        :gen_tcp.close(socket)
    end
  end

  defp read_request(socket, path) do
    case :gen_tcp.recv(socket, 0, 5_000) do
      {:ok, {:http_request, _method, {:abs_path, p}, _}} -> read_request(socket, p)
      {:ok, {:http_header, _, _, _, _}} -> read_request(socket, path)
      {:ok, :http_eoh} -> {:ok, path}
      _ -> :closed
    end
  end

  test "connect never echoes the token, whatever else is wrong with the options" do
    secret = "tok-" <> Base.encode32(:crypto.strong_rand_bytes(15), padding: false)
    h = P.term()
    key = T.elements([:url, :mode, :token, :request_timeout, :bogus])

    gen =
      T.tuple([
        T.list(T.tuple([key, h])),
        T.list(T.frequency([{3, T.tuple([key, h])}, {1, h}])),
        T.elements([:string, :charlist, :nul, :latin1])
      ])

    leaks = :ets.new(:leaks, [:public])

    result =
      P.check(
        gen,
        fn {before, rest, form} ->
          token =
            case form do
              :string -> secret
              :charlist -> String.to_charlist(secret)
              :nul -> secret <> <<0>>
              :latin1 -> secret <> <<255>>
            end

          opts = before ++ [{:token, token} | rest]

          {kind, text} =
            case outcome(fn -> Kube.connect(opts) end) do
              {:raised, e} -> {:raised, Exception.message(e)}
              {:returned, {:error, reason}} -> {:error, inspect(reason, limit: :infinity)}
              {:returned, {:ok, kube}} -> {:ok, inspect(kube)}
            end

          :ets.update_counter(leaks, kind, 1, {kind, 0})
          not String.contains?(text, secret)
        end,
        2_000,
        max_size: 8
      )

    IO.puts("token never echoed: 2000 cases; answers: #{inspect(:ets.tab2list(leaks))}")
    assert result == :ok, "the token appeared: #{inspect(result, limit: 8)}"
  end

  test "a token that no HTTP header can hold is refused, not a panic" do
    for token <- ["a\nb", "a\rb", "a\0b", "a\x7fb", "\ttoken\n"] do
      assert {:error, {:config, message}} = Kube.connect(url: "https://127.0.0.1:1", token: token)
      assert message =~ "token: is not a valid HTTP header value"
      refute message =~ token

      ref = make_ref()
      opts = %{connect_opts_map() | token: token}
      assert {:ok, _handle} = Native.connect(opts, ref)
      assert_receive {:flame_k8s, ^ref, {:error, {:config, message}}}, 5_000
      assert message =~ "token: is not a valid HTTP header value"
      refute message =~ token
    end

    # A tab inside a token is a valid header character, if an odd one.
    assert {:ok, _} = Kube.connect(url: "https://127.0.0.1:1", token: "a\tb")
  end

  # A %Kube{} whose fields are not what connect/1 made. Out of the documented contract (the
  # struct is built by connect/1 only), but it must not crash the VM or hang.
  test "forged %Kube{} structs never crash the VM", %{kube: kube} do
    h = P.term()

    gen =
      T.tuple([
        T.frequency([{1, T.exactly(kube.resource)}, {1, h}]),
        T.frequency([{1, T.exactly(kube.request_timeout)}, {1, T.integer(1, 3_000)}, {1, h}]),
        h
      ])

    seen = :ets.new(:forged, [:public])

    result =
      P.check(
        gen,
        fn {resource, timeout, server} ->
          forged = %{kube | resource: resource, request_timeout: timeout, server: server}

          class =
            case outcome(fn -> Kube.get_pod(forged, "d", "p") end) do
              {:returned, {:error, {tag, _}}} -> {:error, tag}
              {:raised, %ArgumentError{message: "client:" <> _}} -> :argument_error_client
              {:raised, %ArithmeticError{}} -> :arithmetic_error
              {:raised, %ErlangError{original: :timeout_value}} -> :timeout_value
              {:raised, e} -> {:raised, e.__struct__}
              other -> {:other, other}
            end

          :ets.update_counter(seen, class, 1, {class, 0})
          # A request_timeout that is not an integer of 0..4_294_965_295 fails in the
          # `receive ... after` of Kube.call/2 (ArithmeticError, or :timeout_value), after the
          # task started: its reply arrives later. Out of contract; counted, not failed.
          match?({:error, _}, class) or class == :argument_error_client or
            (class in [:arithmetic_error, :timeout_value] and
               not (is_integer(timeout) and timeout in -2000..4_294_965_295))
        end,
        2_000,
        max_size: 8
      )

    IO.puts("forged %Kube{}: #{inspect(:ets.tab2list(seen))}")
    assert result == :ok, inspect(result, limit: 8)
    assert Native.noop() == :ok
    # Replies to calls that raised after their task started arrive later, in this test
    # process's mailbox: they end with it.
  end

  # A token shorter than error.rs's MIN_REDACTED_LEN is redacted only where it stands alone:
  # replaced wherever its characters occur, the token "t" made "clien[REDACTED] error ...".
  test "a short token does not garble error messages" do
    {:ok, long} = Kube.connect(url: "https://127.0.0.1:1", token: @token, request_timeout: 2_000)
    {:ok, _} = Kube.get_pod(long, "d", "p") |> then(&{:ok, &1})
    {:error, {:connect, expected}} = Kube.get_pod(long, "d", "p")

    for token <- ["t", "e", "on", "err", "tcp "] do
      {:ok, short} =
        Kube.connect(url: "https://127.0.0.1:1", token: token, request_timeout: 2_000)

      assert {:error, {:connect, ^expected}} = Kube.get_pod(short, "d", "p")
    end
  end

  # A term whose subterms are shared grows exponentially in print, and a huge integer takes
  # minutes to print: the NIF's ArgumentErrors name the argument and never show the value.
  test "an ArgumentError about a hostile value is bounded", %{kube: kube} do
    ref = make_ref()

    for value <- [
          P.dag("x", 22, :list),
          P.dag("x", 14, :map),
          P.dag(:binary.copy("y", 10_000), 30, :tuple),
          Bitwise.bsl(1, 1_000_000),
          [-Bitwise.bsl(1, 4_000_000)],
          :binary.copy(<<0>>, 1_000_000)
        ] do
      error = assert_raise ArgumentError, fn -> Native.get_pod(kube.resource, "d", value, ref) end
      assert error.message =~ "name: expected"
      assert byte_size(error.message) < 2_000, String.slice(error.message, 0, 300)

      error =
        assert_raise ArgumentError, fn ->
          Native.delete(kube.resource, :pod, "d", "p", value, ref)
        end

      assert error.message =~ "grace_period_seconds: expected"
      assert byte_size(error.message) < 2_000, String.slice(error.message, 0, 300)
    end
  end

  # A manifest or body term is copied (enif_make_copy) and converted by the NIF node by node:
  # shared subterms are copied and converted every time they occur. 24 levels of [x, x] are a
  # few hundred bytes on the caller's heap and 2^24 leaves for the NIF (seconds, ~1 GB);
  # 40 levels would exhaust the machine's memory. The NIF counts the values first, as the copy
  # would (nif/args.rs MAX_TERM_NODES), and refuses more than a million without copying.
  test "a term with shared subterms is refused before it is copied", %{kube: kube} do
    too_many =
      "more than 1000000 values (a subterm counts once per occurrence: shared subterms are " <>
        "copied each time)"

    for {root, call} <- [
          {"body",
           fn -> Kube.request(kube, "POST", "/x", body: %{"a" => P.dag("x", 24, :list)}) end},
          {"body",
           fn -> Kube.request(kube, "POST", "/x", body: %{"a" => P.dag("x", 60, :map)}) end},
          {"manifest",
           fn -> Kube.create_pod(kube, "d", %{"spec" => P.dag(%{"k" => "v"}, 40, :tuple)}) end},
          {"manifest", fn -> Kube.create_secret(kube, "d", P.dag(%{"k" => "v"}, 50, :map)) end}
        ] do
      assert {:error, {:invalid_manifest, message}} = call.()

      assert message == "#{root}: #{too_many}"
    end

    # A fun's environment is copied too, and cannot be measured: the term is converted on the
    # spot, and the fun is the error.
    shared = P.dag("x", 40, :list)
    fun = fn -> shared end

    assert {:error, {:invalid_manifest, message}} =
             Kube.request(kube, "POST", "/x", body: %{"a" => [1, fun]})

    assert message =~
             ~r/^a\[1\]: expected a string, number, boolean, nil, list or map, got a function/

    # At the bound: a million values pass (and fail only for want of a server).
    below = %{"a" => Enum.to_list(1..999_997)}
    assert {:error, {tag, _}} = Kube.request(kube, "POST", "/x", body: below)
    assert tag in [:connect, :timeout]

    assert {:error, {:invalid_manifest, "body: " <> _}} =
             Kube.request(kube, "POST", "/x", body: %{"a" => Enum.to_list(1..999_998)})

    assert Native.noop() == :ok
  end

  ## Big ones, once each

  test "huge and deep values are refused or sent, within bounds", %{kube: kube} do
    big = :binary.copy(<<0, 1, 2, 3>>, 4_000_000)

    cases = [
      {"16 MB binary with NULs as a label value",
       fn -> Kube.create_pod(kube, "d", put_in(@pod, ["metadata", "labels"], %{"a" => big})) end},
      {"16 MB binary as a name", fn -> Kube.get_pod(kube, "d", big) end},
      {"16 MB binary as a path", fn -> Kube.request(kube, "GET", "/" <> big) end},
      {"1M-element list as a body",
       fn -> Kube.request(kube, "POST", "/x", body: %{"a" => Enum.to_list(1..1_000_000)}) end},
      {"100k-key map as a manifest",
       fn -> Kube.create_secret(kube, "d", Map.new(1..100_000, &{"k#{&1}", &1})) end},
      {"100k-deep map as a manifest",
       fn -> Kube.create_pod(kube, "d", P.nest("x", 100_000, :map)) end},
      {"100k-deep list as a body",
       fn -> Kube.request(kube, "POST", "/x", body: %{"a" => P.nest("x", 100_000, :list)}) end},
      {"improper list of 100k as a body",
       fn -> Kube.request(kube, "POST", "/x", body: %{"a" => Enum.to_list(1..100_000) ++ :t}) end},
      {"shared-subterm list, 2^16 leaves flattened, as a body",
       fn -> Kube.request(kube, "POST", "/x", body: %{"a" => P.dag("x", 16, :list)}) end},
      {"2^20000 as a grace period",
       fn -> Kube.delete_pod(kube, "d", "p", grace_period: Bitwise.bsl(1, 20_000)) end}
    ]

    for {what, fun} <- cases do
      {us, result} = :timer.tc(fn -> outcome(fun) end)
      IO.puts("#{String.pad_trailing(what, 56)} #{div(us, 1000)} ms  #{describe(result)}")

      # :timeout - a debug build of the NIF may take longer than the request timeout (2 s)
      # to convert a million-element body: the task is bounded by it.
      assert match?(
               {:returned, {:error, {tag, _}}}
               when tag in [:invalid_manifest, :connect, :timeout],
               result
             ) or
               match?({:raised, %ArgumentError{}}, result),
             "#{what}: #{describe(result)}"

      assert us < 10_000_000, "#{what} took #{div(us, 1000)} ms"
    end

    assert Native.noop() == :ok
  end

  defp describe({:returned, {:error, {tag, m}}}) when is_binary(m),
    do: "{:error, {#{inspect(tag)}, #{inspect(String.slice(m, 0, 80))}}}"

  defp describe({:raised, e}),
    do: "#{inspect(e.__struct__)}: #{String.slice(Exception.message(e), 0, 80)}"

  defp describe(other), do: inspect(other, limit: 5, printable_limit: 80)

  ## Helpers

  defp settled_live_tasks(last \\ nil, same \\ 0) do
    case Kube.live_tasks() do
      ^last when same >= 5 -> last
      ^last -> Process.sleep(20) && settled_live_tasks(last, same + 1)
      other -> Process.sleep(20) && settled_live_tasks(other, 0)
    end
  end

  defp eventually(fun, tries \\ 250) do
    cond do
      fun.() -> true
      tries == 0 -> false
      true -> Process.sleep(20) && eventually(fun, tries - 1)
    end
  end
end
