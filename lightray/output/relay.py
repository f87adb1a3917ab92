"""The agent side: printed lines on their way to the driver they belong to.

    worker ──(WORKER_OUTPUT, "node/client", lines)──▶ agent of node
        node is this agent's: ──(OUTPUT, lines)──▶ the driver, if still connected
        another node:         ──(OUTPUT_RELAY, client, lines)──▶ that node's agent (mesh)
    peer ──(OUTPUT_RELAY, client, lines)──▶ ──(OUTPUT, lines)──▶ our driver client

It also answers ``lightray logs`` (lightray.output.logs): from this node's
files, or by asking the node named (LOGS_REQUEST / LOGS_REPLY over the mesh).

Lines for a driver that is gone, or a node that is not an alive peer, are
dropped (they are in the worker's log file). Every batch is checked
(lightray.output.lines.valid_batch) where it arrives: the intake checks a
worker's (lightray.agent.intake), admission a peer's
(lightray.agent.cluster.admission); a bad one is dropped, never forwarded. Lines travel after the ops sent before
them on the same connection, so for a task run through the agents its lines
reach the driver before its result does.
"""
from __future__ import annotations

import collections
import itertools

from ..transport import messages as m
from .lines import split_driver
from .logs import answer, valid_request

_PENDING_MAX = 1024   # logs requests waiting for a peer's answer (the oldest are forgotten)


class OutputRelay:
    """Routes printed lines for one agent (plain bookkeeping, no I/O)."""

    __slots__ = ("node_id", "clients", "peers", "effects", "dropped", "session_dir",
                 "workers_by_pid", "actors", "_pending", "_request_ids")

    def __init__(self, effects, node_id: str, clients: dict, peers: dict,
                 workers_by_pid: dict, actors: dict):
        self.effects = effects
        self.node_id = node_id
        self.clients = clients        # client id -> ClientEntry
        self.peers = peers            # node id -> NodeView
        self.workers_by_pid = workers_by_pid
        self.actors = actors          # actor id -> ActorEntry
        self.session_dir = ""         # where the log files are (AgentServer sets it)
        self.dropped = 0              # batches that reached no driver
        self._pending = collections.OrderedDict()   # our id -> (identity, client's id)
        self._request_ids = itertools.count(1)

    def from_worker(self, driver: str, lines: list) -> None:
        node_id, client_id = split_driver(driver)
        if node_id == self.node_id:
            self._deliver(client_id, lines)
            return
        view = self.peers.get(node_id)
        if view is None or not view.alive:
            self.dropped += 1
            return
        self.effects.peer_outbox[node_id].append(
            (m.OUTPUT_RELAY, client_id.decode(), lines))

    def _deliver(self, client_id: bytes, lines: list) -> None:
        client = self.clients.get(client_id)
        if client is None or client.kind != "driver":
            self.dropped += 1
            return
        self.effects.outbox[client.identity].append((m.OUTPUT, lines))

    def take_peer_ops(self, sender: str, ops: list) -> list:
        """Handle a peer's OUTPUT_RELAY and LOGS ops (admission checked their
        shapes); the other ops."""
        if not any(op[0] in _PEER_OPS for op in ops):
            return ops
        rest = []
        for op in ops:
            kind = op[0]
            if kind == m.OUTPUT_RELAY:
                self._deliver(op[1].encode(), op[2])
            elif kind == m.LOGS_REQUEST:
                self.effects.peer_outbox[sender].append(
                    (m.LOGS_REPLY, op[1], self._answer(op[2])))
            elif kind == m.LOGS_REPLY:
                waiting = self._pending.pop(op[1], None)
                if waiting is not None:
                    self.effects.outbox[waiting[0]].append((m.INFO_REPLY, waiting[1], op[2]))
            else:
                rest.append(op)
        return rest

    # ------------------------------------------------------------- lightray logs

    def on_info(self, client, request_id: int, what) -> bool:
        """Answer INFO ("logs", node id or a prefix of one ("": this node),
        request); False for any other INFO (the state answers it)."""
        if type(what) is not tuple or what[0] != "logs":
            return False
        self._on_logs_request(client, request_id, what[1], what[2])
        return True

    def _on_logs_request(self, client, request_id: int, node: str, request) -> None:
        if not valid_request(request):
            reply = {"error": f"not a logs request: {request!r:.200}"}
        else:
            matches = [n for n in [self.node_id, *(v for v, view in self.peers.items()
                                                  if view.alive)] if n.startswith(node)]
            if not node or matches == [self.node_id]:
                reply = self._answer(request)
            elif len(matches) == 1:
                our_id = next(self._request_ids)
                self._pending[our_id] = (client.identity, request_id)
                while len(self._pending) > _PENDING_MAX:
                    self._pending.popitem(last=False)
                self.effects.peer_outbox[matches[0]].append((m.LOGS_REQUEST, our_id, request))
                return
            elif matches:
                reply = {"error": f"node {node!r} is ambiguous: it starts "
                                  f"{', '.join(sorted(matches))}"}
            else:
                reply = {"error": f"no alive node has an id starting {node!r}"}
        self.effects.outbox[client.identity].append((m.INFO_REPLY, request_id, reply))

    def _answer(self, request) -> dict:
        try:
            return answer(self.session_dir, self.workers_by_pid, self.actors, request)
        except OSError as error:
            return {"error": f"cannot read the logs: {error}"}


_PEER_OPS = frozenset((m.OUTPUT_RELAY, m.LOGS_REQUEST, m.LOGS_REPLY))
