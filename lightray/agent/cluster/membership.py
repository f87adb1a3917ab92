"""Agents working together: membership, heartbeats, deaths, the control store. No I/O.

    new agent ──JOIN──▶ head ──MEMBERS──▶ new agent (connects to everyone)
                        head ──NODE_JOINED──▶ the others (connect to it)
    every agent ──HEARTBEAT (load, available resources) every 0.5 s──▶ every peer
    a peer silent for DEAD_AFTER s: dead (the head records it and tells the others)
    any agent ──CONTROL [commands]──▶ control leader (the head while none is known) ──▶
        the replicated log (lightray.agent.cluster.control_plane; the I/O side holds the replica)
    control replicas ──RAFT bytes──▶ each other (the I/O side feeds them to its replica)

Work and objects across nodes are in lightray.agent.cluster.forwarding (tasks sent to
a peer, their results, pins across nodes) and lightray.agent.cluster.pulls (object
bytes moving between nodes); actors in lightray.agent.cluster.remote_actors.

``ClusterMembership`` is a part of ``AgentState`` (lightray.agent.state, its
``membership`` field): it owns the peers' views (node id -> NodeView, which
the other cluster parts read), this node's place in the cluster (mesh
address, head or not, live peers, hot) and the ops sent again at the next
tick. It hands each peer message to the part it is for, and reaches those
parts, the task path and the state's stop only through the functions passed
to it.
"""
from __future__ import annotations

from ... import task_spec as ts
from .. import instructions as i
from ...scheduling import NodeView, to_units
from ...states import FORWARDED, PULLING
from ...transport import messages as m
from .control_plane import HEAD_COMMANDS

HEARTBEAT_INTERVAL = 0.5     # seconds between heartbeats
DEAD_AFTER = 3.0             # seconds of silence after which a peer is dead
HEAD = "head"                # the head's mesh connection until its node id is known


