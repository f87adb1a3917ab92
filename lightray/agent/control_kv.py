"""lightray.kv's requests inside an agent: served here, or sent to the control leader.

    local process ── (KV, id, request) ──▶ KVRequests.from_client
    peer agent ───── (KV_REQUEST, id, request) ──▶ KVRequests.from_peer
        write            this replica leads: propose a kv_write, answer once it is
                         committed and applied; else KV_REQUEST to the leader
        read             a replica here: from its SQLite (consistent: after the
                         leader's ReadIndex); none here: KV_REQUEST to the leader
    the leader's ── (KV_REPLY, id, answer) ──▶ KVRequests.from_peer ──▶ the origin
    answers ──▶ a local process: INFO_REPLY (link.send_to_client); a peer: KV_REPLY

An attempt that cannot finish (no leader known, the leader changed, nobody
answered in ATTEMPT seconds) is answered ("retry", why): the client sends
it again with the same token, and the store applies a token once
(lightray.store.control.kv_requests). A request from a peer is never sent
on again (two agents each thinking the other leads would bounce it).
"""
from __future__ import annotations

import collections
import itertools
import time

from ..store.control import kv_requests as kv
from ..store.control.raft import NotLeader, ProposalRefused
from ..store.control.replica import ReplicaDamaged
from ..transport import messages as m

ATTEMPT = 2.0     # seconds an attempt may wait here before it is answered "retry"


class _Waiting:
    __slots__ = ("origin", "request", "leader", "started")

    def __init__(self, origin, request, leader, started):
        self.origin = origin      # ("client", identity, request id) or ("peer", node id, id)
        self.request = request
        self.leader = leader      # who led when it started: a change means it is lost
        self.started = started


