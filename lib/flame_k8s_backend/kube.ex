defmodule FLAMEK8sBackend.Kube do
  @moduledoc false
  # The Kubernetes API as the backend uses it: a small, typed face over the Rust NIF (kube-rs
  # on a Tokio runtime owned by the NIF). Internal: its callers are this library's modules,
  # which pass values FLAMEK8sBackend.Options has validated (or constants). Nothing here checks
  # arguments again: the NIF decodes them and refuses, as an ArgumentError, what it could not
  # send without harm (names and selectors no URL can hold, terms too large to copy), so a bad
  # argument raises but never brings the VM down (test/unit/hostile_input_test.exs).
  #
  # No BEAM scheduler waits on the network: each request is a task on the NIF's runtime,
  # bounded by the connection's request timeout, that answers the caller with one message;
  # the functions here wait for it, so they are synchronous. The task is cancelled if the
  # caller exits or stops waiting. `await_pod/4` is such a task too, whose messages the
  # caller receives itself.
  #
  # Results are `{:ok, value}` (or `:ok`) or `{:error, error()}`; the reasons are documented
  # for users in FLAMEK8sBackend.BootError (a boot's `:reason`) and guides/troubleshooting.md.
  # `{:outcome_unknown, %{reason: reason, settled_at: ms}}` comes only from the creates: the
  # create was sent and may still take effect until `settled_at`
  # (`System.monotonic_time(:millisecond)`): until then a read or delete that finds nothing
  # proves nothing.

  alias FLAMEK8sBackend.{Native, Options}

  @enforce_keys [:resource, :server]
  defstruct [:resource, :server, :default_namespace, :request_timeout, :create_settle_ms]

  @typedoc "A connection to one API server. `inspect/1` never shows credentials."
  @type t :: %__MODULE__{
          resource: reference(),
          server: String.t(),
          default_namespace: String.t() | nil,
          request_timeout: pos_integer(),
          create_settle_ms: pos_integer()
        }

  @type error ::
          {:api, non_neg_integer(), String.t(), String.t()}
          | {:connect, String.t()}
          | {:timeout, non_neg_integer()}
          | {:invalid_manifest, String.t()}
          | {:config, String.t()}
          | {:decode, String.t()}
          | {:internal, String.t()}
          | {:outcome_unknown, %{reason: error(), settled_at: integer()}}

  @type manifest :: %{optional(String.t() | atom()) => term()}
  @type pod :: %{String.t() => term()}

  @typedoc "A running await: its messages are tagged with `ref`; `handle` cancels it."
  @type await :: %{ref: reference(), handle: reference()}

  # How long past the request timeout a caller waits for the task's reply (see call/3).
  @reply_margin 2_000
  # The longest wait `receive ... after` accepts (a create waits for its queue and request).
  @max_receive_after 4_294_967_295
  @methods %{
    "GET" => :get,
    "POST" => :post,
    "PUT" => :put,
    "PATCH" => :patch,
    "DELETE" => :delete
  }

  @doc """
  Connects to an API server; nothing is sent until the first request.

  Options: `:mode` (`:in_cluster`, `:kubeconfig`, `:explicit` or `:auto`, the default: the
  service account inside a pod unless a `:kubeconfig` is given, else the kubeconfig),
  `:kubeconfig` (default `$KUBECONFIG`, then `~/.kube/config`), `:context`, `:url`,
  `:ca_cert_pem`, `:token`, `:insecure_skip_tls_verify`, `:request_timeout` (ms, default the
  backend's `:request_timeout`) and `:max_concurrent_creates` (creates in flight at once; the
  NIF's default otherwise). Credentials never go over plain `http://` except to a loopback
  address (`{:error, {:config, message}}`). A token read from a file is read again every
  minute, and at once on a 401.

      {:ok, kube} = FLAMEK8sBackend.Kube.connect(kubeconfig: "/tmp/kubeconfig", context: "kind-flame")
  """
  @spec connect(keyword()) :: {:ok, t()} | {:error, error()}
  def connect(opts \\ []) do
    native_opts =
      %{
        mode: mode(opts),
        kubeconfig: with(path when is_binary(path) <- opts[:kubeconfig], do: Path.expand(path)),
        context: opts[:context],
        url: opts[:url],
        ca_cert_pem: opts[:ca_cert_pem],
        token: opts[:token],
        insecure_skip_tls_verify: Keyword.get(opts, :insecure_skip_tls_verify, false),
        request_timeout_ms: Keyword.get(opts, :request_timeout, %Options{}.request_timeout)
      }
      |> then(fn map ->
        # Absent, the NIF uses its own default.
        case Keyword.fetch(opts, :max_concurrent_creates) do
          {:ok, n} -> Map.put(map, :max_concurrent_creates, n)
          :error -> map
        end
      end)

    with {:ok, resource} <-
           call(native_opts.request_timeout_ms, &Native.connect(native_opts, &1)) do
      info = Native.client_info(resource)

      {:ok,
       %__MODULE__{
         resource: resource,
         server: info.server,
         default_namespace: info.default_namespace,
         request_timeout: info.request_timeout_ms,
         create_settle_ms: info.create_settle_ms
       }}
    end
  end

  defp mode(opts) do
    case Keyword.get(opts, :mode, :auto) do
      :auto ->
        cond do
          Keyword.has_key?(opts, :url) -> :explicit
          Keyword.has_key?(opts, :kubeconfig) -> :kubeconfig
          System.get_env("KUBERNETES_SERVICE_HOST") not in [nil, ""] -> :in_cluster
          true -> :kubeconfig
        end

      mode ->
        mode
    end
  end

  @doc "Reads one pod."
  @spec get_pod(t(), String.t(), String.t()) :: {:ok, pod()} | {:error, error()}
  def get_pod(%__MODULE__{} = kube, namespace, name),
    do: call(kube.request_timeout, &Native.get_pod(kube.resource, namespace, name, &1))

  @doc """
  Creates a pod from a manifest map (string or atom keys) in `namespace`.

  Options: `:queue_timeout` (ms the create may wait for one of the connection's create slots
  before it is sent; default the request timeout; a create still waiting then was never sent)
  and `:idempotent` (`true` when `metadata.name` was chosen for this object alone: the create
  is then sent again after an answer that leaves its outcome open, and `409 AlreadyExists`
  means it was created: `{:ok, :already_exists}`). The server is told the request timeout as
  its own `timeout`.
  """
  @spec create_pod(t(), String.t(), manifest(), keyword()) ::
          {:ok, pod() | :already_exists} | {:error, error()}
  def create_pod(%__MODULE__{} = kube, namespace, manifest, opts \\ []),
    do: create(kube, :pod, namespace, manifest, opts)

  @doc """
  Deletes a pod with background propagation; one already gone counts as deleted. Option:
  `:grace_period` (seconds; default the pod's own).
  """
  @spec delete_pod(t(), String.t(), String.t(), keyword()) :: :ok | {:error, error()}
  def delete_pod(%__MODULE__{} = kube, namespace, name, opts \\ []),
    do: delete(kube, :pod, namespace, name, Keyword.get(opts, :grace_period))

  @doc "Lists the pods of a namespace; option `:label_selector`."
  @spec list_pods(t(), String.t(), keyword()) :: {:ok, [pod()]} | {:error, error()}
  def list_pods(%__MODULE__{} = kube, namespace, opts \\ []) do
    selector = Keyword.get(opts, :label_selector, "")
    call(kube.request_timeout, &Native.list_pods(kube.resource, namespace, selector, &1))
  end

  @doc """
  Creates a secret; only its metadata comes back (secret values never travel back). Options
  and results as for `create_pod/4`.
  """
  @spec create_secret(t(), String.t(), manifest(), keyword()) ::
          {:ok, map() | :already_exists} | {:error, error()}
  def create_secret(%__MODULE__{} = kube, namespace, manifest, opts \\ []),
    do: create(kube, :secret, namespace, manifest, opts)

  @doc "Deletes a secret; one already gone counts as deleted."
  @spec delete_secret(t(), String.t(), String.t()) :: :ok | {:error, error()}
  def delete_secret(%__MODULE__{} = kube, namespace, name),
    do: delete(kube, :secret, namespace, name, nil)

  @doc """
  The monotonic time (ms) by which every create sent on this connection until now has
  settled (the request timeout plus 15 s for a write already handed to etcd): for a create
  whose answer never came back to its caller at all.

      iex> {:ok, kube} = FLAMEK8sBackend.Kube.connect(url: "https://127.0.0.1:1", request_timeout: 5_000)
      iex> FLAMEK8sBackend.Kube.create_settled_at(kube) - System.monotonic_time(:millisecond) in 19_000..20_000
      true
  """
  @spec create_settled_at(t()) :: integer()
  def create_settled_at(%__MODULE__{create_settle_ms: ms}) when is_integer(ms),
    do: System.monotonic_time(:millisecond) + ms

  defp create(kube, kind, namespace, manifest, opts) do
    queue = Keyword.get(opts, :queue_timeout, kube.request_timeout)
    idempotent = Keyword.get(opts, :idempotent, false)

    (kube.request_timeout + queue)
    |> call(
      &Native.create(kube.resource, kind, namespace, manifest, queue, idempotent, &1),
      fn waited -> {:error, unknown({:timeout, waited}, kube.create_settle_ms)} end
    )
    |> case do
      {:error, {:outcome_unknown, %{reason: reason, settle_ms: ms}}} ->
        {:error, unknown(reason, ms)}

      other ->
        other
    end
  end

  # The NIF says how long from now the create settles; callers get a point in time.
  defp unknown(reason, settle_ms),
    do:
      {:outcome_unknown,
       %{reason: reason, settled_at: System.monotonic_time(:millisecond) + settle_ms}}

  defp delete(kube, kind, namespace, name, grace),
    do:
      call(kube.request_timeout, &Native.delete(kube.resource, kind, namespace, name, grace, &1))

  @doc """
  Sends any request (`method` `"GET"`, `"POST"`, `"PUT"`, `"PATCH"` or `"DELETE"`, `path` an
  absolute path with an optional query) and decodes the JSON answer (`nil` for an empty body,
  a string for a `text/plain` one). Options: `:body` (a map, sent as JSON) and
  `:content_type` (default `application/json`; `application/merge-patch+json` for PATCH).
  A 429 is retried within the request timeout, a 503 or 504 only for GET, PUT and DELETE.

      {:ok, %{"kind" => "Namespace"}} =
        FLAMEK8sBackend.Kube.request(kube, "POST", "/api/v1/namespaces",
          body: %{"metadata" => %{"name" => "flame-test"}})
  """
  @spec request(t(), String.t(), String.t(), keyword()) :: {:ok, term()} | {:error, error()}
  def request(%__MODULE__{} = kube, method, path, opts \\ []) do
    method = Map.fetch!(@methods, method)
    body = Keyword.get(opts, :body)
    content_type = Keyword.get(opts, :content_type)

    call(
      kube.request_timeout,
      &Native.request(kube.resource, method, path, body, content_type, &1)
    )
  end

  @doc """
  Starts waiting for a pod until it is ready, fails, is deleted, or `:timeout` elapses.

  Returns at once. The caller later receives one final `{:flame_k8s, ref, result}` message
  (`ref` is `await.ref`), `result` being `{:ready, pod}`, `{:failed, reason}` (see
  `FLAMEK8sBackend.BootError`), `{:deleted, name}`, `{:disrupted, %{reason: reason, message:
  message}}` (Kubernetes is taking the pod away: a `DisruptionTarget` condition, or phase
  `Failed` with reason `Evicted`, `Preempting`, `NodeLost`, `NodeShutdown` or `Terminated`),
  `{:timeout, %{phase: :scheduling | :scaling_up | :container_start | :running, waited_ms: ms, detail: detail}}`
  or `{:error, reason}` (the watch itself was refused). With `report_ready: false`, an interim
  `{:flame_k8s, ref, {:running, pod}}` comes first, once, and the watch goes on reporting
  failures until it is cancelled or times out. The await ends when the caller exits, or with
  `cancel_await/1`.

  Options: `:timeout` (ms, required), `:unschedulable` (`:fail`, the default, reports an
  unschedulable pod at once; `:wait` keeps waiting, and watches the pod's Events from the
  first time it is seen Unschedulable until it is bound: an autoscaler's scale-up makes a
  timeout's phase `:scaling_up` with the autoscaler's message as `detail`, and its word that
  no node it can add would fit ends the await with `{:failed, {:no_scale_up, %{source:,
  message:, scheduler:}}}`; a refused Events watch changes nothing), `:report_ready` (default
  `true`) and
  `:label_selector`: all awaits of the connection with the same namespace and selector (one
  the pod matches) then share one watch (list, then watch), stopped with the last of them; a
  pod that watch has not shown within 5 s is read once: gone is `{:deleted, name}`, one the
  selector does not match is `{:error, {:config, message}}`.

      {:ok, await} = FLAMEK8sBackend.Kube.await_pod(kube, "default", "runner-x7k2p", timeout: 30_000)
  """
  @spec await_pod(t(), String.t(), String.t(), keyword()) :: {:ok, await()} | {:error, error()}
  def await_pod(%__MODULE__{} = kube, namespace, name, opts) do
    ref = make_ref()

    opts = %{
      timeout_ms: Keyword.fetch!(opts, :timeout),
      unschedulable: Keyword.get(opts, :unschedulable, :fail),
      report_ready: Keyword.get(opts, :report_ready, true),
      label_selector: Keyword.get(opts, :label_selector)
    }

    with {:ok, handle} <- Native.await_pod(kube.resource, namespace, name, opts, ref) do
      {:ok, %{ref: ref, handle: handle}}
    end
  end

  @doc """
  Follows a booted runner's pod through the connection's shared watch of `namespace` and
  `label_selector` (the one its boot's await used; the subscription is made before this
  returns, so cancelling that await afterwards keeps the watch open, and following sends no
  request of its own).

  Returns at once. The caller then receives `{:flame_k8s, ref, change}` for each change, at
  most once each, in the order the watch shows them:

    * `{:disruption, %{reason: reason, message: message}}` - a `DisruptionTarget` condition
      (`"PreemptionByScheduler"`, `"EvictionByEvictionAPI"`, `"DeletionByTaintManager"`,
      `"DeletionByPodGC"`, `"TerminationByKubelet"`)
    * `:deleting` - the pod is being deleted
    * `{:terminated, %{reason: reason, exit_code: code | nil, message: message}}` - a container
      terminated or the pod reached `Failed`/`Succeeded`: the pod's reason (`"Evicted"`, ...),
      else the container's (`"OOMKilled"`, `"Error"`, `"Completed"`)

  and finally `{:flame_k8s, ref, :gone}`, or `{:flame_k8s, ref, {:error, reason}}` when the
  watch ended. The follow ends with the caller, or with `cancel_await/1`.
  """
  @spec follow_pod(t(), String.t(), String.t(), String.t()) :: {:ok, await()} | {:error, error()}
  def follow_pod(%__MODULE__{} = kube, namespace, name, label_selector) do
    ref = make_ref()

    with {:ok, handle} <- Native.follow_pod(kube.resource, namespace, name, label_selector, ref) do
      {:ok, %{ref: ref, handle: handle}}
    end
  end

  @doc """
  Stops an await started by `await_pod/4`, or a follow started by `follow_pod/4`. Idempotent.
  A message the task was already sending may still arrive just after: flush
  `{:flame_k8s, await.ref, _}` if that matters.
  """
  @spec cancel_await(await()) :: :ok
  def cancel_await(%{handle: handle}) do
    _ = Native.cancel(handle)
    :ok
  end

  @doc """
  The number of tasks (requests, awaits, shared watches) alive in the NIF's runtime, for the
  whole VM: 0 again once nothing is in flight (a task that just answered may still count for a
  moment). Reads two counters.

      iex> is_integer(FLAMEK8sBackend.Kube.live_tasks())
      true
  """
  @spec live_tasks() :: non_neg_integer()
  def live_tasks, do: Native.live_tasks()

  @doc """
  Pod watches this connection has open for its awaits: one per namespace and selector in use,
  plus one per pod awaited without a selector; 0 once no await is left.
  """
  @spec open_watches(t()) :: non_neg_integer()
  def open_watches(%__MODULE__{} = kube), do: Native.open_watches(kube.resource)

  ## Calls

  # Starts a request task with a fresh reference and waits for its one reply. The task bounds
  # itself by the request timeout and then answers {:timeout, ms} on its own; the margin only
  # matters if the NIF's runtime were too busy to answer in time. Giving up cancels the task,
  # so nothing keeps working for a caller that stopped waiting (a caller that exits is covered
  # by the NIF's monitor).
  #
  # `lost.(timeout)` is the result when no reply came (`{:error, {:timeout, ms}}` by default).
  defp call(timeout, start, lost \\ &{:error, {:timeout, &1}}) do
    ref = make_ref()

    case start.(ref) do
      {:ok, handle} ->
        receive do
          {:flame_k8s, ^ref, reply} -> reply
        after
          min(timeout + @reply_margin, @max_receive_after) -> give_up(handle, ref, timeout, lost)
        end

      {:error, _} = error ->
        error
    end
  end

  # The NIF decides atomically whether the cancel or the task's reply came first, so no reply
  # is left behind in the caller's mailbox: if the task got there first, its reply is the
  # answer after all (the pod may exist).
  defp give_up(handle, ref, timeout, lost) do
    case Native.cancel(handle) do
      :ok ->
        lost.(timeout)

      :sent ->
        receive do
          {:flame_k8s, ^ref, reply} -> reply
        after
          @reply_margin -> lost.(timeout)
        end
    end
  end

  defimpl Inspect do
    def inspect(kube, _opts) do
      ns = if kube.default_namespace, do: " namespace=#{kube.default_namespace}", else: ""
      "#FLAMEK8sBackend.Kube<#{kube.server}#{ns}>"
    end
  end
end
