"""An agent's answers to INFO requests. No I/O.

    (INFO, id, "nodes" | "resources" | "store" | "memory" | "workers" | "sync"
     | ("actor", namespace, name)) ──AgentState.info──▶ info_answer ──▶ INFO_REPLY

on_info routes every INFO: ("state", kind, scope) requests, gathered from
every node, are lightray.observe.queries'; ("logs", node, request) ones
lightray.output.relay's; a named actor not known here is looked up on the
peers (lightray.agent.cluster.remote_actors).
"""
from __future__ import annotations

from ..transport import messages as m


def on_info(state, client, request_id: int, what) -> None:
    """(INFO, request_id, what) from a local process: answered now, or once
    the peers asked have answered."""
    if type(what) is tuple and what[0] == "state":
        state.state_queries.on_client(client, request_id, what)
    elif (state.membership.live_peers and type(what) is tuple and what[0] == "actor"
            and state.actor_book.actor_lookup(what[1], what[2]) is None):
        state.remote_actors.lookup_named_remote(client, request_id, what[1], what[2])
    elif not state.output.on_info(client, request_id, what):   # ("logs", ...)
        state.effects.outbox[client.identity].append(
            (m.INFO_REPLY, request_id, info_answer(state, what)))


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
