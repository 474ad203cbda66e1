import Config

# Read at boot, in the parent and in every runner (runners run this same release).
config :flame_demo,
  dns_cluster_query: System.get_env("DNS_CLUSTER_QUERY"),
  # Short, so the kind tests can watch an idle runner pod go away.
  idle_shutdown_after: String.to_integer(System.get_env("FLAME_DEMO_IDLE_MS", "10000")),
  # An image no node can pull, for the pool that demonstrates a failed boot.
  bad_image: System.get_env("FLAME_DEMO_BAD_IMAGE", "registry.invalid/flame-demo:missing")

# How long a stopping runner lets its calls finish (the backend's :shutdown_timeout and the
# runner pods' grace period follow it). A pool's `env:` can set it for its runners alone.
if ms = System.get_env("FLAME_DEMO_TERMINATOR_SHUTDOWN_MS") do
  config :flame, :terminator, shutdown_timeout: String.to_integer(ms)
end
