defmodule FLAMEK8sBackend.BootBackoff do
  @moduledoc false
  # Back-off of the boots of a pool whose last boot failed for a reason that will not fix itself
  # within seconds (see permanent?/1). FLAME boots again about a second after each failure
  # while callers wait, and every such boot would create, watch and delete a pod (and secret)
  # for the same answer. Within a window after such a failure, boots with the same options
  # return that failure at once, marked `cached`, and create nothing. The window doubles with
  # each failure that follows it, from 2 s up to 30 s; it resets on a success, and a change of
  # options is another key.
  #
  # Why these figures: 2 s is past FLAME's one-second retry, so the retry right after the
  # first failure is answered from the cache, while a registry or autoscaler hiccup costs
  # waiting callers only that long. 30 s is FLAME's default boot timeout: once you fix the
  # cause (push the image, grant the RBAC, add a node), the next real boot is at most that far
  # away. Kubernetes' own image pull back-off (10 s doubling to 5 min) is longer, but it
  # retries a pod that already exists; here each retry is a new pod.
  #
  # State: one ETS row per key (the hash of a pool's validated options) with the failure count,
  # when the last failure was recorded, the window's end and the last error: bounded per key. A
  # row is forgotten (and swept every minute) once its window ended more than
  # forget_after_ms/0 ago, and at most @max_entries rows are kept: past that, new keys get no
  # back-off rather than more memory.
  use GenServer

  alias FLAMEK8sBackend.{BootError, Options}

  @table __MODULE__
  @first_window 2_000
  @max_window 30_000
  @forget_after 300_000
  @sweep_every 60_000
  @max_entries 1_000

  @type key :: term()

  @type entry :: %{
          failures: pos_integer(),
          failed_at: integer(),
          until: integer(),
          error: BootError.t()
        }

  ## The decision (pure: the clock readings are arguments)

  @doc """
  Whether a boot that failed with `reason` will fail again the same way in the next seconds.

      iex> FLAMEK8sBackend.BootBackoff.permanent?({:api, 403, "Forbidden", "pods is forbidden"})
      true
      iex> FLAMEK8sBackend.BootBackoff.permanent?({:api, 503, "Service Unavailable", "busy"})
      false
  """
  @spec permanent?(term()) :: boolean()
  # The image is missing or its registry refuses us: Kubernetes' own retries take minutes.
  def permanent?({:image_pull, _}), do: true
  # A missing ConfigMap or Secret key, a bad command: the pool's or the cluster's config.
  def permanent?({:container_config, _}), do: true
  def permanent?({:invalid_manifest, _}), do: true
  # No node fits, and the pool asked to fail at once rather than wait for a scale-up.
  def permanent?({:unschedulable, _}), do: true
  def permanent?(:unschedulable), do: true
  # No node fits, and the cluster's autoscaler says no node it can add would either.
  def permanent?({:no_scale_up, _}), do: true
  # The credentials or the kubeconfig, and a library that could not be loaded.
  def permanent?({:config, _}), do: true
  def permanent?({:nif_not_loaded, _}), do: true
  # RBAC (401, 403, also a ResourceQuota refusal), validation (400, 422), a missing namespace
  # (404). Not 408 and 429 (slow or busy), 409 (a conflict), 410 (a watch's old version).
  def permanent?({:api, status, _, _}) when status in [400, 401, 403, 404, 422], do: true
  # Timeouts, connect errors, 5xx, a create whose answer was lost, a container that exited,
  # a pod evicted or deleted, an answer that could not be decoded, and anything new.
  def permanent?(_reason), do: false

  @doc "The window after `failures` failures in a row, in ms."
  @spec window_ms(pos_integer()) :: pos_integer()
  def window_ms(failures) when is_integer(failures) and failures >= 1,
    do: min(@first_window * Integer.pow(2, min(failures - 1, 16)), @max_window)

  @doc "How long after its window ended an entry is kept (its streak remembered), in ms."
  @spec forget_after_ms() :: pos_integer()
  def forget_after_ms, do: @forget_after

  @doc "Whether `entry` is to be forgotten at `now`."
  @spec expired?(entry(), integer()) :: boolean()
  def expired?(%{until: until}, now), do: now > until + @forget_after

  @doc """
  The entry after a boot that started at `started` failed at `now` with `error` (a permanent
  one). A boot that started before the last failure was recorded was already in flight: it
  belongs to the same streak and does not grow the window.
  """
  @spec failed(entry() | nil, integer(), integer(), BootError.t()) :: entry()
  def failed(entry, started, now, %BootError{} = error) do
    {failures, until} =
      cond do
        entry == nil or expired?(entry, now) ->
          {1, now + window_ms(1)}

        started < entry.failed_at ->
          {entry.failures, max(entry.until, now + window_ms(entry.failures))}

        true ->
          {entry.failures + 1, now + window_ms(entry.failures + 1)}
      end

    %{failures: failures, failed_at: now, until: until, error: %{error | cached: nil}}
  end

  @doc """
  What a boot at `now` does: `:boot`, or `{:cached, error}` within the window of `entry`:
  the last failure marked with `cached: %{failures: n, age_ms: ms, retry_in_ms: ms}`.
  """
  @spec decide(entry() | nil, integer()) :: :boot | {:cached, BootError.t()}
  def decide(%{until: until} = entry, now) when now < until do
    cached = %{failures: entry.failures, age_ms: now - entry.failed_at, retry_in_ms: until - now}
    {:cached, %{entry.error | cached: cached}}
  end

  def decide(_entry, _now), do: :boot

  @doc """
  The key of a pool's validated options: what a boot is made of, less FLAME's runtime
  `:terminator_sup` and the `:secret_env` values (their names stay; a hash of a short secret
  could give it away). A `:manifest` function is hashed as a function: the same code with
  the same captured values is the same key (what a pool's options hold: FLAME passes them
  to every `init/1` of the pool).
  """
  @spec key(Options.t()) :: key()
  def key(%Options{} = opts) do
    opts = %{opts | terminator_sup: nil, secret_env: opts.secret_env |> Map.keys() |> Enum.sort()}
    :crypto.hash(:sha256, :erlang.term_to_binary(opts, [:deterministic]))
  end

  ## The table

  @doc "Now, in ms of the monotonic clock."
  @spec now() :: integer()
  def now, do: System.monotonic_time(:millisecond)

  @doc "What a boot with `key` does now (see `decide/2`)."
  @spec check(key()) :: :boot | {:cached, BootError.t()}
  def check(key), do: decide(lookup(key), now())

  @doc """
  Records the result of a boot with `key` that started at `started`: a success forgets the
  key, a permanent failure opens or grows its window, anything else changes nothing.
  """
  @spec record(key(), integer(), term(), integer()) :: :ok
  def record(key, started, result, now \\ now())

  def record(key, _started, {:ok, _terminator, _state}, _now) do
    :ets.delete(@table, key)
    :ok
  end

  def record(key, started, {:error, %BootError{cached: nil, reason: reason} = error}, now) do
    cond do
      not permanent?(reason) ->
        :ok

      not member?(key) and size() >= @max_entries ->
        :ok

      true ->
        :ets.insert(@table, {key, failed(lookup(key), started, now, error)})
        :ok
    end
  end

  def record(_key, _started, _result, _now), do: :ok

  @doc "Whether the table has an entry for `key`."
  @spec member?(key()) :: boolean()
  def member?(key), do: :ets.member(@table, key)

  @doc "The number of entries."
  @spec size() :: non_neg_integer()
  def size, do: :ets.info(@table, :size)

  @doc "Drops the expired entries now."
  @spec sweep() :: :ok
  def sweep, do: GenServer.call(__MODULE__, :sweep)

  defp lookup(key) do
    case :ets.lookup(@table, key) do
      [{^key, entry}] -> entry
      [] -> nil
    end
  end

  ## The table's owner

  @doc false
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(_opts), do: GenServer.start_link(__MODULE__, nil, name: __MODULE__)

  @impl true
  def init(nil) do
    @table = :ets.new(@table, [:set, :public, :named_table, read_concurrency: true])
    schedule_sweep()
    {:ok, nil}
  end

  @impl true
  def handle_call(:sweep, _from, state) do
    drop_expired()
    {:reply, :ok, state}
  end

  @impl true
  def handle_info(:sweep, state) do
    drop_expired()
    schedule_sweep()
    {:noreply, state}
  end

  defp drop_expired do
    forget_before = now() - @forget_after

    _ =
      :ets.select_delete(@table, [{{:_, %{until: :"$1"}}, [{:<, :"$1", forget_before}], [true]}])

    :ok
  end

  defp schedule_sweep, do: Process.send_after(self(), :sweep, @sweep_every)
end
