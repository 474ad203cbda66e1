defmodule FLAMEK8sBackend.Test.DistributionProbe do
  @moduledoc """
  Run on a runner node (compiled to disk, so the runner has it too): what the runner sees of
  the Erlang cluster its parent is in, visible node or hidden.
  """

  @doc """
  A function that tells, from the runner: whether its VM is hidden, its visible and hidden
  node lists, whether it finds the `:global` name `global_name` (after syncing with every node
  `:global` knows), which members of the `:pg` group `group` of `scope` it sees (at once, or
  the first to join within `wait_ms`), and whether it is connected to `other_node` (at once, or
  within `wait_ms`). The bounded waits are for what arrives only as an event, if at all: a
  visible runner gets it, a hidden one never does.
  """
  def observe(global_name, scope, group, other_node, wait_ms) do
    fn ->
      # Not linked to this call's process: the scope stays after the call.
      {:ok, _} = :pg.start(scope)
      {pg_ref, members} = :pg.monitor(scope, group)
      :ok = :net_kernel.monitor_nodes(true)

      members =
        if members == [] do
          receive do
            {^pg_ref, :join, ^group, joined} -> joined
          after
            wait_ms -> []
          end
        else
          members
        end

      other_connected? =
        other_node in Node.list(:connected) or
          receive do
            {:nodeup, ^other_node} -> true
          after
            wait_ms -> false
          end

      :ok = :global.sync()

      %{
        node: node(),
        hidden_flag?: :init.get_argument(:hidden) != :error,
        visible: Node.list(),
        hidden: Node.list(:hidden),
        global: :global.whereis_name(global_name),
        pg_members: members,
        other_connected?: other_connected?,
        connected: Node.list(:connected)
      }
    end
  end
end
