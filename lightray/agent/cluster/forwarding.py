"""Tasks sent to other nodes, their results, and pins across nodes. No I/O.

    task submitted here ──choose_node (lightray.scheduling)──▶ here, or
        ──FORWARD(spec, function once, argument descriptors)──▶ peer runs it
        ◀──RESULT(inline values, or "at <node>" for a segment kept there,
                  and the refs inside each result, described)──

Objects on other nodes. The node where a task was submitted owns its results,
wherever they were made: the owner's entry points at the node holding the
primary copy (``location``, spill state REMOTE) and gives its local readers a
layout naming a local segment that does not exist yet; a reader finding it
missing asks for it (RESTORE) and the agent pulls it (lightray.agent.cluster.pulls).

Pins across nodes: a node holding an object for another (the primary copy
of a forwarded task's result, a copy of a forwarded task's argument, a ref
inside a result) keeps one pin per node that told it about the object
(``pinned_for``); that node sends FREE when it lets go (every node it
described the object to is in its ``copies``).

``TaskForwarding`` is a part of ``AgentState`` (lightray.agent.state, its
``forwarding`` field): it owns which functions each peer has been sent and
the SPREAD turn, works on the tables and the Effects it is given (the peers'
views: only their resources in flight), moves bytes through the object pulls
part and reaches the task path only through the functions passed to it.
"""
from __future__ import annotations

import collections

from ... import exceptions, serialization
from ... import task_spec as ts
from .pulls import PUSH_MAX
from ...ids import return_ids
from ..lineage import make_pending
from ..records import ObjectEntry, Task
from ...scheduling import NodeView, choose_node
from ...serialization import ERROR, SHARED
from ...states import FINISHED, FORWARDED, PULLING, REMOTE
from ...transport import messages as m

AT = "at"                    # argument / result descriptor: ("at", node id, layout there)
PUSHED = "pushed"            # ... the same, its bytes following (lightray.agent.cluster.pulls)


