"""lightray.state: what the cluster's tasks, actors, objects and nodes are doing.

    import lightray.state as state
    state.list_tasks(filters=[("state", "=", "FAILED")])
    state.summarize_tasks()          # {"f": {"FINISHED": 10, "FAILED": 2}}

Every call asks one agent (this driver's after init(); else the one at
``address=``, or the cluster ``lightray status`` would pick), which gathers
every live node's rows over the mesh; a node that does not answer in time
is left out with a StateWarning. Tasks come from each agent's ring of task
events (LIGHTRAY_TASK_EVENTS, default 100,000 per node; the oldest go
first): a task's worker reports its start and end within about half a
second. A local-mode runtime records no events: the calls raise
StateQueryError there.

filters: a list of (key, op, value), op "=" or "!=", values compared as
text (state, type and location whatever their case); an unknown key or op
raises ValueError naming it. limit: at most this many rows (the newest
tasks and actors, the largest objects).

    list_tasks    task_id, name, type (NORMAL_TASK, ACTOR_TASK, ACTOR_CREATION_TASK),
                  state (PENDING, QUEUED, RUNNING, FINISHED, FAILED, CANCELLED),
                  node_id, worker_pid, actor_id, submitted_at, started_at,
                  finished_at (epoch seconds or None), retries, error (text or None)
    list_actors   actor_id, class_name, name, namespace, state (PENDING, ALIVE,
                  RESTARTING, DEAD), node_id, pid, restarts, death_cause
    list_objects  object_id, size, node_id, location (MEMORY, SPILLED), owner, ref_count
    list_nodes    node_id, address, state (ALIVE, SUSPECT, DEAD), is_head, control_role
                  (leader, replica or None), resources_total, resources_available,
                  memory_used, memory_total, store_used, store_capacity, spilled_bytes
"""
from __future__ import annotations

from .observe.gather import DEFAULT_LIMIT, StateQueryError, StateWarning, listing, task_summary

__all__ = ["StateQueryError", "StateWarning", "list_actors", "list_nodes", "list_objects",
           "list_tasks", "summarize_tasks"]


def list_tasks(filters=None, limit: int = DEFAULT_LIMIT, address: str | None = None,
               cluster_key: str | None = None) -> list:
    """Every task and actor call recorded on any node, oldest first."""
    return listing("tasks", filters, limit, address, cluster_key)


def list_actors(filters=None, limit: int = DEFAULT_LIMIT, address: str | None = None,
                cluster_key: str | None = None) -> list:
    """Every actor, as its last recorded change left it."""
    return listing("actors", filters, limit, address, cluster_key)


def list_objects(filters=None, limit: int = DEFAULT_LIMIT, address: str | None = None,
                 cluster_key: str | None = None) -> list:
    """The objects held on each node (in memory or spilled), largest first."""
    return listing("objects", filters, limit, address, cluster_key)


def list_nodes(filters=None, limit: int = DEFAULT_LIMIT, address: str | None = None,
               cluster_key: str | None = None) -> list:
    """Every node known, dead ones too (as ``lightray status`` shows them)."""
    return listing("nodes", filters, limit, address, cluster_key)


def summarize_tasks(address: str | None = None, cluster_key: str | None = None) -> dict:
    """{task name: {state: count}} over every task recorded."""
    return task_summary(address, cluster_key)
