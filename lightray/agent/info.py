"""An agent's answers to INFO requests that it makes at once. No I/O.

    (INFO, id, "nodes" | "resources" | "store" | "memory" | "workers" | "sync"
     | ("actor", namespace, name)) ──AgentState.info──▶ info_answer ──▶ INFO_REPLY

("state", kind, scope) requests, gathered from every node, are
lightray.observe.queries'.
"""
from __future__ import annotations


def info_answer(state, what):
    """The answer to one INFO request of a local process (None: unknown)."""
    if isinstance(what, tuple) and what[0] == "actor":
        return state.actor_book.actor_lookup(what[1], what[2])
    answer = {"resources": state.membership.resources, "nodes": state.membership.nodes_info,
              "store": state.store.info, "sync": lambda: True,
              "memory": state.store.memory_summary, "workers": lambda: {
                  w.worker_id: {"pid": w.pid, "state": w.state, "queued": len(w.queue)}
                  for w in state.workers.values()}}.get(what if type(what) is str else None)
    return None if answer is None else answer()