class TaskForwarding:
    __slots__ = ("effects", "transitions", "pool", "peers", "objects", "tasks", "functions",
                 "directory", "node_id", "segment_prefix", "peer_functions", "spread_turn",
                 "_mesh_address", "_hot", "_push", "_expect_push", "_end_pull", "_fail_with",
                 "_check_satisfiable", "_await_deps", "_finish_task")

    def __init__(self, effects, transitions, pool, *, peers: dict, objects: dict, tasks: dict,
                 functions: dict, directory, node_id: str, segment_prefix: str, mesh_address,
                 hot, push, expect_push, end_pull, fail_with, check_satisfiable, await_deps,
                 finish_task):
        self.effects = effects           # lightray.agent.effects.Effects
        self.transitions = transitions   # lightray.states.Transitions
        self.pool = pool                 # the node's ResourcePool
        self.peers = peers               # node id -> NodeView (the cluster membership's)
        self.objects = objects           # the object table
        self.tasks = tasks
        self.functions = functions       # function id -> its pickled bytes
        self.directory = directory       # ObjectDirectory (lightray.agent.objects)
        self.node_id = node_id
        self.segment_prefix = segment_prefix   # where processes here write segments
        self.peer_functions = collections.defaultdict(set)   # node id -> function ids sent
        self.spread_turn = 0             # SPREAD tasks placed so far
        # the cluster membership
        self._mesh_address = mesh_address      # () -> this node's mesh address
        self._hot = hot                        # () -> whether this node's memory is hot
        # object bytes (lightray.agent.cluster.pulls)
        self._push = push                      # (node id, object id, layout): send unasked
        self._expect_push = expect_push        # (object id, entry): its bytes are coming
        self._end_pull = end_pull              # (object id, entry): stop pulling it
        # the task path (lightray.agent.state)
        self._fail_with = fail_with            # (task, exception)
        self._check_satisfiable = check_satisfiable   # (task) -> False if it failed it
        self._await_deps = await_deps          # (task)
        self._finish_task = finish_task        # (task)

    def place_in_cluster(self, task):
        """None: run it here. True: forwarded to a peer, or failed."""
        node_id = self.cluster_target(task)
        if node_id is None:
            return True
        if node_id == self.node_id:
            return None
        self._forward(task, node_id)
        return True

    def cluster_target(self, task):
        """The node a task (or an actor's constructor) should run on; None
        after failing it, when no node can ever run it."""
        spec = task.spec
        arg_bytes = (self._argument_bytes(spec[ts.DEPS])
                     if spec[ts.DEPS] and task.actor is None else None)
        local = NodeView(self.node_id, self._mesh_address(), self.pool.total, self.pool.available,
                         hot=self._hot())
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
        described = [self.describe_for(node_id, object_id)
                     for object_id in spec[ts.DEPS] + spec[ts.CONTAINED]]
        self.transitions.task(task, FORWARDED, ("placed on", node_id))
        task.node = node_id
        task.worker = None
        view = self.peers[node_id]
        for name, need in _units(task).items():   # until its next heartbeat says
            view.available[name] = view.available.get(name, 0) - need
        self.effects.peer_outbox[node_id].append((m.FORWARD, spec, function_bytes, described))

    def describe_for(self, node_id: str, object_id: bytes):
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
        first_time = node_id not in entry.copies
        entry.copies.add(node_id)
        layout = (name,) + tuple(payload[1][1:])
        if (first_time and holder == self.node_id and entry.spill is None
                and payload[1][1] <= PUSH_MAX):
            # Small and here: send its bytes right behind the task instead of
            # waiting to be asked (saves a round trip per small argument).
            self._push(node_id, object_id, payload[1])
            return (PUSHED, holder, layout)
        return (AT, holder, layout)

    # ======================================================= running for a peer

    def on_forward(self, origin: str, spec: tuple, function_bytes, described: list) -> None:
        if function_bytes is not None:
            self.functions[spec[ts.FUNCTION_ID]] = function_bytes
        task = Task(spec, b"")
        task.origin = origin
        self.tasks[task.task_id] = task
        objects = self.objects
        for object_id in return_ids(task.task_id, spec[ts.NUM_RETURNS]):
            entry = objects.get(object_id)
            if entry is None:
                entry = objects[object_id] = ObjectEntry(1)
                entry.pinned_for = {origin}
            else:     # run again (lineage): we may hold a copy pulled before it was lost
                pin_for(origin, entry)
                if not entry.pending and (entry.spill == REMOTE or entry.spill == PULLING
                                          or entry.payload[0] == ERROR):
                    # No copy here, only what we knew of the lost one (where it
                    # was, or the loss itself): this run makes it again.
                    self._make_pending_again(object_id, entry)
        for object_id, how in zip(spec[ts.DEPS] + spec[ts.CONTAINED], described):
            self.adopt(origin, object_id, how)
        self.directory.pin(spec[ts.DEPS])
        self.directory.pin(spec[ts.CONTAINED])
        if spec[ts.NUM_RETURNS] and any(
                how is not None and how[0] == AT and not self._alive(how[1])
                for how in described):
            # An argument is on a node that died (the origin does not know yet):
            # the origin owns it and rebuilds it; this task cannot run here now.
            self.hand_back(task)
        elif self._check_satisfiable(task):
            self._await_deps(task)

    def _make_pending_again(self, object_id: bytes, entry) -> None:
        make_pending(object_id, entry, ("made again for", "its owner"),
                     self.transitions, self.directory, self._end_pull)

    def _alive(self, node_id: str) -> bool:
        if node_id == self.node_id:
            return True
        view = self.peers.get(node_id)
        return view is not None and view.alive

    def hand_back(self, task) -> None:
        """Give a task a peer sent us back to it, unrun (RESULT with no
        descriptors): an argument it owns was lost here, it will send the task
        again once the argument is made again (lightray.agent.lineage)."""
        self.transitions.task(task, FINISHED, ("handed back to", task.origin))
        self.tasks.pop(task.task_id, None)
        spec = task.spec
        objects = self.objects
        for object_id in return_ids(task.task_id, spec[ts.NUM_RETURNS]):
            entry = objects.get(object_id)
            if entry is not None and entry.pinned_for and task.origin in entry.pinned_for:
                entry.pinned_for.discard(task.origin)
                if entry.pending and entry.refs <= 1:
                    entry.pending = False      # never produced here: nothing to keep
                self.directory.unref(object_id)
        for object_id in spec[ts.DEPS]:
            self.directory.unref(object_id)
        for object_id in spec[ts.CONTAINED]:
            self.directory.unref(object_id)
        self.effects.peer_outbox[task.origin].append((m.RESULT, task.task_id, [], None))

    def adopt(self, origin: str, object_id: bytes, how) -> None:
        """Know an object a peer described (an argument of a task it sent us)."""
        entry = self.objects.get(object_id)
        if how is None:                     # not ready there yet: ask until it is
            if entry is None:
                entry = self.objects[object_id] = ObjectEntry(0)
                self.ask_when_ready(origin, object_id, entry)
            return
        if how[0] != AT and how[0] != PUSHED:
            if entry is None:
                self.objects[object_id] = ObjectEntry(0, payload=how)
            return
        kind, holder, layout = how
        if (entry is not None and not entry.pending and holder != self.node_id
                and entry.location != holder
                and (entry.spill == REMOTE or entry.payload[0] == ERROR)):
            # What we knew of it is stale (its node died and its owner made it
            # again elsewhere): the owner's word wins.
            entry.payload = (SHARED, (self.segment_prefix + object_id.hex(),) + tuple(layout[1:]))
            self.transitions.object(object_id, entry, REMOTE, ("now on", holder))
            entry.location = holder
            entry.remote_name = layout[0]
            if kind == PUSHED:
                self._expect_push(object_id, entry)
        elif entry is None:
            if holder == self.node_id:      # ours, but gone meanwhile
                self.objects[object_id] = ObjectEntry(0, payload=_lost(object_id, "it was freed"))
                return
            entry = self.objects[object_id] = ObjectEntry(0)
            entry.pending = False
            entry.payload = (SHARED, (self.segment_prefix + object_id.hex(),) + tuple(layout[1:]))
            entry.spill = REMOTE
            entry.location = holder
            entry.remote_name = layout[0]
            if kind == PUSHED:
                self._expect_push(object_id, entry)
        if entry.pinned_for is None:
            entry.pinned_for = set()
        if origin not in entry.pinned_for:
            entry.pinned_for.add(origin)
            entry.refs += 1

    def ask_when_ready(self, node_id: str, object_id: bytes, entry) -> None:
        """A pending entry whose object node_id will make: DESCRIBE it there
        (asked again while it answers "wait"; node_id pins it for us meanwhile;
        lightray.agent.cluster.remote_actors answers and reads the answers)."""
        entry.location = node_id
        self.effects.peer_outbox[node_id].append((m.DESCRIBE, 0, [object_id]))

    def report_forwarded(self, task) -> None:
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
            self.effects.peer_outbox[origin].append((m.RESULT, task.task_id, described, inner))
        else:
            done_with = [i for i in return_ids(task.task_id, task.spec[ts.NUM_RETURNS])]
        for object_id in done_with:         # the owner has the value (or is gone)
            entry = objects.get(object_id)
            if entry is not None and entry.pinned_for and origin in entry.pinned_for:
                entry.pinned_for.discard(origin)
                self.directory.unref(object_id)

    def _describe_pinned(self, node_id: str, object_id: bytes):
        """_describe_for, and keep the object here until node_id FREEs it."""
        how = self.describe_for(node_id, object_id)
        if how is None or (how[0] in (AT, PUSHED) and how[1] == self.node_id):
            entry = self.objects.get(object_id)
            if entry is not None:           # (not ready yet: node_id asks for it later)
                pin_for(node_id, entry)
        return how

    def adopt_inner(self, sender: str, object_id: bytes, how) -> None:
        """A ref inside a result from sender: know where its object is (the
        entry exists, pinned by the result)."""
        entry = self.objects[object_id]
        if not entry.pending:          # known here already: sender need not keep it
            if how is not None and how[0] in (AT, PUSHED) and how[1] == sender:
                self.effects.peer_outbox[sender].append((m.FREE, [object_id]))
            return
        if how is None:
            self.ask_when_ready(sender, object_id, entry)
        elif how[0] != AT and how[0] != PUSHED:
            self.directory.set_ready(object_id, entry, how, ())
        else:
            self._set_ready_elsewhere(object_id, entry, how[1], how[2], sender)
            if how[0] == PUSHED and object_id in self.objects:
                self._expect_push(object_id, entry)

    def _set_ready_elsewhere(self, object_id: bytes, entry, holder: str, layout,
                             pinned_by: str) -> None:
        """Ready, its bytes on holder (in a segment laid out as layout there);
        pinned_by keeps it for us until we send FREE."""
        entry.location = holder
        entry.remote_name = layout[0]
        entry.copies = {pinned_by}
        self.transitions.object(object_id, entry, REMOTE, ("ready on", holder))
        local = (self.segment_prefix + object_id.hex(),) + tuple(layout[1:])
        self.directory.set_ready(object_id, entry, (SHARED, local), ())

    def on_result(self, sender: str, task_id: bytes, described: list, inner=None) -> None:
        task = self.tasks.get(task_id)
        ids = return_ids(task_id, len(described))
        if task is None or task.state != FORWARDED or task.node != sender:
            stale = [i for i, how in zip(ids, described) if how[0] == AT]
            if stale:
                self.effects.peer_outbox[sender].append((m.FREE, stale))
            return
        view = self.peers.get(sender)
        if view is not None:
            for name, need in _units(task).items():
                view.available[name] = view.available.get(name, 0) + need
        if not described and task.spec[ts.NUM_RETURNS]:
            # Handed back unrun (see hand_back): wait for its arguments again;
            # they are being made again here, or failed.
            task.node = None
            self._await_deps(task)
            return
        unwanted = []
        for index, (object_id, how) in enumerate(zip(ids, described)):
            entry = self.objects.get(object_id)
            refs_inside = inner[index] if inner else ()
            if refs_inside and (entry is None or not entry.pending):   # nobody wants it
                unwanted += [i for i, h in refs_inside if h is not None
                             and h[0] in (AT, PUSHED) and h[1] == sender]
            elif refs_inside:
                contained = [i for i, _ in refs_inside]
                self.directory.pin(contained)           # held by the result, as on any node
                entry.contained = tuple(contained)
                for inner_id, inner_how in refs_inside:
                    self.adopt_inner(sender, inner_id, inner_how)
            if how[0] == AT:
                if entry is None or not entry.pending:
                    unwanted.append(object_id)
                    continue
                self._set_ready_elsewhere(object_id, entry, how[1], how[2], sender)
            elif entry is not None and entry.pending:
                self.directory.set_ready(object_id, entry, how, ())
        if unwanted:
            self.effects.peer_outbox[sender].append((m.FREE, unwanted))
        self._finish_task(task)

    def on_free(self, sender: str, object_ids: list) -> None:
        for object_id in object_ids:
            entry = self.objects.get(object_id)
            if entry is not None and entry.pinned_for and sender in entry.pinned_for:
                entry.pinned_for.discard(sender)
                self.directory.unref(object_id)

    def forget_remote(self, object_id: bytes, entry) -> None:
        """Freed here: tell the nodes we described it to; stop pulling it."""
        if entry.copies:
            for node_id in entry.copies:
                view = self.peers.get(node_id)
                if view is not None and view.alive:
                    box = self.effects.peer_outbox[node_id]
                    if box and box[-1][0] == m.FREE:
                        box[-1][1].append(object_id)
                    else:
                        box.append((m.FREE, [object_id]))
        if entry.spill == PULLING:
            self._end_pull(object_id, entry)


def pin_for(node_id: str, entry) -> None:
    """Keep entry here until node_id sends FREE (once however often asked)."""
    if entry.pinned_for is None:
        entry.pinned_for = set()
    if node_id not in entry.pinned_for:
        entry.pinned_for.add(node_id)
        entry.refs += 1


def _units(task) -> dict:
    return {name: int(round(amount * 10_000)) for name, amount in task.request.items()}


def _lost(object_id: bytes, why: str):
    error = exceptions.ObjectLostError(f"object {object_id.hex()} is lost: {why}")
    return (ERROR, serialization.dumps_exception(error))

