defmodule FLAMEK8sBackend.Test.FakeApiServer do
  # A fake Kubernetes API server for unit tests (loaded with Code.require_file): an HTTP/1.1
  # server that sends `{:api_request, method, path, body}` to `test` for every request (the
  # path without its query), then answers with `answer.(method, path)` or, for an answer of
  # arity 3, `answer.(method, path, query)` (the decoded query, a map): `{status, json}` or
  # `{status, content_type, body}`.

  @doc "Writes `dir`/kubeconfig for the fake server at `url` (token `t0k3n`); returns its path."
  def kubeconfig!(dir, url) do
    path = Path.join(dir, "kubeconfig")

    File.write!(path, """
    apiVersion: v1
    kind: Config
    clusters: [{name: c, cluster: {server: "#{url}"}}]
    users: [{name: u, user: {token: t0k3n}}]
    contexts: [{name: ctx, context: {cluster: c, user: u}}]
    current-context: ctx
    """)

    path
  end

  def start!(test, answer) do
    {:ok, listen} =
      :gen_tcp.listen(0, [:binary, active: false, reuseaddr: true, ip: {127, 0, 0, 1}])

    {:ok, port} = :inet.port(listen)
    pid = spawn_link(fn -> accept(listen, test, answer) end)
    :ok = :gen_tcp.controlling_process(listen, pid)
    "http://127.0.0.1:#{port}"
  end

  defp accept(listen, test, answer) do
    {:ok, socket} = :gen_tcp.accept(listen)
    handler = spawn(fn -> serve(socket, test, answer) end)
    :ok = :gen_tcp.controlling_process(socket, handler)
    send(handler, :go)
    accept(listen, test, answer)
  end

  defp serve(socket, test, answer) do
    receive do
      :go -> loop(socket, test, answer)
    end
  end

  defp loop(socket, test, answer) do
    :ok = :inet.setopts(socket, packet: :http_bin)

    case :gen_tcp.recv(socket, 0) do
      {:ok, {:http_request, method, {:abs_path, path}, _version}} ->
        length = content_length(socket, 0)
        :ok = :inet.setopts(socket, packet: :raw)
        body = if length > 0, do: elem(:gen_tcp.recv(socket, length), 1), else: ""
        method = to_string(method)

        {path, query} =
          case String.split(path, "?", parts: 2) do
            [path, query] -> {path, URI.decode_query(query)}
            [path] -> {path, %{}}
          end

        send(test, {:api_request, method, path, body})

        {status, content_type, payload} =
          case if is_function(answer, 3),
                 do: answer.(method, path, query),
                 else: answer.(method, path) do
            {status, payload} -> {status, "application/json", payload}
            {_status, _content_type, _payload} = full -> full
          end

        :ok =
          :gen_tcp.send(socket, [
            "HTTP/1.1 #{status} X\r\ncontent-type: #{content_type}\r\n",
            "content-length: #{byte_size(payload)}\r\n\r\n",
            payload
          ])

        loop(socket, test, answer)

      {:error, _closed} ->
        :ok
    end
  end

  defp content_length(socket, length) do
    case :gen_tcp.recv(socket, 0) do
      {:ok, {:http_header, _, :"Content-Length", _, value}} ->
        content_length(socket, String.to_integer(value))

      {:ok, {:http_header, _, _, _, _}} ->
        content_length(socket, length)

      {:ok, :http_eoh} ->
        length
    end
  end
end
