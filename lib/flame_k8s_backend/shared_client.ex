defmodule FLAMEK8sBackend.SharedClient do
  @moduledoc false
  # One Kubernetes client per connection settings for the whole VM: the runners then share its
  # connection pool (no TLS handshake per boot), and the NIF's memory stays that of one client.
  # Clients are kept in :persistent_term: written once per settings, read on every init/1.
  # Concurrent first connects per settings share one (FLAMEK8sBackend.SingleFlight), so
  # concurrent first boots share one client instead of each connecting and all but the last
  # being lost.

  alias FLAMEK8sBackend.{BootError, Kube, Options, SingleFlight}

  @doc """
  The VM's client for the connection settings in `opts`, connected on first use. Errors are
  `BootError`s of the `:connect` phase.
  """
  @spec get(Options.t()) :: {:ok, Kube.t()} | {:error, BootError.t()}
  def get(%Options{} = opts) do
    settings = connect_opts(opts)
    key = {__MODULE__, settings}

    case :persistent_term.get(key, nil) do
      %Kube{} = kube -> {:ok, kube}
      nil -> SingleFlight.run(key, fn -> connect_once(key, settings) end)
    end
  end

  # An earlier run may have connected just before this one started.
  defp connect_once(key, settings) do
    case :persistent_term.get(key, nil) do
      %Kube{} = kube -> {:ok, kube}
      nil -> connect(key, settings)
    end
  end

  @doc """
  The `FLAMEK8sBackend.Kube.connect/1` options that the backend's options stand for.

      iex> opts = FLAMEK8sBackend.Options.validate!(context: "kind-flame")
      iex> FLAMEK8sBackend.SharedClient.connect_opts(opts)
      [request_timeout: 15000, context: "kind-flame", mode: :kubeconfig]
  """
  @spec connect_opts(Options.t()) :: keyword()
  def connect_opts(%Options{} = opts) do
    [request_timeout: opts.request_timeout] ++
      if(opts.kubeconfig, do: [kubeconfig: opts.kubeconfig], else: []) ++
      if opts.context, do: [context: opts.context, mode: :kubeconfig], else: []
  end

  defp connect(key, settings) do
    case Kube.connect(settings) do
      {:ok, kube} ->
        :persistent_term.put(key, kube)
        {:ok, kube}

      {:error, reason} ->
        {:error, %BootError{phase: :connect, reason: reason}}
    end
  rescue
    # The NIF failed to load (its stub raises): say so instead of crashing the Runner.
    error in ErlangError ->
      {:error, %BootError{phase: :connect, reason: {:nif_not_loaded, Exception.message(error)}}}
  end
end
