defmodule FLAMEK8sBackend.BootProgress do
  @moduledoc false
  # How far a runner's boot got, and so which `BootError` phase a failure reported by the
  # runner pod's watch belongs to. Pure: the boot passes its clock readings in.

  alias FLAMEK8sBackend.BootError

  @enforce_keys [:pod, :parent_node]
  defstruct [:pod, :parent_node, timings: %{}]

  @typedoc "A step of the boot; its time is in ms since `remote_boot/1` started."
  @type milestone :: :created | :running | :remote_up

  @typedoc """
    * `:pod` - `"namespace/name"` of the runner pod
    * `:parent_node` - the node the runner must connect to
    * `:timings` - the milestones reached so far
  """
  @type t :: %__MODULE__{
          pod: String.t(),
          parent_node: node(),
          timings: %{optional(milestone()) => non_neg_integer()}
        }

  @typedoc "A final answer of the pod's watch (`FLAMEK8sBackend.Kube.await_pod/4`)."
  @type watch_result ::
          {:failed, term()}
          | {:deleted, String.t()}
          | {:timeout,
             %{
               phase: :scheduling | :scaling_up | :container_start | :running,
               waited_ms: non_neg_integer(),
               detail: String.t() | nil
             }}
          | {:error, term()}

  @doc "A boot of the runner pod `pod` (`\"namespace/name\"`) for the parent `parent_node`."
  @spec new(String.t(), node()) :: t()
  def new(pod, parent_node), do: %__MODULE__{pod: pod, parent_node: parent_node}

  @doc "Records that `milestone` was reached `ms` after the boot started."
  @spec reached(t(), milestone(), non_neg_integer()) :: t()
  def reached(%__MODULE__{} = progress, milestone, ms),
    do: %{progress | timings: Map.put(progress.timings, milestone, ms)}

  @doc "Whether the watch has seen the pod running."
  @spec running?(t()) :: boolean()
  def running?(%__MODULE__{timings: timings}), do: Map.has_key?(timings, :running)

  @doc """
  The error for a final answer of the pod's watch, in the phase it belongs to. Once the pod
  ran, what goes wrong is the runner VM failing to come up: `:remote_up`. A pod no node can
  take (`{:unschedulable, _}`, or `{:no_scale_up, _}`: no node an autoscaler can add would) is
  `:scheduling`; a timeout while an autoscaler was adding a node for it is `:scaling_up`.

      iex> progress = FLAMEK8sBackend.BootProgress.new("prod/web-1-flame-x7k2p", :"web@10.0.0.1")
      iex> error = FLAMEK8sBackend.BootProgress.error(progress, {:failed, {:container_exited, %{exit_code: 137}}})
      iex> error.phase
      :container_start
      iex> progress = FLAMEK8sBackend.BootProgress.reached(progress, :running, 40)
      iex> FLAMEK8sBackend.BootProgress.error(progress, {:failed, {:container_exited, %{exit_code: 137}}}).phase
      :remote_up
  """
  @spec error(t(), watch_result()) :: BootError.t()
  def error(%__MODULE__{} = progress, {:failed, reason}) do
    phase =
      cond do
        match?({:unschedulable, _}, reason) -> :scheduling
        match?({:no_scale_up, _}, reason) -> :scheduling
        running?(progress) -> :remote_up
        true -> :container_start
      end

    boot_error(progress, phase, reason)
  end

  def error(%__MODULE__{} = progress, {:timeout, %{phase: phase} = info}),
    do: timeout_error(progress, phase, Map.delete(info, :phase))

  def error(%__MODULE__{} = progress, {:deleted, _name} = reason) do
    phase = if running?(progress), do: :remote_up, else: :container_start
    boot_error(progress, phase, reason)
  end

  # The watch itself was refused (e.g. RBAC): before the pod ran, nothing was known of it yet.
  def error(%__MODULE__{} = progress, {:error, reason}) do
    phase = if running?(progress), do: :remote_up, else: :scheduling
    boot_error(progress, phase, reason)
  end

  @doc """
  The error when the watch never answered within `waited_ms` (its answer was lost): a timeout
  in the phase the boot was in.
  """
  @spec silent_watch_error(t(), non_neg_integer()) :: BootError.t()
  def silent_watch_error(%__MODULE__{} = progress, waited_ms) do
    phase = if running?(progress), do: :running, else: :container_start
    error(progress, {:timeout, %{phase: phase, waited_ms: waited_ms, detail: nil}})
  end

  # The pod ran, but the runner never said remote_up: the phase is what was awaited.
  defp timeout_error(progress, :running, info) do
    detail =
      info[:detail] ||
        "pod running, but the runner node never connected to #{progress.parent_node}"

    boot_error(progress, :remote_up, {:timeout, Map.put(info, :detail, detail)})
  end

  defp timeout_error(progress, phase, info), do: boot_error(progress, phase, {:timeout, info})

  defp boot_error(progress, phase, reason),
    do: %BootError{phase: phase, reason: reason, pod: progress.pod}
end
