defmodule FLAMEK8sBackend.WarnOnce do
  @moduledoc false
  # A warning about what stays true until someone changes the cluster (a verb missing from the
  # parent's Role): logged once per VM and key, not on every boot.
  require Logger

  @doc "Logs `message.()` as a warning unless a warning with `key` was logged before."
  @spec warn(term(), (-> String.t())) :: :ok
  def warn(key, message) do
    if not warned?(key) do
      :persistent_term.put({__MODULE__, key}, true)
      Logger.warning(message.())
    end

    :ok
  end

  @doc "Whether a warning with `key` was logged."
  @spec warned?(term()) :: boolean()
  def warned?(key), do: :persistent_term.get({__MODULE__, key}, false)

  @doc "Forgets `key` (tests)."
  @spec forget(term()) :: :ok
  def forget(key) do
    _ = :persistent_term.erase({__MODULE__, key})
    :ok
  end
end
