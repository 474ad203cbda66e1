defmodule FLAMEK8sBackend.Native do
  @moduledoc false
  # The NIF stubs, nothing else. The library is built by the project's own Mix compiler
  # (see mix.exs) into priv/native/. Use FLAMEK8sBackend.Kube, never this module directly.

  @on_load :load_nif

  @doc false
  def load_nif do
    path = library_path()

    case :erlang.load_nif(String.to_charlist(path), 0) do
      :ok ->
        :ok

      {:error, {reason, text}} ->
        # Loading must not fail the module: a runner node without the library can still run
        # FLAME work. The reason is kept and raised by the first NIF call.
        :persistent_term.put({__MODULE__, :load_error}, {path, reason, to_string(text)})
        :ok
    end
  end

  @doc false
  def library_path do
    priv =
      case :code.priv_dir(:flame_k8s_backend) do
        {:error, _} -> Path.expand("../../priv", __DIR__)
        dir -> to_string(dir)
      end

    Path.join([priv, "native", "libflame_k8s_native"])
  end

  @doc false
  def load_error, do: :persistent_term.get({__MODULE__, :load_error}, nil)

  # Every function that talks to the API server starts a task and returns {:ok, handle} at
  # once; the task sends {:flame_k8s, ref, reply} to the caller (see FLAMEK8sBackend.Kube).
  def connect(_opts, _ref), do: not_loaded()
  def client_info(_client), do: not_loaded()
  def open_watches(_client), do: not_loaded()
  def get_pod(_client, _namespace, _name, _ref), do: not_loaded()
  def list_pods(_client, _namespace, _label_selector, _ref), do: not_loaded()

  def create(_client, _kind, _namespace, _manifest, _queue_ms, _idempotent, _ref),
    do: not_loaded()

  def delete(_client, _kind, _namespace, _name, _grace_period_seconds, _ref), do: not_loaded()
  def request(_client, _method, _path, _body, _content_type, _ref), do: not_loaded()
  def await_pod(_client, _namespace, _name, _opts, _ref), do: not_loaded()
  def follow_pod(_client, _namespace, _name, _label_selector, _ref), do: not_loaded()
  def cancel(_handle), do: not_loaded()
  def live_tasks, do: not_loaded()
  def noop, do: not_loaded()

  defp not_loaded do
    message =
      case load_error() do
        {path, reason, text} ->
          "the flame_k8s_native NIF could not be loaded from #{path}.so (#{reason}): #{text}"

        nil ->
          "the flame_k8s_native NIF is not loaded"
      end

    :erlang.nif_error({:not_loaded, message})
  end
end
