defmodule FlameDemo.DNSPoller do
  @moduledoc """
  What [DNSCluster](https://hexdocs.pm/dns_cluster) does, for builds without hex.pm
  (`FLAME_DEMO_OFFLINE=1`, see `mix.exs`): every `:interval` ms it resolves `:query` to its A
  records (the headless Service, `DNS_CLUSTER_QUERY=flame-demo-headless.<namespace>.svc.cluster.local`)
  and connects to `<this node's basename>@<ip>` for every address not yet connected, so all
  replicas of the app form one BEAM cluster. Runner pods need none of it: their FLAME terminator
  connects to the parent directly.

      {FlameDemo.DNSPoller, query: "my-app-headless.default.svc.cluster.local"}

  `query: :ignore` or `nil` starts nothing, as does a node that is not distributed.
  """
  use GenServer

  require Logger

  @default_interval 5_000
  @resolve_timeout 5_000

  def start_link(opts) do
    case Keyword.get(opts, :query) do
      query when query in [nil, :ignore, ""] ->
        :ignore

      query ->
        interval = Keyword.get(opts, :interval, @default_interval)
        GenServer.start_link(__MODULE__, {to_string(query), interval}, name: __MODULE__)
    end
  end

  @doc "The IPv4 addresses `query` resolves to, as strings (empty when it does not resolve)."
  def resolve(query) do
    case :inet_res.getbyname(to_charlist(query), :a, @resolve_timeout) do
      {:ok, {:hostent, _name, _aliases, :inet, _len, addresses}} ->
        addresses |> Enum.map(&to_string(:inet.ntoa(&1))) |> Enum.sort()

      {:error, reason} ->
        Logger.debug("FlameDemo.DNSPoller: #{query} does not resolve: #{inspect(reason)}")
        []
    end
  end

  @impl true
  def init({query, interval}) do
    if Node.alive?() do
      [basename, _host] = node() |> Atom.to_string() |> String.split("@", parts: 2)
      send(self(), :poll)
      {:ok, %{query: query, interval: interval, basename: basename}}
    else
      Logger.warning("FlameDemo.DNSPoller: this node is not distributed; not clustering")
      :ignore
    end
  end

  @impl true
  def handle_info(:poll, state) do
    connected = MapSet.new([node() | Node.list()])

    state.query
    |> resolve()
    |> Enum.map(&:"#{state.basename}@#{&1}")
    |> Enum.reject(&MapSet.member?(connected, &1))
    |> Enum.each(fn peer ->
      if Node.connect(peer) == true, do: Logger.info("FlameDemo.DNSPoller: connected to #{peer}")
    end)

    Process.send_after(self(), :poll, state.interval)
    {:noreply, state}
  end
end