class KVRequests:
    __slots__ = ("link", "waiting", "_ids", "proposals", "peer_out")

    def __init__(self, link):
        self.link = link          # the agent's ControlLink (its replica, state, mesh)
        self.waiting: dict = {}   # our id -> _Waiting (proposed, read asked, or sent on)
        self._ids = itertools.count(1)
        # Batched per loop turn (flush): one log append, one message per peer.
        self.proposals: list = []  # (our id, origin, request) to propose
        self.peer_out: dict = collections.defaultdict(list)   # node id -> [ops]

    # ------------------------------------------------------------ inputs

    def from_client(self, identity: bytes, request_id: int, request) -> None:
        self._serve(("client", identity, request_id), request)

    def from_peer(self, sender: str, op: tuple) -> None:
        if op[0] == m.KV_REQUEST:
            self._serve(("peer", sender, op[1]), op[2])
            return
        waiting = self.waiting.get(op[1])          # KV_REPLY to a request we sent on
        if waiting is not None and waiting.leader == sender:
            del self.waiting[op[1]]
            self._answer(waiting.origin, op[2])

    def _serve(self, origin, request) -> None:
        why = kv.problem(request)
        if why is not None:
            self._answer(origin, (kv.ERROR, why))
            return
        link = self.link
        replica = link.replica
        if request[0] == kv.LOCATE:
            self._answer(origin, (kv.OK, self._local_file(origin)))
            return
        leader = link.leader()
        if replica is not None and replica.is_leader and kv.is_write(request):
            self._propose(origin, request)
        elif replica is not None and not kv.is_write(request):
            self._read(origin, request, replica, leader)
        elif origin[0] == "peer":
            self._answer(origin, (kv.RETRY, f"node {link.state.node_id} does not lead "
                                            f"the control plane (leader: {leader})"))
        elif leader is None or leader == link.state.node_id or link.mesh is None:
            self._answer(origin, (kv.RETRY, "no control plane leader is known"))
        else:
            request_id = next(self._ids)
            self.waiting[request_id] = _Waiting(origin, request, leader, time.monotonic())
            self.peer_out[leader].append((m.KV_REQUEST, request_id, request))
            link.needs_process = True

    def _local_file(self, origin):
        """control.db for a local process to read itself, while this replica is a
        voter (it then follows the log closely); else None: ask the agent."""
        replica = self.link.replica
        if origin[0] != "client" or replica is None:
            return None
        if self.link.state.node_id not in replica.voters:
            return None
        return replica.store.path

    def _propose(self, origin, request) -> None:
        self.proposals.append((next(self._ids), origin, request))
        self.link.needs_process = True

    def flush_proposals(self) -> None:
        """This turn's writes, proposed as one batch (before the replica's process)."""
        if not self.proposals:
            return
        proposals, self.proposals = self.proposals, []
        replica = self.link.replica
        if replica is None or not replica.is_leader:
            for _, origin, _ in proposals:
                self._answer(origin, (kv.RETRY, "this replica no longer leads"))
            return
        wall = time.time()
        try:
            problems = replica.propose_many([(kv.command_for(request, wall), ("kv", rid))
                                             for rid, _, request in proposals])
        except (NotLeader, ProposalRefused) as error:
            for _, origin, _ in proposals:
                self._answer(origin, (kv.RETRY, f"the control leader cannot take it: {error}"))
            return
        now = time.monotonic()
        for (request_id, origin, request), problem in zip(proposals, problems):
            if problem is not None:
                self._answer(origin, (kv.ERROR, f"lightray.kv: {problem}"))
            else:
                self.waiting[request_id] = _Waiting(origin, request, replica.node.id, now)

    def flush_peers(self) -> None:
        if not self.peer_out:
            return
        out, self.peer_out = self.peer_out, collections.defaultdict(list)
        if self.link.mesh is not None:
            for node_id, ops in out.items():
                self.link.mesh.send(node_id, ops)

    def _read(self, origin, request, replica, leader) -> None:
        if not kv.is_consistent(request):
            self._serve_read(origin, request)
            return
        request_id = next(self._ids)
        try:
            replica.read(("kv", request_id))
        except NotLeader:
            self._answer(origin, (kv.RETRY, "no control plane leader is known"))
            return
        self.waiting[request_id] = _Waiting(origin, request, leader, time.monotonic())
        self.link.needs_process = True

    # ------------------------------------------------------------ the replica's output

    def on_output(self, out) -> None:
        """Writes committed, reads that may be served, writes that never will commit."""
        for token, result in out.results:
            waiting = self._take(token)
            if waiting is not None:
                self._answer(waiting.origin, (kv.OK, result))
        for token in out.reads:
            waiting = self._take(token)
            if waiting is not None:
                self._serve_read(waiting.origin, waiting.request)
        for token, why in out.dropped:
            waiting = self._take(token)
            if waiting is not None:
                self._answer(waiting.origin, (kv.RETRY, why))

    def _serve_read(self, origin, request) -> None:
        replica = self.link.replica
        if replica is None:
            self._answer(origin, (kv.RETRY, "this agent's control replica is gone"))
            return
        try:
            answer = replica.query(lambda store: kv.serve_read(store, request))
        except ReplicaDamaged as error:
            self._answer(origin, (kv.RETRY, f"this agent's control replica: {error}"))
            self.link.replica_damaged(error)
            return
        self._answer(origin, answer)

    def _take(self, token):
        if type(token) is tuple and token[0] == "kv":
            return self.waiting.pop(token[1], None)
        return None

    def tick(self, now: float) -> None:
        """Attempts lost to a leader change or waiting too long: answered "retry"."""
        if not self.waiting:
            return
        leader = self.link.leader()
        lost = [request_id for request_id, waiting in self.waiting.items()
                if waiting.leader != leader or now - waiting.started > ATTEMPT]
        for request_id in lost:
            waiting = self.waiting.pop(request_id)
            why = (f"the control leader changed ({waiting.leader} -> {leader})"
                   if waiting.leader != leader else f"no answer in {ATTEMPT:g} s")
            self._answer(waiting.origin, (kv.RETRY, why))

    # ------------------------------------------------------------ answers

    def _answer(self, origin, answer) -> None:
        link = self.link
        if origin[0] == "client":
            # Straight to the socket: an answer made while the loop carries out
            # instructions would otherwise wait in the outbox for the next turn.
            link.send_to_client(origin[1], [(m.INFO_REPLY, origin[2], answer)])
        else:
            self.peer_out[origin[1]].append((m.KV_REPLY, origin[2], answer))
            link.needs_process = True
