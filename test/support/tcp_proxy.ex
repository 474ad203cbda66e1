defmodule FLAMEK8sBackend.Test.TcpProxy do
  @moduledoc """
  A loopback TCP proxy to a local port whose connectivity tests can cut and restore: `cut/1`
  resets every open connection and refuses new ones (as a stopped server would), `restore/1`
  accepts again. `pause/1` makes the server unreachable the other way, as a network partition
  does: connections stay open and new ones are accepted, but no byte goes through either way
  until `resume/1`, so every request hangs until its client gives up.
  """
  use GenServer

  defstruct [:pid, :port, :url]

  def start!(upstream_port) do
    {:ok, pid} = GenServer.start(__MODULE__, upstream_port)
    port = GenServer.call(pid, :port)
    %__MODULE__{pid: pid, port: port, url: "https://127.0.0.1:#{port}"}
  end

  def cut(%__MODULE__{pid: pid}), do: GenServer.call(pid, :cut)
  def restore(%__MODULE__{pid: pid}), do: GenServer.call(pid, :restore)
  def pause(%__MODULE__{pid: pid}), do: GenServer.call(pid, :pause)
  def resume(%__MODULE__{pid: pid}), do: GenServer.call(pid, :resume)

  @doc "Returns once at least `n` client connections have been accepted in total."
  def await_connections(%__MODULE__{pid: pid}, n),
    do: GenServer.call(pid, {:await_connections, n}, 30_000)

  @impl true
  def init(upstream_port) do
    {:ok, listen} =
      :gen_tcp.listen(0, [:binary, active: false, ip: {127, 0, 0, 1}, reuseaddr: true])

    proxy = self()
    spawn_link(fn -> accept_loop(listen, proxy) end)

    {:ok,
     %{
       listen: listen,
       upstream: upstream_port,
       up?: true,
       paused?: false,
       held: [],
       pipes: [],
       accepted: 0,
       waiters: []
     }}
  end

  @impl true
  def handle_call(:port, _from, state), do: {:reply, elem(:inet.port(state.listen), 1), state}

  def handle_call(:cut, _from, state) do
    Enum.each(state.pipes, fn pid -> Process.exit(pid, :kill) end)
    {:reply, :ok, %{state | up?: false, pipes: []}}
  end

  def handle_call(:restore, _from, state), do: {:reply, :ok, %{state | up?: true}}

  # A suspended pipe leaves its bytes unread in the sockets' buffers (its mailbox), so nothing
  # is lost or sent until it resumes.
  def handle_call(:pause, _from, state) do
    Enum.each(state.pipes, &:erlang.suspend_process/1)
    {:reply, :ok, %{state | paused?: true}}
  end

  def handle_call(:resume, _from, %{paused?: true} = state) do
    Enum.each(state.pipes, &:erlang.resume_process/1)
    Enum.each(Enum.reverse(state.held), &send(self(), {:accepted, &1}))
    {:reply, :ok, %{state | paused?: false, held: []}}
  end

  def handle_call(:resume, _from, state), do: {:reply, :ok, state}

  def handle_call({:await_connections, n}, from, state) do
    if state.accepted >= n,
      do: {:reply, :ok, state},
      else: {:noreply, %{state | waiters: [{n, from} | state.waiters]}}
  end

  @impl true
  def handle_info({:accepted, client}, %{up?: false} = state) do
    :gen_tcp.close(client)
    {:noreply, state}
  end

  def handle_info({:accepted, client}, %{paused?: true} = state),
    do: {:noreply, %{state | held: [client | state.held]}}

  def handle_info({:accepted, client}, state) do
    upstream_port = state.upstream

    pipe =
      spawn(fn ->
        receive do
          :go -> pipe(client, upstream_port)
        end
      end)

    :ok = :gen_tcp.controlling_process(client, pipe)
    send(pipe, :go)
    accepted = state.accepted + 1
    {ready, waiting} = Enum.split_with(state.waiters, fn {n, _} -> accepted >= n end)
    Enum.each(ready, fn {_, from} -> GenServer.reply(from, :ok) end)
    {:noreply, %{state | pipes: [pipe | state.pipes], accepted: accepted, waiters: waiting}}
  end

  defp accept_loop(listen, proxy) do
    {:ok, client} = :gen_tcp.accept(listen)
    :ok = :gen_tcp.controlling_process(client, proxy)
    send(proxy, {:accepted, client})
    accept_loop(listen, proxy)
  end

  # Both sockets belong to this process; killing it resets both connections.
  defp pipe(client, upstream_port) do
    case :gen_tcp.connect({127, 0, 0, 1}, upstream_port, [:binary, active: true]) do
      {:ok, upstream} ->
        :ok = :inet.setopts(client, active: true)
        relay(client, upstream)

      # The API server behind it is gone (killed, or stopped at the end of the run): the
      # client sees its connection closed, as it would without the proxy.
      {:error, _} ->
        :gen_tcp.close(client)
    end
  end

  defp relay(client, upstream) do
    receive do
      {:tcp, ^client, data} -> :gen_tcp.send(upstream, data) && relay(client, upstream)
      {:tcp, ^upstream, data} -> :gen_tcp.send(client, data) && relay(client, upstream)
      {:tcp_closed, _} -> :gen_tcp.close(client) && :gen_tcp.close(upstream)
      {:tcp_error, _, _} -> :gen_tcp.close(client) && :gen_tcp.close(upstream)
    end
  end
end
