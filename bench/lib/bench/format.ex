defmodule Bench.Format do
  @moduledoc "Table cells: durations are kept in µs and shown in ms or s; `nil` shows as `-`."

  def ms(nil), do: "-"
  def ms(us) when is_number(us), do: :erlang.float_to_binary(us / 1000, decimals: 1)

  def s(nil), do: "-"
  def s(us) when is_number(us), do: :erlang.float_to_binary(us / 1_000_000, decimals: 2)

  def num(nil), do: "-"
  def num(x) when is_integer(x), do: Integer.to_string(x)
  def num(x) when is_float(x), do: :erlang.float_to_binary(x, decimals: 2)
end
