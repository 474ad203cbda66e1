defmodule FlameDemo.Cli do
  @moduledoc """
  Output for callers outside the cluster: `bin/flame_demo rpc 'FlameDemo.Cli.print(FlameDemo.where())'`
  prints one line `FLAME_DEMO_RESULT <base64 of term_to_binary>`, whatever else is logged.
  """

  def print(term) do
    IO.puts("FLAME_DEMO_RESULT " <> Base.encode64(:erlang.term_to_binary(term)))
  end
end
