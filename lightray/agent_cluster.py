"""Agents working together: membership, heartbeats, forwarded tasks, objects on other nodes. Part of AgentState.

    new agent ──JOIN──▶ head ──MEMBERS──▶ new agent (connects to everyone)
                        head ──NODE_JOINED──▶ the others (connect to it)
    every agent ──HEARTBEAT (load, available resources) every 0.5 s──▶ every peer
    a peer silent for DEAD_AFTER s: dead (the head records it and tells the others)

    task submitted here ──choose_node (lightray.scheduling)──▶ here, or
        ──FORWARD(spec, function once, argument descriptors)──▶ peer runs it
        ◀──RESULT(inline values, or "at <node>" for a segment kept there)──

Objects on other nodes. The node where a task was submitted owns its results,
wherever they were made: the owner's entry points at the node holding the
primary copy (``location``, spill state REMOTE) and gives its local readers a
layout naming a local segment that does not exist yet. A reader that finds
it missing asks for it (RESTORE, the path a spilled object takes), and the
agent *pulls* it: PULL requests for CHUNK-byte pieces, WINDOW of them in
flight, written into ``<segment>.pulling`` and renamed when complete.
Concurrent readers of one object share one pull. The pulled copy is a
secondary copy: under memory pressure it is dropped (back to REMOTE) rather
than spilled. A task forwarded to a node pulls its arguments from wherever
they are, straight from their holder.

Pins across nodes: a node holding an object for another (the primary copy
of a forwarded task's result, or a copy of a forwarded task's argument) keeps
one pin per node that told it about the object (``pinned_for``); that node
sends FREE when it lets go (every node it described the object to is in its
``copies``).
"""
from __future__ import annotations

import collections

from . import exceptions, serialization
from . import task_spec as ts
from .agent_store import PULLING, REMOTE, SPILLING   # PULLING, REMOTE: held elsewhere
from .ids import return_ids
from .object_directory import ObjectEntry
from .scheduling import NodeView, choose_node, to_units
from .serialization import ERROR, SHARED
from .states import FORWARDED
from .transport import messages as m

HEARTBEAT_INTERVAL = 0.5     # seconds between heartbeats
DEAD_AFTER = 3.0             # seconds of silence after which a peer is dead
CHUNK = 8 << 20              # bytes per pulled chunk
WINDOW = 4                   # chunks in flight per pull
HEAD = "head"                # the head's mesh connection until its node id is known
AT = "at"                    # argument / result descriptor: ("at", node id, layout there)


class Pull:
    __slots__ = ("holder", "remote_name", "size", "next_offset", "inflight", "received")

    def __init__(self, holder: str, remote_name: str, size: int):
        self.holder = holder
        self.remote_name = remote_name
        self.size = size
        self.next_offset = 0
        self.inflight = 0
        self.received = 0


