defmodule :telemetry do
  @moduledoc """
  Stand-in for the handler API of the `:telemetry` library (1.x), for tests where hex.pm is
  unreachable. Handlers are kept in a public ETS table owned by the application; `execute/3`
  calls the matching ones synchronously, in the caller, in the order they were attached.
  """

  require Logger

  @table Telemetry.StandIn.Table

  @type handler_id :: term()
  @type event_name :: [atom(), ...]
  @type handler_function :: (event_name(), map(), map(), term() -> any())

  @doc "Attaches `function` to one event. `{:error, :already_exists}` for a taken id."
  @spec attach(handler_id(), event_name(), handler_function(), term()) ::
          :ok | {:error, :already_exists}
  def attach(id, event_name, function, config),
    do: attach_many(id, [event_name], function, config)

  @doc "Attaches `function` to several events under one id."
  @spec attach_many(handler_id(), [event_name()], handler_function(), term()) ::
          :ok | {:error, :already_exists}
  def attach_many(id, event_names, function, config)
      when is_list(event_names) and is_function(function, 4) do
    Enum.each(event_names, fn name ->
      unless is_list(name) and name != [] and Enum.all?(name, &is_atom/1) do
        raise ArgumentError,
              "expected an event name (a non-empty list of atoms), got: #{inspect(name)}"
      end
    end)

    handlers =
      for name <- event_names,
          do: {name, id, function, config, System.unique_integer([:monotonic])}

    if :ets.match_object(@table, {:_, id, :_, :_, :_}) != [] do
      {:error, :already_exists}
    else
      true = :ets.insert(@table, handlers)
      :ok
    end
  end

  @doc "Detaches every handler of `id`."
  @spec detach(handler_id()) :: :ok | {:error, :not_found}
  def detach(id) do
    case :ets.match_object(@table, {:_, id, :_, :_, :_}) do
      [] ->
        {:error, :not_found}

      handlers ->
        Enum.each(handlers, &:ets.delete_object(@table, &1))
        :ok
    end
  end

  @doc "The handlers whose event name starts with `prefix`, as maps like telemetry's."
  @spec list_handlers([atom()]) :: [map()]
  def list_handlers(prefix) do
    for {name, id, function, config, _order} <- all(), List.starts_with?(name, prefix) do
      %{id: id, event_name: name, function: function, config: config}
    end
  end

  @doc "Calls the handlers of `event_name`. A handler that raises is detached."
  @spec execute(event_name(), map(), map()) :: :ok
  def execute(event_name, measurements, metadata)
      when is_list(event_name) and is_map(measurements) and is_map(metadata) do
    for {^event_name, id, function, config, _order} <- all() do
      try do
        function.(event_name, measurements, metadata, config)
      catch
        kind, reason ->
          _ = detach(id)

          Logger.error(
            "telemetry stand-in: handler #{inspect(id)} failed and was detached: " <>
              Exception.format(kind, reason, __STACKTRACE__)
          )
      end
    end

    :ok
  end

  defp all, do: :ets.tab2list(@table) |> Enum.sort_by(&elem(&1, 4))
end

defmodule Telemetry.StandIn.Application do
  @moduledoc false
  use Application

  @impl true
  def start(_type, _args),
    do: Supervisor.start_link([Telemetry.StandIn.Table], strategy: :one_for_one)
end

defmodule Telemetry.StandIn.Table do
  @moduledoc false
  # Owns the handler table, which lives as long as the application. The table exists once
  # start_link/1 returns (init/1 creates it), before anyone can attach.
  use GenServer

  @spec start_link(term()) :: GenServer.on_start()
  def start_link(_arg), do: GenServer.start_link(__MODULE__, nil)

  @impl true
  def init(nil) do
    _ = :ets.new(Telemetry.StandIn.Table, [:bag, :public, :named_table, read_concurrency: true])
    {:ok, nil}
  end
end
