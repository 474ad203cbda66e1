defmodule FlameDemo.Application do
  @moduledoc false
  use Application

  # DNSCluster when the app is built with hex, FlameDemo.DNSPoller (the same job, a page of this
  # app) when it is built without (FLAME_DEMO_OFFLINE=1, see mix.exs).
  @dns_cluster if Code.ensure_loaded?(DNSCluster), do: DNSCluster, else: FlameDemo.DNSPoller

  @impl true
  def start(_type, _args) do
    children =
      [
        {@dns_cluster, query: dns_cluster_query()},
        FlameDemo.BootFailures
      ] ++ pools()

    Supervisor.start_link(children, strategy: :one_for_one, name: FlameDemo.Supervisor)
  end

  # Only on the parents: DNSCluster connects nodes named `<its own basename>@<ip>`, and a runner
  # is named after its pod, so a runner's loop (it inherits DNS_CLUSTER_QUERY) could never
  # connect anything.
  defp dns_cluster_query do
    if FLAME.Parent.get(),
      do: :ignore,
      else: Application.get_env(:flame_demo, :dns_cluster_query) || :ignore
  end

  # Public so that this repository's tests can start the same pools against their local
  # control plane (test/e2e/examples_test.exs).
  @doc false
  def pools do
    [
      # The pool the app uses. Runner pods get neither the headless Service's label (DNSCluster
      # connects parents only) nor the Deployment's `app` label (see deployment.yaml).
      {
        FLAME.Pool,
        # The pool's :log is the backend's too (FLAME puts it over the backend's options).
        name: FlameDemo.Runner,
        backend: FLAMEK8sBackend,
        log: :info,
        min: 0,
        max: 2,
        max_concurrency: 10,
        boot_timeout: 120_000,
        idle_shutdown_after: Application.fetch_env!(:flame_demo, :idle_shutdown_after)
      },
      # A pool whose runners can never start: its image does not exist. FLAME retries a failed
      # boot while callers wait and only tells on_grow_end why, so the reason is kept there.
      {FLAME.Pool,
       name: FlameDemo.BadImageRunner,
       backend:
         {FLAMEK8sBackend,
          manifest: %{
            "spec" => %{
              "containers" => [%{"image" => Application.fetch_env!(:flame_demo, :bad_image)}]
            }
          }},
       min: 0,
       max: 1,
       boot_timeout: 60_000,
       on_grow_end: &FlameDemo.BootFailures.on_grow_end/2}
    ]
  end
end
