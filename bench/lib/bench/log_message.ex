defmodule Bench.LogMessage do
  @moduledoc "The text of a `:logger` event's message, whatever form it was logged in."

  @doc "The message as a string; `\"\"` for a form it cannot render."
  def text(%{msg: msg}) do
    case msg do
      {:string, s} -> IO.chardata_to_string(s)
      {:report, report} -> inspect(report)
      {format, args} when is_list(args) -> IO.chardata_to_string(:io_lib.format(format, args))
      _ -> ""
    end
  rescue
    _ -> ""
  end
end
