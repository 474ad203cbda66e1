defmodule FlameDemo do
  @moduledoc """
  What the kind tests run in the parent pod, through `bin/flame_demo rpc`. The closures are
  defined here, in compiled code, so the runner (the same release) has them too.
  """

  @doc "Runs a FLAME call and says where the caller and the function ran."
  def where do
    runner =
      FLAME.call(FlameDemo.Runner, fn ->
        %{node: node(), pod: System.get_env("POD_NAME"), pod_ip: System.get_env("POD_IP")}
      end)

    %{parent: %{node: node(), pod: System.get_env("POD_NAME")}, runner: runner}
  end

  @doc "A computation on a runner."
  def square(x), do: FLAME.call(FlameDemo.Runner, fn -> x * x end)

  @doc """
  A call on the pool whose image cannot be pulled. Returns `{:error, message}` with the
  backend's `FLAMEK8sBackend.BootError` message as soon as a boot has failed, or
  `{:error, {:no_boot_failure, reason}}` if none was seen within `timeout` ms.
  """
  def bad_image_call(timeout \\ 90_000) do
    FlameDemo.BootFailures.clear()
    deadline = System.monotonic_time(:millisecond) + timeout

    {pid, ref} =
      spawn_monitor(fn ->
        FLAME.call(FlameDemo.BadImageRunner, fn -> :unreachable end, timeout: timeout)
      end)

    await_boot_failure(pid, ref, deadline)
  end

  defp await_boot_failure(pid, ref, deadline) do
    case FlameDemo.BootFailures.last() do
      nil ->
        receive do
          {:DOWN, ^ref, :process, ^pid, reason} -> describe(reason)
        after
          200 ->
            if System.monotonic_time(:millisecond) > deadline do
              Process.exit(pid, :kill)
              {:error, {:no_boot_failure, :timeout}}
            else
              await_boot_failure(pid, ref, deadline)
            end
        end

      reason ->
        Process.demonitor(ref, [:flush])
        Process.exit(pid, :kill)
        describe(reason)
    end
  end

  defp describe(reason) do
    case find_boot_error(reason) do
      %FLAMEK8sBackend.BootError{} = error -> {:error, Exception.message(error)}
      nil -> {:error, {:no_boot_failure, reason}}
    end
  end

  # FLAME wraps the backend's error in exit reasons whose shape differs between versions.
  defp find_boot_error(%FLAMEK8sBackend.BootError{} = error), do: error

  defp find_boot_error(tuple) when is_tuple(tuple),
    do: tuple |> Tuple.to_list() |> find_boot_error()

  defp find_boot_error(list) when is_list(list), do: Enum.find_value(list, &find_boot_error/1)

  defp find_boot_error(%{} = map) when not is_struct(map),
    do: map |> Map.values() |> find_boot_error()

  defp find_boot_error(_), do: nil
end
