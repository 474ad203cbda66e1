defmodule FLAMEK8sBackend.Test.HalfOpenProxy do
  @moduledoc """
  A loopback TCP proxy to a local TLS port whose first `silent` connections turn half-open
  once their TLS handshake is done: the client's first request never reaches the server, and
  from then on nothing goes through either way and nothing is closed, which is what a client
  sees of a connection that a NAT, a load balancer or a proxy on the way lost without a reset.
  Every later connection is piped to the upstream port as it is.

  The proxy reads the TLS records the client sends (5-byte headers: type, version, length):
  with TLS 1.3, which the API server and rustls agree on, the client's first encrypted record
  (outer type 23) is its Finished and the second one carries its first request.
  """

  defstruct [:pid, :port, :url]

  def start!(upstream_port, silent \\ 1) do
    test = self()

    pid =
      spawn(fn ->
        {:ok, listen} =
          :gen_tcp.listen(0, [:binary, active: false, ip: {127, 0, 0, 1}, reuseaddr: true])

        send(test, {:half_open_proxy, self(), elem(:inet.port(listen), 1)})
        accept_loop(listen, upstream_port, silent, 0)
      end)

    receive do
      {:half_open_proxy, ^pid, port} ->
        %__MODULE__{pid: pid, port: port, url: "https://127.0.0.1:#{port}"}
    after
      5_000 -> raise "the half-open proxy did not start"
    end
  end

  @doc "Connections accepted so far."
  def connections(%__MODULE__{pid: pid}) do
    ref = make_ref()
    send(pid, {:connections, self(), ref})

    receive do
      {^ref, n} -> n
    after
      5_000 -> raise "the half-open proxy does not answer"
    end
  end

  defp accept_loop(listen, upstream_port, silent, accepted) do
    case :gen_tcp.accept(listen, 50) do
      {:ok, client} ->
        handler =
          if accepted < silent,
            do: spawn(fn -> hold(client, upstream_port) end),
            else: spawn(fn -> pipe(client, upstream_port) end)

        :ok = :gen_tcp.controlling_process(client, handler)
        send(handler, :go)
        accept_loop(listen, upstream_port, silent, accepted + 1)

      {:error, :timeout} ->
        receive do
          {:connections, from, ref} -> send(from, {ref, accepted})
        after
          0 -> :ok
        end

        accept_loop(listen, upstream_port, silent, accepted)
    end
  end

  # Pipes the TLS handshake, then goes silent at the client's first request: reads whatever
  # comes from then on (so no write blocks), forwards nothing, closes nothing.
  defp hold(client, upstream_port) do
    receive do
      :go -> :ok
    end

    case :gen_tcp.connect({127, 0, 0, 1}, upstream_port, [:binary, active: true]) do
      {:ok, upstream} ->
        :ok = :inet.setopts(client, active: true)
        handshake(client, upstream, "", 0)

      {:error, _} ->
        :gen_tcp.close(client)
    end
  end

  defp handshake(client, upstream, buffer, encrypted) do
    receive do
      {:tcp, ^client, data} ->
        case forward_records(upstream, buffer <> data, encrypted) do
          {:silent, _rest} -> silent(client, upstream)
          {:more, rest, encrypted} -> handshake(client, upstream, rest, encrypted)
        end

      {:tcp, ^upstream, data} ->
        :gen_tcp.send(client, data)
        handshake(client, upstream, buffer, encrypted)

      {:tcp_closed, _} ->
        :gen_tcp.close(client) && :gen_tcp.close(upstream)
    end
  end

  # Forwards each whole record of the client until its second encrypted one.
  defp forward_records(upstream, <<type, _version::16, length::16, rest::binary>> = buffer, n)
       when byte_size(rest) >= length do
    <<body::binary-size(length), tail::binary>> = rest
    n = if type == 23, do: n + 1, else: n

    if n >= 2 do
      {:silent, tail}
    else
      :gen_tcp.send(upstream, <<binary_part(buffer, 0, 5)::binary, body::binary>>)
      forward_records(upstream, tail, n)
    end
  end

  defp forward_records(_upstream, buffer, n), do: {:more, buffer, n}

  defp silent(client, upstream) do
    receive do
      {:tcp, _, _data} -> silent(client, upstream)
      {:tcp_closed, ^client} -> :gen_tcp.close(upstream)
      {:tcp_closed, ^upstream} -> silent(client, upstream)
    end
  end

  defp pipe(client, upstream_port) do
    receive do
      :go -> :ok
    end

    case :gen_tcp.connect({127, 0, 0, 1}, upstream_port, [:binary, active: true]) do
      {:ok, upstream} ->
        :ok = :inet.setopts(client, active: true)
        relay(client, upstream)

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
