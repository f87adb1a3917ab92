"""Agents working together: membership, heartbeats, deaths, the control store. No I/O.

    new agent ──JOIN──▶ any member ──JOIN_VIA──▶ the authority (unless it is one)
              the authority ──MEMBERS──▶ new agent (connects to everyone)
              the authority ──NODE_JOINED──▶ the others (connect to it)
    every agent ──HEARTBEAT (load, available resources) every 0.5 s──▶ every peer
    the authority: a peer silent for dead_after s (LIGHTRAY_NODE_DEAD_AFTER_S) is dead;
        it logs node_dead and sends NODE_DEAD (node, why, incarnation) to the others
    any agent: a peer whose reconnects are refused (its process is gone:
        lightray.transport.peer_watch) or that said LEAVING is dead
    a dead node that speaks again ◀──NODE_DEAD (its incarnation)── the authority:
        it gives up the work it sent out and JOINs again as incarnation + 1
    any agent ──CONTROL [commands]──▶ control leader (the head while none is known) ──▶
        the replicated log (lightray.agent.cluster.control_plane; the I/O side holds the replica)
    control replicas ──RAFT bytes──▶ each other (the I/O side feeds them to its replica)

Work and objects across nodes are in lightray.agent.cluster.forwarding (tasks sent to
a peer, their results, pins across nodes) and lightray.agent.cluster.pulls (object
bytes moving between nodes); actors in lightray.agent.cluster.remote_actors.

The membership authority is the control leader (the head while no leader is
known): it admits nodes, judges silence and writes node_register /
node_heartbeat / node_dead to the replicated log; a new leader first logs the
deaths it knows of. Liveness bookkeeping is lightray.agent.cluster.node_table.

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
from ...config import NODE_DEAD_AFTER_DEFAULT
from .control_plane import HEAD_COMMANDS, LEADER, REPLICA
from . import node_rows
from .early_ops import EarlyOps, not_joined
from .node_table import NodeTable

HEARTBEAT_INTERVAL = 0.5     # seconds between heartbeats
HEAD = "head"                # the join connection until the node id behind it is known
                             # (lightray.transport.mesh knows this key too)
REJOIN_AGAIN = 3.0           # seconds before a rejoining agent asks again
CONTROL_ROLES = (LEADER, REPLICA)


class ClusterMembership:
    __slots__ = ("effects", "pool", "store", "peers", "nodes", "pull_retries", "queues",
                 "tasks", "objects", "directory", "node_id", "mesh_address", "is_head",
                 "head_id", "live_peers", "hot", "load", "_on_forward", "_on_result", "_on_free",
                 "_on_pull", "_on_pull_data", "_pull_args", "_pull_failed", "_on_actor_relay",
                 "_on_describe", "_on_described", "_actors_on_dead_node", "_retry_or_fail_lost",
                 "_cancel", "_dropped", "refused", "incarnation", "leader_id", "was_authority",
                 "join_address", "rejoining", "early")

    def __init__(self, effects, pool, *, peers: dict, pull_retries: list, queues: dict,
                 tasks: dict, objects: dict, store, directory, node_id: str, on_forward,
                 on_result, on_free, on_pull, on_pull_data, pull_args, pull_failed,
                 on_actor_relay, on_describe, on_described, actors_on_dead_node,
                 retry_or_fail_lost, cancel, dropped):
        self.effects = effects           # lightray.agent.effects.Effects
        self.pool = pool                 # the node's ResourcePool
        self.store = store               # StoreCapacity (its figures go out with heartbeats)
        self.peers = peers               # node id -> NodeView (dead ones stay, alive=False)
        self.nodes = NodeTable(NODE_DEAD_AFTER_DEFAULT)   # liveness (start_cluster sets it)
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
        self.incarnation = 0             # one more each time this node joins again
        self.leader_id = None            # the control leader as known here (set_leader)
        self.was_authority = False       # this node was the membership authority last tick
        self.join_address = None         # the address our join connection (HEAD) goes to
        self.rejoining = None            # (authority, time asked) while joining again
        self.early = EarlyOps()          # messages from peers not known yet as members

    def start_cluster(self, mesh_address: str, join_address: str | None, now: float,
                      wall: float, dead_after: float = NODE_DEAD_AFTER_DEFAULT) -> None:
        """Join the cluster through the member at join_address, or be its head
        (None). (The I/O side tries the next address of a list while no
        answer comes: lightray.agent.server.)"""
        self.mesh_address = mesh_address
        self.nodes = NodeTable(dead_after)
        if join_address is None:
            self.is_head = True
            self.head_id = self.node_id
            self.effects.control_writes.append(("node_register", self.node_id, mesh_address,
                                                self.pool.as_floats("total"), {}, wall))
        else:
            self.join_address = join_address
            self.effects.mesh_connect.append((HEAD, join_address))
            self.effects.peer_outbox[HEAD].append(self.join_op())

    def join_op(self) -> tuple:
        return (m.JOIN, self._node_dict())

    def is_authority(self) -> bool:
        """Whether this node decides membership now: it leads the control
        plane, or it is the head and no leader is known."""
        if self.leader_id is not None:
            return self.leader_id == self.node_id
        return self.is_head

    def set_leader(self, leader, wall: float) -> None:
        """The control leader as the I/O side knows it (every Raft tick). A node
        that just became the authority logs the deaths it knows of (the
        previous authority may have died before logging them)."""
        self.leader_id = leader
        authority = self.is_authority()
        if authority and not self.was_authority and self.mesh_address:
            for view in self.peers.values():
                if not view.alive:
                    self.effects.control_writes.append(("node_dead", view.node_id, wall))
        self.was_authority = authority

    def _speaks_for_cluster(self, sender: str) -> bool:
        """May sender tell us who joined or died: the authority as we know it,
        or a node whose heartbeat says it leads the control plane."""
        if sender == self.leader_id or (self.leader_id is None and sender == self.head_id):
            return True
        view = self.peers.get(sender)
        return view is not None and view.alive and view.load.get("control") == LEADER

    def _node_dict(self) -> dict:
        return {"node_id": self.node_id, "address": self.mesh_address,
                "protocol": m.PROTOCOL_VERSION, "incarnation": self.incarnation,
                "resources": self.pool.as_floats("total"), "is_head": self.is_head,
                "load": {"store_capacity": self.store.capacity, "store_used": self.store.used,
                         "spilled": self.store.spilled_now, "is_head": self.is_head}}

    # ============================================================ membership

    def handle_peer(self, sender: str, ops: list, now: float, wall: float, size: int = 0):
        """Ops from sender (their shapes checked: lightray.agent.cluster.admission;
        size: their encoded bytes). None when taken; (why, answer) when dropped:
        why for the log, answer None or the text of a JOIN_REFUSED to send back.
        Those of a sender not known yet are held until the authority admits it
        (lightray.agent.cluster.early_ops), then handled here in order."""
        refused = self._handle(sender, ops, now, wall, size)
        for node_id in self.early.senders() if self.early else ():
            if node_id in self.peers:
                for held in self.early.take(node_id):
                    refused = self._handle(node_id, held, now, wall, 0) or refused
        return refused

    def _handle(self, sender: str, ops: list, now: float, wall: float, size: int):
        view = self.peers.get(sender)
        if view is None:
            return self._from_stranger(sender, ops, now, wall, size)
        if not view.alive:
            return self._from_dead(sender, view, ops, now, wall)
        self.nodes.heard(sender, now)
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
                if _join_problem(sender, op[1]) is None:    # asked again: answered again
                    self._on_join(sender, op[1], now, wall)
            elif kind == m.JOIN_VIA:
                if _join_problem(op[1]["node_id"], op[1]) is None:
                    self._on_join(op[1]["node_id"], op[1], now, wall)
            elif kind == m.NODE_JOINED:
                if self._speaks_for_cluster(sender):    # only the authority admits nodes
                    self._on_node_joined(op[1], now, wall)
            elif kind == m.NODE_DEAD:
                # Only the authority judges silence. About this node itself a
                # control replica is believed too: a stalled leader does not
                # know the replica that now leads was elected.
                if self._speaks_for_cluster(sender) or (
                        op[1] == self.node_id and view.load.get("control") in CONTROL_ROLES):
                    self._on_node_dead(sender, op[1], op[2], op[3], now, wall)
            elif kind == m.MEMBERS:
                if self.rejoining is not None:          # admitted again
                    self.rejoining = None
                    for node in op[1]:
                        self._on_node_joined(node, now, wall)
            elif kind == m.LEAVING:
                self._peer_died(sender, "it stopped", wall)
            elif kind == m.ACTOR_RELAY:
                self._on_actor_relay(sender, op)
            elif kind == m.DESCRIBE:
                self._on_describe(sender, op[1], op[2])
            elif kind == m.DESCRIBED:
                self._on_described(sender, op[1], op[2])
            elif kind == m.CONTROL:
                if sender != self.head_id and not view.load.get("is_head"):
                    refused = next((c[0] for c in op[1] if c[0] in HEAD_COMMANDS), None)
                    if refused is not None:
                        return (f"dropped CONTROL from peer {sender}: a peer other than the "
                                f"head may not send the command {refused!r}", None)
                self.effects.control_forwarded.extend(op[1])
            elif kind == m.RAFT:
                self.effects.raft_in.append((sender, op[1]))
        return None

    def _from_stranger(self, sender: str, ops: list, now: float, wall: float, size: int):
        """A node that has not joined may only JOIN (the authority admits it if
        it speaks our protocol; another member relays the JOIN to the
        authority); an agent still joining also takes the authority's answer,
        MEMBERS or JOIN_REFUSED, from whoever the authority turns out to be."""
        kinds = {op[0] for op in ops}
        if kinds <= {m.JOIN, m.LEAVING}:
            if m.LEAVING in kinds:
                self.early.drop(sender)         # it gave up
            if m.JOIN not in kinds or not self.mesh_address or self.waiting_for_head():
                return None       # LEAVING: it gave up before it was admitted
            node = next(op[1] for op in ops if op[0] == m.JOIN)
            problem = _join_problem(sender, node)
            if problem is not None:
                self.early.drop(sender)         # it will not join
                return (f"refused node {sender} at {node['address']}: {problem}", problem)
            if self.is_authority():
                self._on_join(sender, node, now, wall)
                return None
            authority = self._authority_to_ask()
            if authority is None:
                return (f"dropped JOIN from node {sender}: no membership authority is known "
                        "here now (it asks again)", None)
            self.effects.peer_outbox[authority].append((m.JOIN_VIA, node))
            return None
        if self.waiting_for_head():
            for op in ops:
                if op[0] == m.JOIN_REFUSED:
                    self.refused = op[1]
                    self._dropped(f"the head refused it: {op[1]}", False)
                    return None
                if op[0] == m.MEMBERS:
                    self._on_members(sender, op[1], now)
                    # The authority is a member now: the rest of its message counts.
                    return self.handle_peer(sender, [o for o in ops if o[0] != m.MEMBERS],
                                            now, wall) if len(ops) > 1 else None
        if self.early.hold(sender, ops, size, now):
            return None          # the authority's NODE_JOINED about it may be on its way
        return (not_joined(sender, [ops]), None)

    def _authority_to_ask(self):
        """Where a JOIN this node cannot decide goes: the known leader, else the head."""
        for candidate in (self.leader_id, self.head_id):
            if candidate is not None and candidate != self.node_id:
                view = self.peers.get(candidate)
                if view is not None and view.alive:
                    return candidate
        return None

    def _from_dead(self, sender: str, view, ops: list, now: float, wall: float):
        """A node declared dead speaks again (it stalled past dead_after). The
        authority tells it so, with the incarnation that died, and admits it
        again once it JOINs as a later incarnation; the others wait for the
        authority's NODE_JOINED."""
        if not self.is_authority():
            return None
        for op in ops:
            if op[0] == m.JOIN and self.nodes.is_newer(sender, op[1].get("incarnation") or 0):
                problem = _join_problem(sender, op[1])
                if problem is not None:
                    return (f"refused node {sender} at {op[1]['address']}: {problem}", problem)
                self._on_join(sender, op[1], now, wall)
                return None
        # Our connection to it was closed when it died: open one for the answer
        # (kept until it rejoins, or dropped with it: _peer_died closes it).
        self.effects.mesh_connect.append((sender, view.address))
        self.effects.peer_outbox[sender].append(
            (m.NODE_DEAD, sender, view.load.get("died") or "it was declared dead",
             self.nodes.incarnation(sender)))
        return None

    def _on_join(self, sender: str, node: dict, now: float, wall: float) -> None:
        if not self.is_authority():
            return
        incarnation = node.get("incarnation") or 0
        view = self.peers.get(sender)
        rejoined = False
        if view is not None:
            if not self.nodes.is_newer(sender, incarnation):
                if view.alive:      # a JOIN asked again: the same answer
                    self.effects.peer_outbox[sender].append((m.MEMBERS, self._members(sender)))
                return
            self._end_incarnation(sender, incarnation, wall)
            rejoined = True
        for other in self.peers.values():
            if other.alive and other.node_id != sender:
                self.effects.peer_outbox[other.node_id].append((m.NODE_JOINED, node))
        members = self._members(sender)
        self._add_peer(node, now)
        self.effects.peer_outbox[sender].append((m.MEMBERS, members))
        self.effects.control_writes.append(
            ("node_rejoin", sender, incarnation, node["address"], node["resources"], wall)
            if rejoined else
            ("node_register", sender, node["address"], node["resources"], {}, wall))

    def _members(self, joiner: str) -> list:
        return [self._node_dict()] + [self._peer_dict(v) for v in self.peers.values()
                                      if v.alive and v.node_id != joiner]

    def _on_node_joined(self, node: dict, now: float, wall: float) -> None:
        node_id = node["node_id"]
        view = self.peers.get(node_id)
        if view is not None:
            if not self.nodes.is_newer(node_id, node.get("incarnation") or 0):
                return
            self._end_incarnation(node_id, node.get("incarnation"), wall)
        self._add_peer(node, now)

    def _end_incarnation(self, node_id: str, incarnation, wall: float) -> None:
        """A later incarnation of node_id joined: the earlier one is dead,
        whatever it left, and its view goes (the new one is added next). The
        connection to it stays: the same process listens at the same address
        (closing it now would close it after the new incarnation's first
        messages went out on it)."""
        disconnect = node_id not in self.effects.mesh_disconnect
        self._peer_died(node_id, f"it joined again as incarnation {incarnation}", wall)
        if disconnect and node_id in self.effects.mesh_disconnect:
            self.effects.mesh_disconnect.remove(node_id)
        del self.peers[node_id]

    def _on_node_dead(self, sender: str, node_id: str, why, incarnation: int, now: float,
                      wall: float) -> None:
        if node_id != self.node_id:
            if self.nodes.is_current(node_id, incarnation):
                self._peer_died(node_id, why or "the membership authority declared it dead",
                                wall)
            return
        if incarnation != self.incarnation:
            return           # about an earlier incarnation of ours: stale, we rejoined since
        self._rejoin(sender, why, now)

    def _rejoin(self, authority: str, why, now: float) -> None:
        """The cluster declared this incarnation dead (this agent stalled): the
        work it sent out was given up there, so run it again here or fail
        it; then join again under the same node id as the next incarnation."""
        self.incarnation += 1
        for task in list(self.tasks.values()):
            if task.state == FORWARDED and task.node is not None:
                self._forwarded_task_lost(task, task.node, f"this node was declared dead "
                                                           f"({why}) and joined again")
        # The peers let go of what they held here when we died (they never FREE it).
        for object_id, entry in list(self.objects.items()):
            if entry.pinned_for:
                for _ in range(len(entry.pinned_for)):
                    self.directory.unref(object_id)
                entry.pinned_for.clear()
        self.rejoining = (authority, now)
        self.effects.peer_outbox[authority].append(self.join_op())

    def _rejoin_again(self, now: float) -> None:
        """No MEMBERS yet: ask the authority as known now (it may have changed)."""
        authority, asked = self.rejoining
        if now - asked < REJOIN_AGAIN:
            return
        authority = self._authority_to_ask() or authority
        self.rejoining = (authority, now)
        self.effects.peer_outbox[authority].append(self.join_op())

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
        """Admitted: sender is the authority; our join connection went to the
        member at join_address (the authority itself, or one that relayed)."""
        self.head_id = sender
        via = next((n["node_id"] for n in members if n["address"] == self.join_address),
                   None)
        if via is not None:
            self.effects.mesh_rename.append((HEAD, via))
            if HEAD in self.effects.peer_outbox:
                self.effects.peer_outbox[via].extend(self.effects.peer_outbox.pop(HEAD))
        else:
            self.effects.mesh_disconnect.append(HEAD)
        for node in members:
            self._add_peer(node, now, connected=node["node_id"] == via)

    def _add_peer(self, node: dict, now: float, connected: bool = False) -> None:
        node_id = node["node_id"]
        if node_id == self.node_id or node_id in self.peers:
            return
        self.peers[node_id] = NodeView(node_id, node["address"], to_units(node["resources"]))
        self.peers[node_id].load = dict(node.get("load") or {}, is_head=node.get("is_head", False))
        self.nodes.add(node_id, node.get("incarnation") or 0, now)
        self.live_peers += 1
        if not connected:
            self.effects.mesh_connect.append((node_id, node["address"]))
        self.effects.needs_schedule = True

    def _peer_dict(self, view: NodeView) -> dict:
        return {"node_id": view.node_id, "address": view.address,
                "resources": {k: v / 10_000 for k, v in view.total.items()},
                "is_head": view.load.get("is_head", False),
                "incarnation": self.nodes.incarnation(view.node_id),
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
        if self.is_authority():
            self.effects.control_writes.append(("node_heartbeat", sender, _public_load(load), wall))

    def cluster_tick(self, now: float, wall: float, load: dict) -> None:
        """Every HEARTBEAT_INTERVAL: tell peers how we are; the authority
        declares the peers silent past dead_after dead. (A tick that comes
        late means this agent itself stood still: the node table restarts
        every count, and the authority's answer to our next heartbeat says
        whether we were declared dead meanwhile.)"""
        self.nodes.tick(now)
        self.early.expire(now)
        self.load = load
        self.hot = load["hot"]
        load = dict(load, available=dict(self.pool.available), queued=self.queued_count(),
                    is_head=self.is_head, incarnation=self.incarnation)
        for node_id, view in self.peers.items():
            if view.alive:
                self.effects.peer_outbox[node_id].append((m.HEARTBEAT, load))
        if self.rejoining is not None:
            self._rejoin_again(now)
        if not self.is_authority():
            return
        self.effects.control_writes.append(
            ("node_heartbeat", self.node_id, _public_load(load), wall))
        for node_id in self.nodes.overdue(now):
            if self.peers[node_id].alive:
                self._peer_died(node_id, f"silent for {self.nodes.dead_after:g} s", wall)

    def peer_gone(self, node_id: str, wall: float) -> None:
        """The I/O side saw the peer's reconnects refused: its process is gone."""
        view = self.peers.get(node_id)
        if view is not None and view.alive:
            self._peer_died(node_id, "its agent is gone (connection refused)", wall)
        elif view is not None:
            self.effects.mesh_disconnect.append(node_id)   # the connection we answered it on

    def flush_pull_retries(self) -> None:
        for node_id, op in self.pull_retries:
            self.effects.peer_outbox[node_id].append(op)
        self.pull_retries.clear()   # (in place: the remote actors part appends to it too)

    def queued_count(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def _peer_died(self, node_id: str, why: str, wall: float) -> None:
        view = self.peers.get(node_id)
        if view is None or not view.alive:
            return
        incarnation = self.nodes.incarnation(node_id)
        view.alive = False
        view.load = dict(view.load, died=why)
        self.nodes.mark_dead(node_id)
        self.live_peers -= 1
        self.effects.mesh_disconnect.append(node_id)
        self.effects.peer_outbox.pop(node_id, None)
        if self.is_authority():
            self.effects.control_writes.append(("node_dead", node_id, wall))
            for other, other_view in self.peers.items():
                if other_view.alive:
                    self.effects.peer_outbox[other].append(
                        (m.NODE_DEAD, node_id, why, incarnation))
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
        return node_rows.resources(self.nodes_info())

    def nodes_info(self) -> list:
        """Every node known, this one first (lightray.agent.cluster.node_rows)."""
        return node_rows.nodes_info(self)


def _join_problem(sender: str, node: dict):
    """Why the head will not admit a JOIN, None if it will."""
    version = node.get("protocol")
    if version != m.PROTOCOL_VERSION:
        return (f"it speaks lightray protocol version {version}, this cluster version "
                f"{m.PROTOCOL_VERSION} (run the same lightray version on every node)")
    if node["node_id"] != sender:
        return f"its JOIN names another node id ({node['node_id']!r:.40})"
    return None


def _public_load(load: dict) -> dict:
    return {k: v for k, v in load.items() if k != "available"}
