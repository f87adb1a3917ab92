"""An agent's answers to lightray.state: its own rows, and those of every live
peer, gathered over the mesh. No I/O (the state's Effects carry the messages).

    client ──(INFO, id, ("state", kind, "cluster"))──▶ agent: its own rows, and
        ──(STATE_QUERY, query id, kind)──▶ each live peer
    peer ──(STATE_REPLY, query id, rows)──▶ agent (rows: lists of plain values)
    every peer answered, or QUERY_TIMEOUT s went by (tick) ──INFO_REPLY──▶ client:
        {"kind", "fields", "nodes": {node id: rows}, "missing": {node id: why}}

A peer that dies or does not answer in time is left out, named under
"missing": a query never hangs. Rows are lists of str, int, float, bool or
None (and lists of str): admission checks a STATE_REPLY to be just that.
"""
from __future__ import annotations

import itertools

from ..transport import messages as m
from .events import ACTOR_FIELDS, RUN_FIELDS, TASK_FIELDS

QUERY_TIMEOUT = 5.0        # seconds an agent waits for its peers' rows
OBJECT_FIELDS = ("object_id", "size", "node_id", "location", "owner", "ref_count")
FIELDS = {"tasks": TASK_FIELDS, "runs": RUN_FIELDS, "actors": ACTOR_FIELDS,
          "objects": OBJECT_FIELDS}
KINDS = tuple(FIELDS)
PEER_OPS = frozenset((m.STATE_QUERY, m.STATE_REPLY))
_SCALARS = (str, int, float, bool, type(None))
MAX_ROWS = 2_000_000       # rows a peer may send in one answer


class _Query:
    __slots__ = ("identity", "request_id", "kind", "nodes", "waiting", "deadline", "bad")

    def __init__(self, identity: bytes, request_id: int, kind: str, nodes: dict, waiting: set):
        self.identity = identity
        self.request_id = request_id
        self.kind = kind
        self.nodes = nodes         # node id -> rows
        self.waiting = waiting     # node ids not answered yet
        self.deadline = None       # set by the first tick (the state reads no clock)
        self.bad: dict = {}        # node id -> why its answer was left out


class StateQueries:
    __slots__ = ("state", "pending", "ids")

    def __init__(self, state):
        self.state = state         # AgentState: its events, objects, peers and Effects
        self.pending: dict = {}    # query id -> _Query
        self.ids = itertools.count(1)

    def on_client(self, client, request_id: int, what: tuple) -> None:
        kind = what[1]
        state = self.state
        if kind not in FIELDS:
            state.effects.outbox[client.identity].append((m.INFO_REPLY, request_id, {
                "error": f"no such kind of state: {kind!r} (one of {', '.join(KINDS)})"}))
            return
        nodes = {state.node_id: self.local_rows(kind)}
        peers = [p.node_id for p in state.membership.peers.values() if p.alive]
        query = _Query(client.identity, request_id, kind, nodes, set(peers))
        if not peers or what[2] != "cluster":
            self._answer(query, {})
            return
        query_id = next(self.ids)
        self.pending[query_id] = query
        for node_id in peers:
            state.effects.peer_outbox[node_id].append((m.STATE_QUERY, query_id, kind))

    def local_rows(self, kind: str) -> list:
        events = self.state.events
        if kind == "tasks":
            return events.task_rows()
        if kind == "runs":
            return events.runs()
        if kind == "actors":
            return events.actor_rows()
        return self._objects()

    def _objects(self) -> list:
        state = self.state
        rows = []
        node_id = state.node_id
        clients = state.clients
        for row in state.store.memory_summary()["objects"]:
            where = row["state"]
            if where.startswith("in memory"):
                location = "MEMORY"
            elif where in ("spilled", "restoring"):
                location = "SPILLED"
            else:
                continue    # pending, an error, or its bytes are on another node (it answers)
            entry = state.objects.get(bytes.fromhex(row["object_id"]))
            owner = clients.get(entry.owner) if entry is not None else None
            rows.append([row["object_id"], row["size"], node_id, location,
                         f"{owner.kind} pid {owner.pid}" if owner is not None else None,
                         entry.refs if entry is not None else None])
        return rows

    # ------------------------------------------------------------- peers

    def take_peer_ops(self, sender: str, ops: list) -> list:
        """STATE_QUERY / STATE_REPLY (from a live peer) are served here; the
        other ops are returned for the state."""
        if not any(op[0] in PEER_OPS for op in ops):
            return ops
        view = self.state.membership.peers.get(sender)
        rest = []
        for op in ops:
            if op[0] not in PEER_OPS:
                rest.append(op)
            elif view is None or not view.alive:
                continue
            elif op[0] == m.STATE_QUERY:
                self.state.effects.peer_outbox[sender].append(
                    (m.STATE_REPLY, op[1], self.local_rows(op[2])))
            else:
                query = self.pending.get(op[1])
                if query is not None and sender in query.waiting:
                    query.waiting.discard(sender)
                    width = len(FIELDS[query.kind])
                    if all(len(row) == width for row in op[2]):
                        query.nodes[sender] = op[2]
                    else:
                        query.bad[sender] = f"its rows are not {query.kind} rows"
                    if not query.waiting:
                        self._answer(self.pending.pop(op[1]), dict(query.bad))
        return rest

    def tick(self, now: float) -> None:
        """Queries whose peers died or took QUERY_TIMEOUT s are answered without them."""
        if not self.pending:
            return
        peers = self.state.membership.peers
        for query_id, query in list(self.pending.items()):
            if query.deadline is None:
                query.deadline = now + QUERY_TIMEOUT
            missing = {}
            for node_id in list(query.waiting):
                view = peers.get(node_id)
                if view is None or not view.alive:
                    missing[node_id] = "the node died before it answered"
                elif now >= query.deadline:
                    missing[node_id] = f"no answer in {QUERY_TIMEOUT:g} s"
            if missing:
                query.waiting.difference_update(missing)
            if not query.waiting:
                del self.pending[query_id]
                self._answer(query, {**query.bad, **missing})

    def _answer(self, query: _Query, missing: dict) -> None:
        self.state.effects.outbox[query.identity].append((m.INFO_REPLY, query.request_id, {
            "kind": query.kind, "fields": list(FIELDS[query.kind]), "nodes": query.nodes,
            "missing": missing}))


# ----------------------------------------------- shape checks (admission)

def check_query(op) -> str | None:
    """Why a STATE_QUERY is malformed, or None."""
    if len(op) != 3 or type(op[1]) is not int or op[2] not in FIELDS:
        return "not (STATE_QUERY, query id, kind)"
    return None


def check_reply(op) -> str | None:
    """Why a STATE_REPLY is malformed (rows must be lists of plain values), or None."""
    if len(op) != 3 or type(op[1]) is not int or type(op[2]) is not list:
        return "not (STATE_REPLY, query id, [row])"
    if len(op[2]) > MAX_ROWS:
        return f"it has {len(op[2])} rows, over {MAX_ROWS}"
    for row in op[2]:
        if type(row) is not list:
            return "a row is not a list"
        for value in row:
            if type(value) not in _SCALARS and not (
                    type(value) is list and all(type(v) is str for v in value)):
                return f"a row holds a {type(value).__name__}"
    return None
