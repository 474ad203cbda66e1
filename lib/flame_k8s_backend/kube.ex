defmodule FLAMEK8sBackend.Kube do
  @moduledoc """
  The Kubernetes API as the backend uses it: a small, typed Elixir face over the Rust NIF
  (kube-rs on a Tokio runtime owned by the NIF).

  No BEAM scheduler, normal or dirty, waits on the network. Each request is a task on the
  NIF's Tokio runtime, bounded by the connection's `:request_timeout`: the NIF returns at
  once and the task answers the calling process with one message. The functions here wait for
  that message, so they are synchronous for their callers. The task is cancelled if the
  caller exits, and if the reply does not come within the request timeout plus a margin
  (then the result is `{:error, {:timeout, ms}}`). Waiting for a pod (`await_pod/4`) is such a
  task too, whose messages the caller receives itself.

  ## Results

  Every function returns `{:ok, value}` (or `:ok`) or `{:error, reason}`, where `reason` is one of

    * `{:api, status, reason, message}` - the API server answered with an error status; the
      message is the server's own (a 403 names the verb and the resource)
    * `{:connect, message}` - the server could not be reached
    * `{:timeout, ms}` - no answer within the request timeout
    * `{:invalid_manifest, message}` - the manifest could not be turned into the resource,
      the message names the offending path; also a manifest or body of more than 1,000,000
      values (a subterm shared by reference counts each time it occurs, as copying it would)
    * `{:config, message}` - the connection options or credentials are unusable (a token file
      that cannot be read, a token no HTTP header can hold)
    * `{:decode, message}` - the server's answer was not what Kubernetes sends
    * `{:internal, message}` - a bug in this library (e.g. a caught panic); please report it
    * `{:outcome_unknown, %{reason: reason, settled_at: ms}}` - only from `create_pod/4` and
      `create_secret/4`: the create was sent and may still take effect, though no answer says
      so. `reason` is one of the above, what the last attempt got: `{:timeout, ms}`, a
      `{:connect, message}` after the request went out, `{:api, status, _, _}` with status
      500, 502, 503 or 504, or any error after an earlier attempt that got one of those. The
      server gives it up by `settled_at` (a `System.monotonic_time(:millisecond)`): until then
      a read or a delete that finds nothing does not prove that the object will not appear;
      after it, it does. See `create_settled_at/1`.

  ## Arguments

  Arguments are validated here, once, before anything reaches the NIF: a bad one raises
  `ArgumentError` naming the argument or option as you wrote it. The bad value is shown within
  bounds (a few elements, a short excerpt of a string, the size of a big integer); a value that
  may hold a secret (an option list, a manifest, a body, the token) is never shown, only its
  type. Namespaces and names must be Kubernetes names (letters, digits, `-`, `.`, `_`, `:`;
  at most 253 characters), since they go into the request's URL as they are; a label
  selector is at most 16 KiB.

  ## Example

      {:ok, kube} = FLAMEK8sBackend.Kube.connect(kubeconfig: "~/.kube/config")
      {:ok, pod} = FLAMEK8sBackend.Kube.get_pod(kube, "default", "my-app-5f7d8c-abcde")
      pod["status"]["podIP"]
      #=> "10.244.0.12"
  """

  alias FLAMEK8sBackend.Native

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

  @connect_keys [
    :mode,
    :kubeconfig,
    :context,
    :url,
    :ca_cert_pem,
    :token,
    :insecure_skip_tls_verify,
    :request_timeout,
    :max_concurrent_creates
  ]
  @default_request_timeout 15_000
  # Why 32: see DEFAULT_MAX_CONCURRENT_CREATES in native/flame_k8s_native/src/client.rs.
  @default_max_concurrent_creates 32
  # How long past the request timeout a caller waits for the task's reply (see call/2).
  @reply_margin 2_000
  @max_timeout 4_000_000_000
  @max_u32 4_294_967_295
  @max_selector 16_384
  @methods %{
    "GET" => :get,
    "POST" => :post,
    "PUT" => :put,
    "PATCH" => :patch,
    "DELETE" => :delete
  }

  @doc """
  Connects to an API server. Nothing is sent to the server until the first request.

  Options:

    * `:mode` - `:in_cluster`, `:kubeconfig`, `:explicit` or `:auto` (default). `:auto` uses the
      pod's service account when `KUBERNETES_SERVICE_HOST` is set and no `:kubeconfig` is given,
      else the kubeconfig; inside a pod a stray kubeconfig is never picked unless asked for.
    * `:kubeconfig` - path of a kubeconfig file (default: `$KUBECONFIG`, then `~/.kube/config`)
    * `:context` - kubeconfig context (default: the current context)
    * `:url`, `:ca_cert_pem`, `:token` - explicit server URL, CA certificate (PEM) and bearer
      token. A token (or any credential, from a kubeconfig too) is never sent over plain
      `http://`, except to a loopback address (`127.0.0.1`, `[::1]`): connecting so is
      `{:error, {:config, message}}` naming the URL
    * `:insecure_skip_tls_verify` - default `false`
    * `:request_timeout` - milliseconds per request, default #{@default_request_timeout}
    * `:max_concurrent_creates` - creates (`create_pod/4`, `create_secret/4`) in flight at
      once on this connection, default #{@default_max_concurrent_creates}. More wait for a slot
      (up to their `:queue_timeout`; the request timeout starts once the create is sent), so a
      burst of boots reaches the API server as a steady stream, over a few reused
      connections, instead of all at once. A create the server
      pushes back (429, or 503/504) is retried after its `Retry-After` while the request
      timeout allows, holding its slot; when the wait would end past the timeout, the server's
      answer is returned at once (`{:api, 429, "TooManyRequests", message}`). A create that
      may have been carried out already (503, 504) is sent again only when it is idempotent
      (see `create_pod/4`).

  A token read from a file (the in-cluster service account token, a kubeconfig's `tokenFile`)
  is read again every minute, and at once when the API server refuses it (401): if the file
  holds a new token by then (the kubelet rewrites it on rotation), the request is sent once
  more with it, so a rotated and revoked token never needs a reconnect.

  ## Examples

      {:ok, kube} = FLAMEK8sBackend.Kube.connect(mode: :in_cluster)
      {:ok, kube} = FLAMEK8sBackend.Kube.connect(kubeconfig: "/tmp/kubeconfig", context: "kind-flame")
      {:error, {:config, "in-cluster config: " <> _}} = FLAMEK8sBackend.Kube.connect(mode: :in_cluster)
  """
  @spec connect(keyword()) :: {:ok, t()} | {:error, error()}
  def connect(opts \\ []) do
    opts = validate_keyword!(opts, @connect_keys, "connect options")

    native_opts = %{
      mode: mode!(opts),
      kubeconfig: optional_path!(opts, :kubeconfig),
      context: optional_string!(opts, :context),
      url: optional_string!(opts, :url),
      ca_cert_pem: optional_string!(opts, :ca_cert_pem),
      token: optional_string!(opts, :token),
      insecure_skip_tls_verify: boolean!(opts, :insecure_skip_tls_verify, false),
      request_timeout_ms: timeout!(opts, :request_timeout, @default_request_timeout),
      max_concurrent_creates: max_concurrent_creates!(opts)
    }

    if native_opts.mode == :explicit and is_nil(native_opts.url) do
      raise ArgumentError, "connect options: mode :explicit needs :url"
    end

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

  @doc """
  Reads one pod.

      {:ok, %{"metadata" => %{"name" => "web-0"}}} = FLAMEK8sBackend.Kube.get_pod(kube, "default", "web-0")
      {:error, {:api, 404, "NotFound", _}} = FLAMEK8sBackend.Kube.get_pod(kube, "default", "nope")
  """
  @spec get_pod(t(), String.t(), String.t()) :: {:ok, pod()} | {:error, error()}
  def get_pod(%__MODULE__{} = kube, namespace, name) do
    namespace = name!(namespace, "namespace")
    name = name!(name, "name")
    call(kube.request_timeout, &Native.get_pod(kube.resource, namespace, name, &1))
  end

  @doc """
  Creates a pod from a manifest map (string or atom keys) in `namespace`.

  Options:

    * `:queue_timeout` - ms the create may wait for one of the connection's create slots (see
      `:max_concurrent_creates` in `connect/1`) before it is sent; default: the request
      timeout. A create still waiting then is `{:error, {:timeout, ms}}` and was never sent.
    * `:idempotent` - `true` when the manifest's `metadata.name` was chosen for this object
      alone (with a random part, say), so that sending the create again is harmless; default
      `false`, and it needs a `metadata.name` (not `generateName`). The create is then sent
      again after an answer that leaves its outcome open (503, 504, a connection lost after
      it went out), and `409 AlreadyExists` means it (or an earlier attempt whose answer was
      lost) created the object: `{:ok, :already_exists}`.

  The create is sent with the request timeout as its server-side `timeout`, so the API server
  gives it up when the client does. One that went out and may still take effect is
  `{:error, {:outcome_unknown, %{reason: reason, settled_at: ms}}}` (see "Results" above).

      manifest = %{"metadata" => %{"generateName" => "runner-"},
                   "spec" => %{"containers" => [%{"name" => "app", "image" => "app:1"}]}}
      {:ok, %{"metadata" => %{"name" => "runner-x7k2p"}}} = FLAMEK8sBackend.Kube.create_pod(kube, "default", manifest)
  """
  @spec create_pod(t(), String.t(), manifest(), keyword()) ::
          {:ok, pod() | :already_exists} | {:error, error()}
  def create_pod(%__MODULE__{} = kube, namespace, manifest, opts \\ []),
    do: create(kube, :pod, namespace, manifest, opts)

  @doc """
  Deletes a pod with background propagation. A pod that is already gone counts as deleted.

  Options: `:grace_period` (seconds; default: the pod's own).

      :ok = FLAMEK8sBackend.Kube.delete_pod(kube, "default", "runner-x7k2p", grace_period: 0)
  """
  @spec delete_pod(t(), String.t(), String.t(), keyword()) :: :ok | {:error, error()}
  def delete_pod(%__MODULE__{} = kube, namespace, name, opts \\ []) do
    opts = validate_keyword!(opts, [:grace_period], "delete_pod options")

    grace =
      case Keyword.get(opts, :grace_period) do
        nil -> nil
        seconds when is_integer(seconds) and seconds in 0..@max_u32 -> seconds
        other -> raise ArgumentError, bad(":grace_period", "a non-negative integer", other)
      end

    delete(kube, :pod, namespace, name, grace)
  end

  @doc """
  Lists the pods of a namespace, optionally filtered by a label selector.

      {:ok, pods} = FLAMEK8sBackend.Kube.list_pods(kube, "default", label_selector: "app=web")
  """
  @spec list_pods(t(), String.t(), keyword()) :: {:ok, [pod()]} | {:error, error()}
  def list_pods(%__MODULE__{} = kube, namespace, opts \\ []) do
    opts = validate_keyword!(opts, [:label_selector], "list_pods options")
    selector = selector!(Keyword.get(opts, :label_selector, ""))

    namespace = name!(namespace, "namespace")
    call(kube.request_timeout, &Native.list_pods(kube.resource, namespace, selector, &1))
  end

  @doc """
  Creates a secret. Returns only the created secret's metadata: secret values never travel back.
  Options and results as for `create_pod/4` (`:queue_timeout`, `:idempotent`,
  `{:ok, :already_exists}`, `{:outcome_unknown, _}`).

      {:ok, %{"name" => "runner-cookie-abc"}} =
        FLAMEK8sBackend.Kube.create_secret(kube, "default", %{
          "metadata" => %{"generateName" => "runner-cookie-"},
          "stringData" => %{"RELEASE_COOKIE" => "..."}
        })
  """
  @spec create_secret(t(), String.t(), manifest(), keyword()) ::
          {:ok, map() | :already_exists} | {:error, error()}
  def create_secret(%__MODULE__{} = kube, namespace, manifest, opts \\ []),
    do: create(kube, :secret, namespace, manifest, opts)

  @doc """
  Deletes a secret. A secret that is already gone counts as deleted.

      :ok = FLAMEK8sBackend.Kube.delete_secret(kube, "default", "runner-cookie-abc")
  """
  @spec delete_secret(t(), String.t(), String.t()) :: :ok | {:error, error()}
  def delete_secret(%__MODULE__{} = kube, namespace, name),
    do: delete(kube, :secret, namespace, name, nil)

  @doc """
  The monotonic time (`System.monotonic_time(:millisecond)`) by which every create sent on
  this connection until now has settled: the API server can no longer carry it out (its
  deadline for the request, the request timeout, has passed, plus 15 s for a write it had
  already handed to etcd). For a create whose answer never came back to you at all (its caller
  was killed mid-request), as `settled_at` of `{:outcome_unknown, _}` is for one that
  returned: until then, a read or delete of its name that finds nothing is not final.

      iex> {:ok, kube} = FLAMEK8sBackend.Kube.connect(url: "https://127.0.0.1:1", request_timeout: 5_000)
      iex> FLAMEK8sBackend.Kube.create_settled_at(kube) - System.monotonic_time(:millisecond) in 19_000..20_000
      true
  """
  @spec create_settled_at(t()) :: integer()
  def create_settled_at(%__MODULE__{create_settle_ms: ms}) when is_integer(ms),
    do: System.monotonic_time(:millisecond) + ms

  defp create(kube, kind, namespace, manifest, opts) do
    opts = validate_keyword!(opts, [:queue_timeout, :idempotent], "create options")
    queue = timeout!(opts, :queue_timeout, kube.request_timeout, 0)
    idempotent = boolean!(opts, :idempotent, false)
    namespace = name!(namespace, "namespace")
    manifest = map!(manifest, "manifest")
    timeout = min(kube.request_timeout + queue, @max_timeout)

    timeout
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

  defp delete(kube, kind, namespace, name, grace) do
    namespace = name!(namespace, "namespace")
    name = name!(name, "name")

    call(
      kube.request_timeout,
      &Native.delete(kube.resource, kind, namespace, name, grace, &1)
    )
  end

  @doc """
  Sends any request to the API server and decodes the JSON answer (`nil` for an empty body).

  Options: `:body` (a map, sent as JSON) and `:content_type` (default `application/json`;
  `application/merge-patch+json` for PATCH).

  A request the server pushes back is retried within the request timeout: after 429 always,
  after 503 and 504 only for GET, PUT and DELETE. A POST or PATCH answered 503 or 504 may
  have been carried out already, so that answer is returned as it is (sending it again could
  do it twice, or fail with a 409 for what the first one created).

      {:ok, %{"kind" => "Namespace"}} =
        FLAMEK8sBackend.Kube.request(kube, "POST", "/api/v1/namespaces",
          body: %{"metadata" => %{"name" => "flame-test"}})
  """
  @spec request(t(), String.t(), String.t(), keyword()) :: {:ok, term()} | {:error, error()}
  def request(%__MODULE__{} = kube, method, path, opts \\ []) do
    opts = validate_keyword!(opts, [:body, :content_type], "request options")

    method =
      Map.get(@methods, method) ||
        raise ArgumentError, bad("method", ~s("GET", "POST", "PUT", "PATCH" or "DELETE"), method)

    path = path!(path)

    body =
      case Keyword.get(opts, :body) do
        nil -> nil
        map when is_map(map) -> map
        other -> raise ArgumentError, ":body: expected a map, got #{type_of(other)}"
      end

    content_type = optional_string!(opts, :content_type)

    call(
      kube.request_timeout,
      &Native.request(kube.resource, method, path, body, content_type, &1)
    )
  end

  @doc """
  Starts waiting for a pod until it is ready, fails, is deleted, or `:timeout` elapses.

  Returns at once. The caller later receives one final `{:flame_k8s, ref, result}` message,
  where `ref` is `await.ref` and `result` is one of

    * `{:ready, pod}` - Running, with a pod IP, every container started
    * `{:failed, reason}` - see `FLAMEK8sBackend.BootError` for the reasons
    * `{:deleted, name}` - the pod was deleted (or did not exist)
    * `{:timeout, %{phase: :scheduling | :container_start | :running, waited_ms: ms, detail: detail}}`
    * `{:error, reason}` - the watch itself was refused (e.g. RBAC)

  With `report_ready: false`, an interim `{:flame_k8s, ref, {:running, pod}}` comes first,
  once, when the pod is ready; the watch then goes on.

  The await ends by itself when the caller exits; `cancel_await/1` ends it earlier.

  ## One watch for many pods

  With `:label_selector` (a selector the pod matches, such as
  `FLAMEK8sBackend.RunnerPod.selector/1` of the parent), all awaits of this connection with the
  same namespace and selector share one watch of the API server: it is started by the first
  of them (list, then watch from the list's resourceVersion) and stopped when the last one
  ends, and each await gets the results of its own pod. A pod the watch has not shown within
  5 s of an await that came after the watch's list is read once: gone is `{:deleted, name}`,
  and a pod that exists but does not match the selector is
  `{:error, {:config, message}}` naming both (the watch would never show it). Without
  `:label_selector`, each await watches its pod alone.

  Options:

    * `:timeout` - ms, required
    * `:unschedulable` - `:fail` (default) reports an unschedulable pod at once; `:wait` keeps
      waiting (a cluster autoscaler may add a node) and names the scheduler's message if the
      timeout comes first
    * `:report_ready` - `true` (default). With `false` a ready pod is not reported: the watch
      goes on reporting failures (a container that exits after it started, deletion) until it
      is cancelled or times out, then with `phase: :running` if the pod was ready.
    * `:label_selector` - share the watch of the pods this selector matches (see above);
      default: none

      {:ok, await} = FLAMEK8sBackend.Kube.await_pod(kube, "default", "runner-x7k2p", timeout: 30_000)
      receive do
        {:flame_k8s, ref, {:ready, pod}} when ref == await.ref -> pod["status"]["podIP"]
      end
  """
  @spec await_pod(t(), String.t(), String.t(), keyword()) :: {:ok, await()} | {:error, error()}
  def await_pod(%__MODULE__{} = kube, namespace, name, opts) do
    opts =
      validate_keyword!(
        opts,
        [:timeout, :unschedulable, :report_ready, :label_selector],
        "await_pod options"
      )

    unless Keyword.has_key?(opts, :timeout) do
      raise ArgumentError, "await_pod options: :timeout is required"
    end

    timeout = timeout!(opts, :timeout, nil)

    unschedulable =
      case Keyword.get(opts, :unschedulable, :fail) do
        mode when mode in [:fail, :wait] -> mode
        other -> raise ArgumentError, bad(":unschedulable", ":fail or :wait", other)
      end

    report_ready = boolean!(opts, :report_ready, true)
    label_selector = if s = optional_string!(opts, :label_selector), do: selector!(s)
    ref = make_ref()

    opts = %{
      timeout_ms: timeout,
      unschedulable: unschedulable,
      report_ready: report_ready,
      label_selector: label_selector
    }

    namespace = name!(namespace, "namespace")
    name = name!(name, "name")

    with {:ok, handle} <- Native.await_pod(kube.resource, namespace, name, opts, ref) do
      {:ok, %{ref: ref, handle: handle}}
    end
  end

  @doc """
  Stops an await started by `await_pod/4`. Idempotent. A message the task was already
  sending may still arrive just after: flush `{:flame_k8s, await.ref, _}` if that matters.
  """
  @spec cancel_await(await()) :: :ok
  def cancel_await(%{handle: handle}) do
    _ = Native.cancel(handle)
    :ok
  end

  @doc """
  Diagnostics: the number of tasks (requests, awaits and shared watches) alive in the NIF's
  runtime, for the whole VM (every connection), e.g. as a gauge next to your own metrics.

  Every task ends with its request: once it answered, its caller exited or gave up, or its
  await was cancelled (a shared watch stops with its last await), so with no request or
  await in flight it comes back to 0. A count that keeps growing while the load does not is a
  leak worth reporting. Cheap:
  it reads two counters and sends nothing to the runtime. A task that has just answered may
  still be counted for a moment.

      iex> is_integer(FLAMEK8sBackend.Kube.live_tasks())
      true
  """
  @spec live_tasks() :: non_neg_integer()
  def live_tasks, do: Native.live_tasks()

  @doc """
  Number of pod watches this connection has open for its awaits: one per namespace and
  `:label_selector` in use, plus one per pod awaited without a selector. For diagnostics and
  tests: it is 0 once no await is left.
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
          timeout + @reply_margin -> give_up(handle, ref, timeout, lost)
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

  ## Validation (the one place arguments are checked for the caller; the NIF decodes their
  ## types, and refuses only what it could not send: see native/.../nif/args.rs)

  # An option list may hold a secret (the token, a request body): a bad one is described by
  # its shape (which element, of what type), never shown.
  defp validate_keyword!(opts, allowed, what) do
    if problem = keyword_problem(opts) do
      raise ArgumentError, "#{what}: expected a keyword list, got #{problem}"
    end

    # uniq: a key given twice is not unknown (the first one counts, as in Keyword.get/2).
    case Enum.uniq(Keyword.keys(opts)) -- allowed do
      [] ->
        opts

      unknown ->
        raise ArgumentError,
              "#{what}: unknown option(s) #{show(unknown)}, expected one of #{inspect(allowed)}"
    end
  end

  # Walks the list itself: Enum's functions raise FunctionClauseError on an improper list.
  defp keyword_problem(list) when is_list(list), do: keyword_problem(list, 1)
  defp keyword_problem(other), do: type_of(other)

  defp keyword_problem([], _index), do: nil

  defp keyword_problem([{key, _} | rest], index) when is_atom(key),
    do: keyword_problem(rest, index + 1)

  defp keyword_problem([other | _], index),
    do: "a list whose element #{index} is #{type_of(other)}"

  defp keyword_problem(tail, index),
    do: "an improper list (its tail after #{index - 1} element(s) is #{type_of(tail)})"

  defp mode!(opts) do
    case Keyword.get(opts, :mode, :auto) do
      :auto ->
        cond do
          Keyword.has_key?(opts, :url) -> :explicit
          Keyword.has_key?(opts, :kubeconfig) -> :kubeconfig
          System.get_env("KUBERNETES_SERVICE_HOST") not in [nil, ""] -> :in_cluster
          true -> :kubeconfig
        end

      mode when mode in [:in_cluster, :kubeconfig, :explicit] ->
        mode

      other ->
        raise ArgumentError, bad(":mode", ":auto, :in_cluster, :kubeconfig or :explicit", other)
    end
  end

  defp optional_path!(opts, key) do
    case optional_string!(opts, key) do
      nil -> nil
      path -> Path.expand(path)
    end
  end

  defp optional_string!(opts, key) do
    case Keyword.get(opts, key) do
      nil ->
        nil

      value when is_binary(value) and value != "" and key == :token ->
        # Goes into the Authorization header: control characters cannot (and would otherwise
        # only fail when the first request is sent).
        if String.valid?(value) and not String.match?(value, ~r/[\x00-\x08\x0a-\x1f\x7f]/),
          do: value,
          else: raise(ArgumentError, bad_token())

      value when is_binary(value) and value != "" ->
        if String.valid?(value), do: value, else: raise(ArgumentError, bad_string(key))

      # A token is a secret: never echo its value back in the error.
      _ when key == :token ->
        raise ArgumentError, bad_token()

      other ->
        raise ArgumentError, bad(inspect(key), "a non-empty string", other)
    end
  end

  defp bad_string(key), do: "#{inspect(key)}: expected a non-empty UTF-8 string"

  defp bad_token,
    do: ":token: expected a non-empty UTF-8 string without control characters (not shown)"

  # A selector goes into the URL's query, percent-encoded (up to 3 bytes per byte): the bound
  # keeps every request URL within what an HTTP URI may hold (64 KiB).
  defp selector!(selector) do
    if is_binary(selector) and byte_size(selector) <= @max_selector and String.valid?(selector),
      do: selector,
      else:
        raise(
          ArgumentError,
          bad(":label_selector", "a string of at most #{@max_selector} bytes", selector)
        )
  end

  defp max_concurrent_creates!(opts) do
    case Keyword.get(opts, :max_concurrent_creates, @default_max_concurrent_creates) do
      n when is_integer(n) and n in 1..1_000_000 ->
        n

      other ->
        raise ArgumentError, bad(":max_concurrent_creates", "an integer in 1..1000000", other)
    end
  end

  defp boolean!(opts, key, default) do
    case Keyword.get(opts, key, default) do
      value when is_boolean(value) -> value
      other -> raise ArgumentError, bad(inspect(key), "a boolean", other)
    end
  end

  # Milliseconds; the bound keeps `timeout + @reply_margin` a valid `receive ... after`. A
  # `:queue_timeout` of 0 (`min` 0) means not to wait for a create slot at all.
  defp timeout!(opts, key, default, min \\ 1) do
    case Keyword.get(opts, key, default) do
      value when is_integer(value) and value >= min and value <= @max_timeout ->
        value

      other ->
        what = if min == 0, do: "a non-negative integer (ms)", else: "a positive integer (ms)"
        raise ArgumentError, bad(inspect(key), what, other)
    end
  end

  # Names go into the URL path as they are: only the characters of Kubernetes names (DNS
  # subdomains, and `:` of a few system names), never "." or "..", which would change the path.
  defp name!(value, what) when is_binary(value) do
    if value =~ ~r/\A[A-Za-z0-9_.:-]{1,253}\z/ and value not in [".", ".."] do
      value
    else
      raise ArgumentError,
            bad(what, "a Kubernetes name (letters, digits, -, ., _, :; 1 to 253 of them)", value)
    end
  end

  defp name!(value, what), do: raise(ArgumentError, bad(what, "a non-empty string", value))

  # An absolute path with an optional query, in the characters a URI path may hold: no "//"
  # at the start (that would name a host), no fragment, no spaces or control characters.
  defp path!(path) do
    if is_binary(path) and byte_size(path) < 65_535 and String.valid?(path) and
         path =~ ~r{\A/(?!/)[^\x00-\x20\x7f#<>`"]*\z}u do
      path
    else
      raise ArgumentError, bad("path", "an absolute path such as \"/api/v1/pods\"", path)
    end
  end

  defp map!(value, _what) when is_map(value) and not is_struct(value), do: value

  defp map!(value, what),
    do: raise(ArgumentError, "#{what}: expected a map, got #{type_of(value)}")

  defp bad(what, expected, got), do: "#{what}: expected #{expected}, got: #{show(got)}"

  # A bad value, shown within bounds whatever it is: a few elements per term (the limit counts
  # across nesting, so subterms shared many times cost no more), strings cut short, and big
  # integers by their size (printing an integer of millions of bits takes minutes).
  @show_opts [limit: 8, printable_limit: 100]
  @big_integer Bitwise.bsl(1, 256)

  defp show(value), do: inspect(value, [inspect_fun: &show_doc/2] ++ @show_opts)

  defp show_doc(n, _opts) when is_integer(n) and (n >= @big_integer or n <= -@big_integer) do
    <<first, _::binary>> = bytes = :binary.encode_unsigned(abs(n))
    "#integer<#{(byte_size(bytes) - 1) * 8 + length(Integer.digits(first, 2))} bits>"
  end

  defp show_doc(term, opts), do: Inspect.inspect(term, opts)

  # A value that may hold a secret (an option list, a manifest, a body) by its type alone.
  defp type_of(value) when is_list(value) do
    if List.improper?(value), do: "an improper list", else: "a list"
  end

  defp type_of(value) when is_struct(value), do: "a struct #{inspect(value.__struct__)}"
  defp type_of(value) when is_map(value), do: "a map"
  defp type_of(value) when is_tuple(value), do: "a tuple of #{tuple_size(value)} element(s)"
  defp type_of(value) when is_binary(value), do: "a binary of #{byte_size(value)} byte(s)"
  defp type_of(value) when is_bitstring(value), do: "a bitstring"
  defp type_of(value) when is_atom(value), do: "an atom"
  defp type_of(value) when is_integer(value), do: "an integer"
  defp type_of(value) when is_float(value), do: "a float"
  defp type_of(value) when is_function(value), do: "a function"
  defp type_of(value) when is_pid(value), do: "a pid"
  defp type_of(value) when is_reference(value), do: "a reference"
  defp type_of(value) when is_port(value), do: "a port"

  defimpl Inspect do
    def inspect(kube, _opts) do
      ns = if kube.default_namespace, do: " namespace=#{kube.default_namespace}", else: ""
      "#FLAMEK8sBackend.Kube<#{kube.server}#{ns}>"
    end
  end
end
