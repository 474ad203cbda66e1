defmodule FLAMEK8sBackend.RunnerName do
  @moduledoc false
  # The name of a new runner's pod and secret: the parent pod's name, "-flame-" and a random
  # suffix. The backend chooses it (rather than letting Kubernetes' generateName do so) before
  # anything is created, so that even a create whose answer was lost is known to the reaper.

  # 40 + "-flame-" + 8 stays within the 63 characters of a label value and a hostname.
  @base_length 40

  @doc """
  A new runner name for `parent_pod`.

      iex> name = FLAMEK8sBackend.RunnerName.new(%{"metadata" => %{"name" => "web-7d9f8b-x2k9p"}})
      iex> name =~ ~r/^web-7d9f8b-x2k9p-flame-[a-z2-7]{8}$/
      true
  """
  @spec new(map()) :: String.t()
  def new(parent_pod) do
    parent_pod
    |> get_in(["metadata", "name"])
    |> String.slice(0, @base_length)
    |> String.trim_trailing("-")
    |> with_suffix()
  end

  @doc """
  Another runner name of the parent that `runner_name` (one of `new/1`) belongs to: for a pod
  that replaces that runner's.

      iex> name = FLAMEK8sBackend.RunnerName.replacement("web-7d9f8b-x2k9p-flame-abcdefgh")
      iex> name =~ ~r/^web-7d9f8b-x2k9p-flame-[a-z2-7]{8}$/ and name != "web-7d9f8b-x2k9p-flame-abcdefgh"
      true
  """
  @spec replacement(String.t()) :: String.t()
  def replacement(runner_name),
    do: runner_name |> String.replace(~r/-flame-[a-z2-7]{8}$/, "") |> with_suffix()

  defp with_suffix(base) do
    suffix = :crypto.strong_rand_bytes(5) |> Base.encode32(case: :lower, padding: false)
    "#{base}-flame-#{suffix}"
  end
end