class ClusterManagement:

    def _init_cluster(self) -> None:
        self.mesh_address = ""
        self.is_head = False
        self.head_id = None
        self.peers: dict = {}               # node id -> NodeView (dead ones stay, alive=False)
        self.peer_seen: dict = {}           # node id -> monotonic time of its last message
        self.live_peers = 0
        self.peer_outbox: dict = collections.defaultdict(list)
        self.peer_data: list = []           # (node id, PULL_DATA op, segment name)
        self.mesh_connect: list = []        # (node id, address)
        self.mesh_disconnect: list = []
        self.mesh_rename: list = []         # (old key, node id)
        self.control_writes: list = []      # head: commands for the control store
        self.peer_functions = collections.defaultdict(set)
        self.pulls: dict = {}               # object id -> Pull
        self.pull_io: list = []             # ("open", id, name, size) / ("abort", id)
        self.pull_retries: list = []        # (node id, PULL op) to send again
        self.spread_turn = 0
        self.hot = False
        self.load: dict = {}
        self.pulled_total = 0
        self.served_total = 0
        self.evicted = None                 # why the head dropped this agent (it stops)
        self.actor_lookups: dict = {}       # lookup id -> [identity, request id, peers asked]
        self.lookup_counter = 0

    def start_cluster(self, mesh_address: str, head_address: str | None, now: float,
                      wall: float) -> None:
        """Join the cluster at head_address, or be its head (None)."""
        self.mesh_address = mesh_address
        if head_address is None:
            self.is_head = True
            self.head_id = self.node_id
            self.control_writes.append(("node_register", self.node_id, mesh_address,
                                        self.pool.as_floats("total"), {}, wall))
        else:
            self.mesh_connect.append((HEAD, head_address))
            self.peer_outbox[HEAD].append((m.JOIN, self._node_dict()))

    def _node_dict(self) -> dict:
        return {"node_id": self.node_id, "address": self.mesh_address,
                "resources": self.pool.as_floats("total"), "is_head": self.is_head,
                "load": {"store_capacity": self.store_capacity, "store_used": self.store_used,
                         "spilled": self.spilled_now, "is_head": self.is_head}}

    # ============================================================ membership

    def handle_peer(self, sender: str, ops: list, now: float, wall: float) -> None:
        view = self.peers.get(sender)
        if view is not None and not view.alive:
            # Declared dead: for good. A node that stalled past DEAD_AFTER and
            # came back learns it was dropped; one that hears from the head it
            # had given up on knows the head dropped it too.
            if self.is_head:
                self.peer_outbox[sender].append((m.NODE_DEAD, sender, view.load.get("died")))
                self.mesh_connect.append((sender, view.address))
                self.mesh_disconnect.append(sender)
            elif sender == self.head_id:
                self._evicted(f"it lost contact with the head for more than {DEAD_AFTER:g} s")
            return
        self.peer_seen[sender] = now
        for op in ops:
            kind = op[0]
            if kind == m.HEARTBEAT:
                self._on_heartbeat(sender, op[1], wall)
            elif kind == m.FORWARD:
                self._on_forward(sender, op[1], op[2], op[3])
            elif kind == m.RESULT:
                self._on_result(sender, op[1], op[2], op[3] if len(op) > 3 else None)
            elif kind == m.FREE:
                self._on_free(sender, op[1])
            elif kind == m.PULL:
                self._on_pull(sender, op[1], op[3], op[4])
            elif kind == m.PULL_DATA:
                self._on_pull_data(op[1], op[3])
            elif kind == m.PULL_RETRY:
                self.pull_retries.append((sender, (m.PULL,) + self._pull_args(op[1], op[2], op[3])))
            elif kind == m.PULL_FAILED:
                entry = self.objects.get(op[1])
                if entry is not None and entry.spill == PULLING:
                    self._pull_failed(op[1], entry, op[2])
            elif kind == m.FORWARD_CANCEL:
                self._on_cancel(op[1], op[2])
            elif kind == m.JOIN:
                self._on_join(sender, op[1], now, wall)
            elif kind == m.MEMBERS:
                self._on_members(sender, op[1], now)
            elif kind == m.NODE_JOINED:
                self._add_peer(op[1], now)
            elif kind == m.NODE_DEAD:
                if op[1] != self.node_id:
                    self._peer_died(op[1], op[2], wall)
                elif sender == self.head_id:
                    self._evicted(f"the head declared it dead ({op[2]})")
            elif kind == m.LEAVING:
                self._peer_died(sender, "it stopped", wall)
            elif kind == m.ACTOR_RELAY:
                self._on_peer_actor_op(sender, op)
            elif kind == m.CONTROL:
                if self.is_head:
                    self.control_writes.extend(op[1])

    def _on_join(self, sender: str, node: dict, now: float, wall: float) -> None:
        if not self.is_head:
            return
        members = [self._node_dict()] + [self._peer_dict(v) for v in self.peers.values()
                                         if v.alive and v.node_id != sender]
        for view in self.peers.values():
            if view.alive and view.node_id != sender:
                self.peer_outbox[view.node_id].append((m.NODE_JOINED, node))
        self._add_peer(node, now)
        self.peer_outbox[sender].append((m.MEMBERS, members))
        self.control_writes.append(("node_register", sender, node["address"],
                                    node["resources"], {}, wall))

    def _control(self, command: tuple) -> None:
        """A write for the cluster's control store, held by the head. The last
        field, the timestamp, may be None: the head's agent fills it in when it
        applies the command (the writer picks it, as replication requires)."""
        if not self.mesh_address:
            return                          # not in a cluster
        if self.is_head:
            self.control_writes.append(command)
            return
        head = self.head_id or HEAD
        box = self.peer_outbox[head]
        if box and box[-1][0] == m.CONTROL:
            box[-1][1].append(command)
        else:
            box.append((m.CONTROL, [command]))

    def _on_members(self, sender: str, members: list, now: float) -> None:
        self.head_id = sender
        self.mesh_rename.append((HEAD, sender))
        if HEAD in self.peer_outbox:
            self.peer_outbox[sender].extend(self.peer_outbox.pop(HEAD))
        for node in members:
            self._add_peer(node, now, connected=node["node_id"] == sender)

    def _add_peer(self, node: dict, now: float, connected: bool = False) -> None:
        node_id = node["node_id"]
        if node_id == self.node_id or node_id in self.peers:
            return
        self.peers[node_id] = NodeView(node_id, node["address"], to_units(node["resources"]))
        self.peers[node_id].load = dict(node.get("load") or {}, is_head=node.get("is_head", False))
        self.peer_seen[node_id] = now
        self.live_peers += 1
        if not connected:
            self.mesh_connect.append((node_id, node["address"]))
        self.needs_schedule = True

    @staticmethod
    def _peer_dict(view: NodeView) -> dict:
        return {"node_id": view.node_id, "address": view.address,
                "resources": {k: v / 10_000 for k, v in view.total.items()},
                "is_head": view.load.get("is_head", False),
                "load": {k: v for k, v in view.load.items() if k != "available"}}

    def _on_heartbeat(self, sender: str, load: dict, wall: float) -> None:
        view = self.peers.get(sender)
        if view is None:
            return
        view.available = dict(load["available"])
        view.hot = load["hot"]
        view.load = load
        if self.queues:
            self.needs_schedule = True     # room may have opened there
        if self.is_head:
            self.control_writes.append(("node_heartbeat", sender, _public_load(load), wall))

    def cluster_tick(self, now: float, wall: float, load: dict) -> None:
        """Every HEARTBEAT_INTERVAL: tell peers how we are; notice the silent ones."""
        self.load = load
        self.hot = load["hot"]
        load = dict(load, available=dict(self.pool.available), queued=self._queued_count(),
                    is_head=self.is_head)
        for node_id, view in self.peers.items():
            if view.alive:
                self.peer_outbox[node_id].append((m.HEARTBEAT, load))
        if self.is_head:
            self.control_writes.append(("node_heartbeat", self.node_id, _public_load(load), wall))
        for node_id, view in list(self.peers.items()):
            if view.alive and now - self.peer_seen.get(node_id, now) > DEAD_AFTER:
                self._peer_died(node_id, f"no heartbeat for {DEAD_AFTER:g} s", wall)

    def flush_pull_retries(self) -> None:
        retries, self.pull_retries = self.pull_retries, []
        for node_id, op in retries:
            self.peer_outbox[node_id].append(op)

    def _evicted(self, why: str) -> None:
        """This agent was dropped from the cluster: stop (restart it to join again)."""
        if not self.stopping:
            self.evicted = f"this agent was dropped from the cluster: {why}; restart it to join again"
            self.stopping = True

    def _queued_count(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def _peer_died(self, node_id: str, why: str, wall: float) -> None:
        view = self.peers.get(node_id)
        if view is None or not view.alive:
            return
        view.alive = False
        view.load = dict(view.load, died=why)
        self.live_peers -= 1
        self.mesh_disconnect.append(node_id)
        self.peer_outbox.pop(node_id, None)
        if self.is_head:
            self.control_writes.append(("node_dead", node_id, wall))
            for other, other_view in self.peers.items():
                if other_view.alive:
                    self.peer_outbox[other].append((m.NODE_DEAD, node_id, why))
        self._actors_on_dead_node(node_id, why)
        # Work sent there runs again elsewhere (or fails without retries left).
        for task in list(self.tasks.values()):
            if task.state == FORWARDED and task.node == node_id:
                self._forwarded_task_lost(task, node_id, why)
        for object_id, entry in list(self.objects.items()):
            if entry.pinned_for and node_id in entry.pinned_for:
                entry.pinned_for.discard(node_id)
                self._unref(object_id)
                continue
            if entry.copies:
                entry.copies.discard(node_id)
            if entry.location == node_id:
                if entry.spill == PULLING:
                    self._pull_failed(object_id, entry, f"node {node_id} died ({why})")
                elif entry.spill is None:
                    entry.location = None      # our copy is the only one left
        self.needs_schedule = True

    def _forwarded_task_lost(self, task, node_id: str, why: str) -> None:
        task.node = None
        if task.cancelled:
            self._fail_with(task, exceptions.TaskCancelledError(
                f"task {task.spec[ts.FUNCTION_NAME]}() was cancelled"))
        elif task.retries_left > 0:
            task.retries_left -= 1
            self._enqueue(task, front=True)
        else:
            self._fail_with(task, exceptions.WorkerCrashedError(
                f"node {node_id} running task {task.spec[ts.FUNCTION_NAME]}() died ({why}); "
                f"no retries left (max_retries={task.spec[ts.MAX_RETRIES]})"))

    # ============================================================ placement

    def _place_in_cluster(self, task):
        """None: run it here. True: forwarded to a peer, or failed."""
        node_id = self._cluster_target(task)
        if node_id is None:
            return True
        if node_id == self.node_id:
            return None
        self._forward(task, node_id)
        return True

    def _cluster_target(self, task):
        """The node a task (or an actor's constructor) should run on; None
        after failing it, when no node can ever run it."""
        spec = task.spec
        arg_bytes = (self._argument_bytes(spec[ts.DEPS])
                     if spec[ts.DEPS] and task.actor is None else None)
        local = NodeView(self.node_id, self.mesh_address, self.pool.total, self.pool.available,
                         hot=self.hot)
        strategy = spec[ts.STRATEGY]
        node_id, why = choose_node(_units(task), strategy, local, self.peers.values(),
                                   arg_bytes, self.spread_turn)
        if strategy == "SPREAD":
            self.spread_turn += 1
        if node_id is None:
            what = (f"actor {spec[ts.FUNCTION_NAME]}" if task.actor is not None
                    else f"task {spec[ts.FUNCTION_NAME]}()")
            self._fail_with(task, exceptions.TaskUnschedulableError(f"{what} cannot run: {why}"))
        return node_id

    def _argument_bytes(self, deps) -> dict:
        found: dict = {}
        objects = self.objects
        for object_id in deps:
            entry = objects[object_id]
            payload = entry.payload
            if payload is not None and payload[0] == SHARED:
                node = entry.location if entry.spill in (REMOTE, PULLING) else self.node_id
                found[node] = found.get(node, 0) + payload[1][1]
        return found

    def _forward(self, task, node_id: str) -> None:
        spec = task.spec
        function_id = spec[ts.FUNCTION_ID]
        sent = self.peer_functions[node_id]
        function_bytes = None
        if function_id not in sent:
            sent.add(function_id)
            function_bytes = self.functions[function_id]
        described = [self._describe_for(node_id, object_id)
                     for object_id in spec[ts.DEPS] + spec[ts.CONTAINED]]
        task.state = FORWARDED
        task.node = node_id
        task.worker = None
        view = self.peers[node_id]
        for name, need in _units(task).items():   # until its next heartbeat says
            view.available[name] = view.available.get(name, 0) - need
        self.peer_outbox[node_id].append((m.FORWARD, spec, function_bytes, described))

    def _describe_for(self, node_id: str, object_id: bytes):
        """How node_id finds an object: its payload, or where its segment is."""
        entry = self.objects.get(object_id)
        if entry is None or entry.pending:
            return None
        payload = entry.payload
        if payload[0] != SHARED:
            return payload
        if entry.spill in (REMOTE, PULLING) or (entry.location is not None
                                                and entry.location != node_id):
            holder, name = entry.location, entry.remote_name
        else:
            holder, name = self.node_id, payload[1][0]
        if entry.copies is None:
            entry.copies = set()
        entry.copies.add(node_id)
        return (AT, holder, (name,) + tuple(payload[1][1:]))

    # ======================================================= running for a peer

    def _on_forward(self, origin: str, spec: tuple, function_bytes, described: list) -> None:
        from .agent_state import Task
        if function_bytes is not None:
            self.functions[spec[ts.FUNCTION_ID]] = function_bytes
        task = Task(spec, b"")
        task.origin = origin
        self.tasks[task.task_id] = task
        objects = self.objects
        for object_id in return_ids(task.task_id, spec[ts.NUM_RETURNS]):
            entry = objects[object_id] = ObjectEntry(1)
            entry.pinned_for = {origin}
        for object_id, how in zip(spec[ts.DEPS] + spec[ts.CONTAINED], described):
            self._adopt(origin, object_id, how)
        self._pin(spec[ts.DEPS])
        self._pin(spec[ts.CONTAINED])
        if self._check_satisfiable(task):
            self._await_deps(task)

    def _adopt(self, origin: str, object_id: bytes, how) -> None:
        """Know an object a peer described (an argument of a task it sent us)."""
        entry = self.objects.get(object_id)
        if how is None or how[0] != AT:
            if entry is None:
                entry = self.objects[object_id] = ObjectEntry(0, payload=how)
                if how is None:
                    entry.payload = _lost(object_id, "it was not ready when its task was sent")
                    entry.pending = False
            return
        _, holder, layout = how
        if entry is None:
            if holder == self.node_id:      # ours, but gone meanwhile
                self.objects[object_id] = ObjectEntry(0, payload=_lost(object_id, "it was freed"))
                return
            entry = self.objects[object_id] = ObjectEntry(0)
            entry.pending = False
            entry.payload = (SHARED, (self.segment_prefix + object_id.hex(),) + tuple(layout[1:]))
            entry.spill = REMOTE
            entry.location = holder
            entry.remote_name = layout[0]
        if entry.pinned_for is None:
            entry.pinned_for = set()
        if origin not in entry.pinned_for:
            entry.pinned_for.add(origin)
            entry.refs += 1

    def _report_forwarded(self, task) -> None:
        """A task a peer sent us is over: send its results back (called on finish)."""
        origin = task.origin
        objects = self.objects
        described = []
        inner = []                       # per result: the refs inside it, described
        done_with = []
        for object_id in return_ids(task.task_id, task.spec[ts.NUM_RETURNS]):
            entry = objects.get(object_id)
            if entry is None or entry.payload is None:
                described.append(_lost(object_id, "its result was lost"))
                inner.append([])
                continue
            payload = entry.payload
            if payload[0] == SHARED:
                described.append((AT, self.node_id, payload[1]))
            else:
                described.append(payload)
                done_with.append(object_id)
            inner.append([(i, self._describe_pinned(origin, i)) for i in entry.contained])
        view = self.peers.get(origin)
        if view is not None and view.alive:
            self.peer_outbox[origin].append((m.RESULT, task.task_id, described, inner))
        else:
            done_with = [i for i in return_ids(task.task_id, task.spec[ts.NUM_RETURNS])]
        for object_id in done_with:         # the owner has the value (or is gone)
            entry = objects.get(object_id)
            if entry is not None and entry.pinned_for and origin in entry.pinned_for:
                entry.pinned_for.discard(origin)
                self._unref(object_id)

    def _describe_pinned(self, node_id: str, object_id: bytes):
        """_describe_for, and keep the object here until node_id FREEs it."""
        how = self._describe_for(node_id, object_id)
        if how is not None and how[0] == AT and how[1] == self.node_id:
            entry = self.objects[object_id]
            if entry.pinned_for is None:
                entry.pinned_for = set()
            if node_id not in entry.pinned_for:
                entry.pinned_for.add(node_id)
                entry.refs += 1
        return how

    def _adopt_inner(self, sender: str, object_id: bytes, how) -> None:
        """A ref inside a result from sender: know where its object is (the
        entry exists, pinned by the result)."""
        entry = self.objects[object_id]
        if not entry.pending:          # known here already: sender need not keep it
            if how is not None and how[0] == AT and how[1] == sender:
                self.peer_outbox[sender].append((m.FREE, [object_id]))
            return
        if how is None:
            self._set_ready(object_id, entry, _lost(
                object_id, f"it was not ready on node {sender} when a result holding it "
                "was sent here"), ())
        elif how[0] != AT:
            self._set_ready(object_id, entry, how, ())
        else:
            _, holder, layout = how
            entry.location = holder
            entry.remote_name = layout[0]
            entry.copies = {sender}
            entry.spill = REMOTE
            local = (self.segment_prefix + object_id.hex(),) + tuple(layout[1:])
            self._set_ready(object_id, entry, (SHARED, local), ())

    def _on_result(self, sender: str, task_id: bytes, described: list, inner=None) -> None:
        task = self.tasks.get(task_id)
        ids = return_ids(task_id, len(described))
        if task is None or task.state != FORWARDED or task.node != sender:
            stale = [i for i, how in zip(ids, described) if how[0] == AT]
            if stale:
                self.peer_outbox[sender].append((m.FREE, stale))
            return
        view = self.peers.get(sender)
        if view is not None:
            for name, need in _units(task).items():
                view.available[name] = view.available.get(name, 0) + need
        unwanted = []
        for index, (object_id, how) in enumerate(zip(ids, described)):
            entry = self.objects.get(object_id)
            refs_inside = inner[index] if inner else ()
            if refs_inside and (entry is None or not entry.pending):   # nobody wants it
                unwanted += [i for i, h in refs_inside if h is not None and h[0] == AT
                             and h[1] == sender]
            elif refs_inside:
                contained = [i for i, _ in refs_inside]
                self._pin(contained)           # held by the result, as on any node
                entry.contained = tuple(contained)
                for inner_id, inner_how in refs_inside:
                    self._adopt_inner(sender, inner_id, inner_how)
            if how[0] == AT:
                if entry is None or not entry.pending:
                    unwanted.append(object_id)
                    continue
                _, holder, layout = how
                entry.location = holder
                entry.remote_name = layout[0]
                entry.copies = {holder}
                entry.spill = REMOTE
                local = (self.segment_prefix + object_id.hex(),) + tuple(layout[1:])
                self._set_ready(object_id, entry, (SHARED, local), ())
            elif entry is not None and entry.pending:
                self._set_ready(object_id, entry, how, ())
        if unwanted:
            self.peer_outbox[sender].append((m.FREE, unwanted))
        self._finish_task(task)

    def _on_free(self, sender: str, object_ids: list) -> None:
        for object_id in object_ids:
            entry = self.objects.get(object_id)
            if entry is not None and entry.pinned_for and sender in entry.pinned_for:
                entry.pinned_for.discard(sender)
                self._unref(object_id)

    def _forget_remote(self, object_id: bytes, entry) -> None:
        """Freed here: tell the nodes we described it to; stop pulling it."""
        if entry.copies:
            for node_id in entry.copies:
                view = self.peers.get(node_id)
                if view is not None and view.alive:
                    box = self.peer_outbox[node_id]
                    if box and box[-1][0] == m.FREE:
                        box[-1][1].append(object_id)
                    else:
                        box.append((m.FREE, [object_id]))
        if entry.spill == PULLING:
            self._end_pull(object_id, entry)

    # ================================================================ pulls

    def _start_pull(self, object_id: bytes, entry) -> None:
        holder = entry.location
        view = self.peers.get(holder)
        if view is None or not view.alive:
            why = (f"node {holder} holding it died ({view.load.get('died', 'unknown')})"
                   if view is not None else f"node {holder} holding it is unknown")
            self._fail_readers(object_id, entry, why)
            return
        size = entry.payload[1][1]
        entry.spill = PULLING
        self.reserved += size
        pull = self.pulls[object_id] = Pull(holder, entry.remote_name, size)
        self.pull_io.append(("open", object_id, entry.payload[1][0], size))
        self._request_chunks(object_id, pull)

    def _request_chunks(self, object_id: bytes, pull: Pull) -> None:
        box = self.peer_outbox[pull.holder]
        while pull.inflight < WINDOW and pull.next_offset < pull.size:
            length = min(CHUNK, pull.size - pull.next_offset)
            box.append((m.PULL, object_id, pull.remote_name, pull.next_offset, length))
            pull.next_offset += length
            pull.inflight += 1

    def _pull_args(self, object_id: bytes, offset: int, length: int) -> tuple:
        pull = self.pulls.get(object_id)
        return (object_id, pull.remote_name if pull else "", offset, length)

    def _on_pull(self, sender: str, object_id: bytes, offset: int, length: int) -> None:
        """A peer asks for a chunk of an object we hold."""
        entry = self.objects.get(object_id)
        if (entry is None or entry.payload is None or entry.payload[0] != SHARED
                or entry.spill in (REMOTE, PULLING)):
            self.peer_outbox[sender].append(
                (m.PULL_FAILED, object_id, f"node {self.node_id} does not hold it any more"))
            return
        if entry.spill is not None and entry.spill != SPILLING:
            self._want_in_memory(object_id, entry)      # on disk here: restore first
            self.peer_outbox[sender].append((m.PULL_RETRY, object_id, offset, length))
            return
        if object_id in self.lru:
            self.lru.move_to_end(object_id)
        self.served_total += length
        self.peer_data.append((sender, (m.PULL_DATA, object_id, offset, length),
                               entry.payload[1][0]))

    def _on_pull_data(self, object_id: bytes, length: int) -> None:
        """A chunk arrived (the agent wrote it already)."""
        pull = self.pulls.get(object_id)
        if pull is None:
            return
        pull.inflight -= 1
        pull.received += length
        if pull.received < pull.size:
            self._request_chunks(object_id, pull)
            return
        entry = self.objects.get(object_id)
        self._end_pull(object_id, entry)
        if entry is None:
            return
        entry.spill = None
        self.store_used += pull.size
        self.pulled_total += pull.size
        self._track_in_memory(object_id)
        waiters, entry.restore_waiters = entry.restore_waiters, None
        for identity, request_id in waiters or ():
            self.outbox[identity].append((m.INFO_REPLY, request_id, ("ok", entry.payload)))
        self._wake_waiting_tasks(entry, entry.payload)

    def _end_pull(self, object_id: bytes, entry) -> None:
        pull = self.pulls.pop(object_id, None)
        if pull is None:
            return
        self.reserved -= pull.size
        self.needs_store_work = True
        if pull.received < pull.size:
            self.pull_io.append(("abort", object_id))
        if entry is not None and entry.spill == PULLING:
            entry.spill = REMOTE

    def _pull_failed(self, object_id: bytes, entry, why: str) -> None:
        self._end_pull(object_id, entry)
        self._fail_readers(object_id, entry, why)

    def _fail_readers(self, object_id: bytes, entry, why: str) -> None:
        """Readers and tasks waiting for an object that cannot be fetched."""
        lost = exceptions.ObjectLostError(
            f"object {object_id.hex()} could not be fetched from node {entry.location}: {why}")
        payload = (ERROR, serialization.dumps_exception(lost))
        waiters, entry.restore_waiters = entry.restore_waiters, None
        for identity, request_id in waiters or ():
            self.outbox[identity].append((m.INFO_REPLY, request_id, ("lost", payload[1])))
        self._wake_waiting_tasks(entry, payload)

    def _drop_copy(self, object_id: bytes, entry) -> None:
        """Evict a secondary copy: the primary is on entry.location."""
        self.lru.pop(object_id, None)
        self.free_segments.append(entry.payload[1][0])
        self.store_used -= entry.payload[1][1]
        entry.spill = REMOTE
        self._tell_holders_spilled(object_id)

    # ================================================================ info

    def nodes_info(self) -> list:
        local = {"node_id": self.node_id, "address": self.mesh_address or "(embedded)",
                 "alive": True, "is_head": self.is_head or not self.peers,
                 "resources": self.pool.as_floats("total"),
                 "available": self.pool.as_floats("available"),
                 "store_used": self.store_used, "store_capacity": self.store_capacity,
                 "spilled": self.spilled_now, "hot": self.hot,
                 "memory_fraction": self.load.get("memory_fraction", 0.0),
                 "queued": self._queued_count()}
        rows = [local]
        for view in self.peers.values():
            load = view.load
            rows.append({"node_id": view.node_id, "address": view.address, "alive": view.alive,
                         "is_head": load.get("is_head", False),
                         "resources": {k: v / 10_000 for k, v in view.total.items()},
                         "available": ({k: max(v, 0) / 10_000 for k, v in view.available.items()}
                                       if view.alive else {}),
                         "store_used": load.get("store_used", 0),
                         "store_capacity": load.get("store_capacity", 0),
                         "spilled": load.get("spilled", 0), "hot": view.hot,
                         "memory_fraction": load.get("memory_fraction", 0.0),
                         "queued": load.get("queued", 0),
                         "died": load.get("died")})
        return rows


def _units(task) -> dict:
    return {name: int(round(amount * 10_000)) for name, amount in task.request.items()}


def _public_load(load: dict) -> dict:
    return {k: v for k, v in load.items() if k != "available"}


def _lost(object_id: bytes, why: str):
    error = exceptions.ObjectLostError(f"object {object_id.hex()} is lost: {why}")
    return (ERROR, serialization.dumps_exception(error))