class ClusterMembership:
    __slots__ = ("effects", "pool", "store", "peers", "peer_seen", "pull_retries", "queues",
                 "tasks", "objects", "directory", "node_id", "mesh_address", "is_head",
                 "head_id", "live_peers", "hot", "load", "_on_forward", "_on_result", "_on_free",
                 "_on_pull", "_on_pull_data", "_pull_args", "_pull_failed", "_on_actor_relay",
                 "_on_describe", "_on_described", "_actors_on_dead_node", "_retry_or_fail_lost",
                 "_cancel", "_dropped", "refused", "last_tick")

    def __init__(self, effects, pool, *, peers: dict, pull_retries: list, queues: dict,
                 tasks: dict, objects: dict, store, directory, node_id: str, on_forward,
                 on_result, on_free, on_pull, on_pull_data, pull_args, pull_failed,
                 on_actor_relay, on_describe, on_described, actors_on_dead_node,
                 retry_or_fail_lost, cancel, dropped):
        self.effects = effects           # lightray.agent.effects.Effects
        self.pool = pool                 # the node's ResourcePool
        self.store = store               # StoreCapacity (its figures go out with heartbeats)
        self.peers = peers               # node id -> NodeView (dead ones stay, alive=False)
        self.peer_seen: dict = {}        # node id -> monotonic time of its last message
        self.pull_retries = pull_retries   # (node id, op) to send again at the next tick
        self.queues = queues             # shape -> queued tasks
        self.tasks = tasks
        self.objects = objects           # the object table
        self.directory = directory       # ObjectDirectory (lightray.agent.objects)
        self.node_id = node_id
        self.mesh_address = ""           # set by start_cluster; "" when not in a cluster
        self.is_head = False
        self.head_id = None
        self.live_peers = 0
        self.hot = False
        self.load: dict = {}
        # peer messages (lightray.agent.cluster.forwarding, pulls, remote_actors)
        self._on_forward = on_forward
        self._on_result = on_result
        self._on_free = on_free
        self._on_pull = on_pull
        self._on_pull_data = on_pull_data
        self._pull_args = pull_args
        self._pull_failed = pull_failed        # (object id, entry, why)
        self._on_actor_relay = on_actor_relay
        self._on_describe = on_describe
        self._on_described = on_described
        self._actors_on_dead_node = actors_on_dead_node   # (node id, why)
        # the task path and the state
        self._retry_or_fail_lost = retry_or_fail_lost   # (task, cancelled detail, why)
        self._cancel = cancel                  # (object id, force, recursive): FORWARD_CANCEL
        self._dropped = dropped                # (why, rejoin): the head dropped this agent; stop
        self.refused = None              # why the head refused to admit this agent
        self.last_tick = None            # monotonic time of the last cluster_tick

    def start_cluster(self, mesh_address: str, head_address: str | None, now: float,
                      wall: float) -> None:
        """Join the cluster at head_address, or be its head (None)."""
        self.mesh_address = mesh_address
        if head_address is None:
            self.is_head = True
            self.head_id = self.node_id
            self.effects.control_writes.append(("node_register", self.node_id, mesh_address,
                                                self.pool.as_floats("total"), {}, wall))
        else:
            self.effects.mesh_connect.append((HEAD, head_address))
            self.effects.peer_outbox[HEAD].append((m.JOIN, self._node_dict()))

    def _node_dict(self) -> dict:
        return {"node_id": self.node_id, "address": self.mesh_address,
                "protocol": m.PROTOCOL_VERSION,
                "resources": self.pool.as_floats("total"), "is_head": self.is_head,
                "load": {"store_capacity": self.store.capacity, "store_used": self.store.used,
                         "spilled": self.store.spilled_now, "is_head": self.is_head}}

    # ============================================================ membership

    def handle_peer(self, sender: str, ops: list, now: float, wall: float):
        """Ops from sender (their shapes checked: lightray.agent.cluster.admission).
        None when taken; (why, answer) when dropped: why for the log, answer
        None or the text of a JOIN_REFUSED to send back."""
        view = self.peers.get(sender)
        if view is None:
            return self._from_stranger(sender, ops, now, wall)
        if not view.alive:
            # Declared dead: for good. A node that stalled past DEAD_AFTER and
            # came back learns it was dropped; one that hears from the head it
            # had given up on knows the head dropped it too.
            if self.is_head:
                self.effects.peer_outbox[sender].append(
                    (m.NODE_DEAD, sender, view.load.get("died")))
                self.effects.mesh_connect.append((sender, view.address))
                self.effects.mesh_disconnect.append(sender)
            elif sender == self.head_id:
                self._dropped(f"it lost contact with the head for more than {DEAD_AFTER:g} s")
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
                self._on_pull_data(op[1], op[3], len(op) > 4 and op[4])
            elif kind == m.PULL_RETRY:
                self.pull_retries.append(
                    (sender, (m.PULL,) + self._pull_args(op[1], op[2], op[3])))
            elif kind == m.PULL_FAILED:
                entry = self.objects.get(op[1])
                if entry is not None and entry.spill == PULLING:
                    self._pull_failed(op[1], entry, op[2])
            elif kind == m.FORWARD_CANCEL:
                self._cancel(*op[1:])           # (object id, force[, recursive])
            elif kind == m.JOIN:
                self._on_join(sender, op[1], now, wall)
            elif kind == m.NODE_JOINED:
                if sender == self.head_id:      # only the head admits nodes
                    self._add_peer(op[1], now)
            elif kind == m.NODE_DEAD:
                if sender != self.head_id:
                    continue                    # only the head declares deaths
                if op[1] != self.node_id:
                    self._peer_died(op[1], op[2], wall)
                elif sender == self.head_id:
                    self._dropped(f"the head declared it dead ({op[2]})")
            elif kind == m.LEAVING:
                self._peer_died(sender, "it stopped", wall)
            elif kind == m.ACTOR_RELAY:
                self._on_actor_relay(sender, op)
            elif kind == m.DESCRIBE:
                self._on_describe(sender, op[1], op[2])
            elif kind == m.DESCRIBED:
                self._on_described(sender, op[1], op[2])
            elif kind == m.CONTROL:
                if sender != self.head_id:
                    refused = next((c[0] for c in op[1] if c[0] in HEAD_COMMANDS), None)
                    if refused is not None:
                        return (f"dropped CONTROL from peer {sender}: a peer other than the "
                                f"head may not send the command {refused!r}", None)
                self.effects.control_forwarded.extend(op[1])
            elif kind == m.RAFT:
                self.effects.raft_in.append((sender, op[1]))
        return None

    def _from_stranger(self, sender: str, ops: list, now: float, wall: float):
        """A node that has not joined may only JOIN (the head admits it if it
        speaks our protocol); an agent still joining also takes the head's
        answer, MEMBERS or JOIN_REFUSED, from whoever the head turns out to be."""
        kinds = {op[0] for op in ops}
        if kinds <= {m.JOIN, m.LEAVING}:
            if not self.is_head or m.JOIN not in kinds:
                return None       # LEAVING: it gave up before it was admitted
            node = next(op[1] for op in ops if op[0] == m.JOIN)
            problem = _join_problem(sender, node)
            if problem is not None:
                return (f"refused node {sender} at {node['address']}: {problem}", problem)
            self._on_join(sender, node, now, wall)
            return None
        if self.waiting_for_head():
            for op in ops:
                if op[0] == m.JOIN_REFUSED:
                    self.refused = op[1]
                    self._dropped(f"the head refused it: {op[1]}", False)
                    return None
                if op[0] == m.MEMBERS:
                    self._on_members(sender, op[1], now)
                    # The head is a member now: the rest of its message counts.
                    return self.handle_peer(sender, [o for o in ops if o[0] != m.MEMBERS],
                                            now, wall) if len(ops) > 1 else None
        names = ", ".join(sorted(_OP_NAMES.get(k, str(k)) for k in kinds))
        return (f"dropped {names} from node {sender}, which has not joined the cluster", None)

    def _on_join(self, sender: str, node: dict, now: float, wall: float) -> None:
        if not self.is_head:
            return
        members = [self._node_dict()] + [self._peer_dict(v) for v in self.peers.values()
                                         if v.alive and v.node_id != sender]
        for view in self.peers.values():
            if view.alive and view.node_id != sender:
                self.effects.peer_outbox[view.node_id].append((m.NODE_JOINED, node))
        self._add_peer(node, now)
        self.effects.peer_outbox[sender].append((m.MEMBERS, members))
        self.effects.control_writes.append(("node_register", sender, node["address"],
                                            node["resources"], {}, wall))

    def control(self, command: tuple) -> None:
        """A write for the cluster's control store. The I/O side proposes it to
        this node's replica if it leads, or sends it to the leader
        (lightray.agent.cluster.control_plane). The last field, the timestamp,
        may be None: the leader's agent fills it in before the write is
        logged (the writer picks it, as replication requires)."""
        if not self.mesh_address:
            return                          # not in a cluster
        self.effects.control_writes.append(command)

    def control_members(self) -> list:
        """(node id, alive, heard) of every node known, in join order, this one
        first; heard: a heartbeat of it came (it says its control role in them)."""
        return [(self.node_id, True, True)] + [(v.node_id, v.alive, "control" in v.load)
                                               for v in self.peers.values()]

    def control_roles(self) -> list:
        """(node id, alive, control role) of the peers, from their heartbeats."""
        return [(v.node_id, v.alive, v.load.get("control")) for v in self.peers.values()]

    def _on_members(self, sender: str, members: list, now: float) -> None:
        self.head_id = sender
        self.effects.mesh_rename.append((HEAD, sender))
        if HEAD in self.effects.peer_outbox:
            self.effects.peer_outbox[sender].extend(self.effects.peer_outbox.pop(HEAD))
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
            self.effects.mesh_connect.append((node_id, node["address"]))
        self.effects.needs_schedule = True

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
            self.effects.needs_schedule = True     # room may have opened there
        if self.is_head:
            self.effects.control_writes.append(("node_heartbeat", sender, _public_load(load), wall))

    def cluster_tick(self, now: float, wall: float, load: dict) -> None:
        """Every HEARTBEAT_INTERVAL: tell peers how we are; notice the silent ones."""
        if self.last_tick is not None and now - self.last_tick > DEAD_AFTER / 2:
            # This agent itself was stopped (SIGSTOP, swapping): the silence was
            # ours, not the peers'. Declaring them dead now would cut us off for
            # good (we would stop sending, so nobody would ever tell us the head
            # dropped us meanwhile). Give each a fresh DEAD_AFTER instead: the
            # head answers our next heartbeat with NODE_DEAD if it dropped us.
            for node_id in self.peer_seen:
                self.peer_seen[node_id] = now
        self.last_tick = now
        self.load = load
        self.hot = load["hot"]
        load = dict(load, available=dict(self.pool.available), queued=self._queued_count(),
                    is_head=self.is_head)
        for node_id, view in self.peers.items():
            if view.alive:
                self.effects.peer_outbox[node_id].append((m.HEARTBEAT, load))
        if self.is_head:
            self.effects.control_writes.append(
                ("node_heartbeat", self.node_id, _public_load(load), wall))
        for node_id, view in list(self.peers.items()):
            if view.alive and now - self.peer_seen.get(node_id, now) > DEAD_AFTER:
                self._peer_died(node_id, f"no heartbeat for {DEAD_AFTER:g} s", wall)

    def flush_pull_retries(self) -> None:
        for node_id, op in self.pull_retries:
            self.effects.peer_outbox[node_id].append(op)
        self.pull_retries.clear()   # (in place: the remote actors part appends to it too)

    def _queued_count(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def _peer_died(self, node_id: str, why: str, wall: float) -> None:
        view = self.peers.get(node_id)
        if view is None or not view.alive:
            return
        view.alive = False
        view.load = dict(view.load, died=why)
        self.live_peers -= 1
        self.effects.mesh_disconnect.append(node_id)
        self.effects.peer_outbox.pop(node_id, None)
        if self.is_head:
            self.effects.control_writes.append(("node_dead", node_id, wall))
            for other, other_view in self.peers.items():
                if other_view.alive:
                    self.effects.peer_outbox[other].append((m.NODE_DEAD, node_id, why))
        self._actors_on_dead_node(node_id, why)
        # Work sent there runs again elsewhere (or fails without retries left).
        for task in list(self.tasks.values()):
            if task.state == FORWARDED and task.node == node_id:
                self._forwarded_task_lost(task, node_id, why)
        for object_id, entry in list(self.objects.items()):
            if entry.pinned_for and node_id in entry.pinned_for:
                entry.pinned_for.discard(node_id)
                self.directory.unref(object_id)
                continue
            if entry.copies:
                entry.copies.discard(node_id)
            if entry.location == node_id:
                if entry.spill == PULLING:
                    self._pull_failed(object_id, entry, f"node {node_id} died ({why})")
                elif entry.spill is None:
                    entry.location = None      # our copy is the only one left
        self.effects.needs_schedule = True

    def _forwarded_task_lost(self, task, node_id: str, why: str) -> None:
        task.node = None
        self._retry_or_fail_lost(
            task, "", f"node {node_id} running task {task.spec[ts.FUNCTION_NAME]}() "
                      f"died ({why})")

    def waiting_for_head(self) -> bool:
        """A joining agent the head has not admitted yet."""
        return not self.is_head and self.head_id is None

    def leaving(self) -> list:
        """SendPeer instructions that tell the peers this agent stops."""
        out = [i.SendPeer(node_id, [(m.LEAVING,)])
               for node_id, view in self.peers.items() if view.alive]
        if self.head_id is None:   # not admitted yet: the head knows us already
            out.append(i.SendPeer(HEAD, [(m.LEAVING,)]))
        return out

    # ================================================================ info

    def resources(self) -> dict:
        """The resources of the live nodes, summed: total and available."""
        total: dict = {}
        available: dict = {}
        for node in self.nodes_info():
            if node["alive"]:
                for name, amount in node["resources"].items():
                    total[name] = total.get(name, 0) + amount
                for name, amount in node["available"].items():
                    available[name] = available.get(name, 0) + amount
        return {"total": total, "available": available}

    def nodes_info(self) -> list:
        local = {"node_id": self.node_id, "address": self.mesh_address or "(embedded)",
                 "alive": True, "is_head": self.is_head or not self.mesh_address,
                 "resources": self.pool.as_floats("total"),
                 "available": self.pool.as_floats("available"),
                 "store_used": self.store.used, "store_capacity": self.store.capacity,
                 "spilled": self.store.spilled_now, "hot": self.hot,
                 "pulled": self.store.pulled_total, "served": self.store.served_total,
                 "warm": self.store.warm_bytes,
                 "memory_fraction": self.load.get("memory_fraction", 0.0),
                 "queued": self._queued_count(), "control": self.load.get("control")}
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
                         "pulled": load.get("pulled", 0), "served": load.get("served", 0),
                         "warm": load.get("warm", 0),
                         "memory_fraction": load.get("memory_fraction", 0.0),
                         "queued": load.get("queued", 0),
                         "control": load.get("control") if view.alive else None,
                         "died": load.get("died")})
        return rows


def _join_problem(sender: str, node: dict):
    """Why the head will not admit a JOIN, None if it will."""
    version = node.get("protocol")
    if version != m.PROTOCOL_VERSION:
        return (f"it speaks lightray protocol version {version}, this cluster version "
                f"{m.PROTOCOL_VERSION} (run the same lightray version on every node)")
    if node["node_id"] != sender:
        return f"its JOIN names another node id ({node['node_id']!r:.40})"
    return None


_OP_NAMES = {code: name for name, code in vars(m).items()
             if name.isupper() and type(code) is int and 300 < code < 400}


def _public_load(load: dict) -> dict:
    return {k: v for k, v in load.items() if k != "available"}
