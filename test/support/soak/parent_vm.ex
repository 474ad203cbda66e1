defmodule FLAMEK8sBackend.Test.Soak.ParentVM do
  @moduledoc """
  A FLAME parent as an `elixir` OS process of its own (this project's test build), for the
  soak's "parent VM SIGKILLed" boots: it boots a runner (`"boot"`, then stays up) or only runs
  `init/1`, whose sweep is the point (`"sweep"`, then exits), and says so on one stdout line.
  """

  @doc "Starts a parent VM that runs `what` (\"boot\" or \"sweep\") with backend `opts`; returns its port and OS pid."
  def start(opts, what) do
    elixir = System.find_executable("elixir")
    ebins = Path.wildcard(Path.join(Mix.Project.build_path(), "lib/*/ebin"))
    name = "soak_parent_#{System.unique_integer([:positive])}@127.0.0.1"
    cookie = Base.encode32(:crypto.strong_rand_bytes(10), padding: false)

    # The VM halts when its stdin (the port) closes, so none outlives the soak.
    code = """
    spawn(fn -> IO.read(:stdio, :eof); System.halt(0) end)
    {:ok, _} = Application.ensure_all_started(:flame_k8s_backend)
    opts = :erlang.binary_to_term(Base.decode64!(System.fetch_env!("SOAK_PARENT_OPTS")))
    case {System.fetch_env!("SOAK_PARENT_DO"), FLAMEK8sBackend.init(opts)} do
      {"sweep", {:ok, _}} -> IO.puts("SWEPT")
      {"boot", {:ok, state}} ->
        case FLAMEK8sBackend.remote_boot(state) do
          {:ok, _, state} -> IO.puts("BOOTED \#{state.runner_name} \#{state.runner_node_name}")
          {:error, e} -> IO.puts("FAILED " <> inspect(e.reason))
        end
        Process.sleep(:infinity)
      {_, {:error, e}} -> IO.puts("FAILED " <> inspect(e.reason))
    end
    """

    port =
      Port.open({:spawn_executable, elixir}, [
        :binary,
        :exit_status,
        {:line, 16_384},
        env: [
          {~c"SOAK_PARENT_OPTS", String.to_charlist(Base.encode64(:erlang.term_to_binary(opts)))},
          {~c"SOAK_PARENT_DO", String.to_charlist(what)}
        ],
        args:
          ["--name", name, "--cookie", cookie] ++
            Enum.flat_map(ebins, &["-pa", &1]) ++ ["-e", code]
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    {port, Integer.to_string(os_pid)}
  end

  @doc "Its next status line: BOOTED, FAILED or SWEPT."
  def line(port) do
    receive do
      {^port, {:data, {:eol, "BOOTED " <> _ = line}}} -> {:ok, line}
      {^port, {:data, {:eol, "FAILED " <> _ = line}}} -> {:ok, line}
      {^port, {:data, {:eol, "SWEPT"}}} -> {:ok, "SWEPT"}
      {^port, {:data, _}} -> line(port)
      {^port, {:exit_status, status}} -> {:error, "parent VM exited with status #{status}"}
    after
      120_000 -> {:error, "parent VM silent for 120 s"}
    end
  end

  @doc "Waits for the VM to exit (at most 30 s)."
  def await_exit(port) do
    receive do
      {^port, {:exit_status, _}} -> :ok
      {^port, {:data, _}} -> await_exit(port)
    after
      30_000 -> :timeout
    end
  end
end
