"""The agent's part in the control plane: its ControlReplica, and where writes go.

    AgentServer loop ── every RAFT_TICK ──▶ ControlLink.tick ──▶ replica.tick, voter changes
    RAFT ops (admission checked) ─────────▶ on_raft ──▶ replica.receive (garbage: reported)
    the state's control writes ───────────▶ writes ──▶ replica.propose (this node leads)
                                                      or CONTROL ──▶ the leader (the head
                                                      while none is known), or kept
    replica.process() (each Ready fsync'd first) ──▶ RAFT ops to the other replicas
    lightray.kv requests (ipc KV, mesh KV_REQUEST/KV_REPLY) ──▶ self.kv (control_kv)

The decisions (which voter to add or remove, where a write goes) are the pure
functions of lightray.agent.cluster.control_plane; this module is their I/O.
Nothing here blocks or raises into the agent's loop: a full disk or a damaged
replica file is reported (RefusalLog, once per kind a minute) and the agent
serves on. Nobody waits for a write's result yet (a dropped write is logged
at DEBUG on "lightray.control"); lightray.kv's writes are waited for
(lightray.agent.control_kv). An agent outside a cluster (lightray.init()'s
embedded one) holds a lone replica (mesh None), so lightray.kv works there too.
"""
from __future__ import annotations

import json
import logging
import shutil
import time

from ..store.control import kv_requests, validate
from ..store.control.raft import NotLeader, ProposalRefused, RaftCodecError
from ..store.control.raft import decode as decode_raft
from ..store.control.replica import ControlReplica, ReplicaDamaged
from ..transport import messages as m
from .cluster import control_plane
from .control_kv import KVRequests

KV_MESH_OPS = frozenset((m.KV_REQUEST, m.KV_REPLY))
RAFT_TICK = 0.05              # seconds per Raft tick (elections after 10-20, heartbeats every one)
MAX_UNSENT_WRITES = 10_000    # control writes kept while no leader is known
_log = logging.getLogger("lightray.control")


class ControlLink:
    __slots__ = ("state", "mesh", "directory", "refusals", "control_replicas", "replica",
                 "unsent", "kv", "needs_process", "send_to_client")

    def __init__(self, state, mesh, directory: str, refusals, control_replicas: int):
        self.state = state                 # AgentState (its membership: peers, roles, head)
        self.mesh = mesh                   # transport.mesh.Mesh (None: no cluster)
        self.directory = directory         # <session>/control: control.db and raft.db
        self.refusals = refusals           # RefusalLog of the agent's mesh
        self.control_replicas = control_replicas
        self.replica = None                # this node's ControlReplica, once it is one
        self.unsent: list = []             # writes made here while nobody could take them
        self.kv = KVRequests(self)         # lightray.kv's requests under way here
        self.needs_process = False         # a kv request reached the replica this turn
        self.send_to_client = None         # (receive identity, ops): the server's socket

    def start_as_first_replica(self) -> None:
        """The head: a lone voter that leads at once; the leader then adds the
        agents that join as voters (_change_voters)."""
        self._open_replica((self.state.node_id,))
        self.replica.node.campaign()
        self._process()

    def _open_replica(self, voters: tuple) -> None:
        # Node ids are new at every start, so what a reused session directory
        # holds is another node's replica (or a damaged one): start empty and
        # catch up from the leader.
        shutil.rmtree(self.directory, ignore_errors=True)
        self.replica = ControlReplica(self.state.node_id, self.directory, voters,
                                      election_ticks=10, heartbeat_ticks=1)

    # ------------------------------------------------------------ inputs

    def on_raft(self, messages: list) -> None:
        """RAFT ops from peers (their shape checked by admission): to the replica,
        created on the first message addressed to this node. Garbage is dropped
        and reported once per peer and kind a minute."""
        for sender, data in messages:
            if self.replica is None:
                try:
                    addressed = decode_raft(data).dst == self.state.node_id
                except RaftCodecError as error:
                    self._refuse(sender, f"not a Raft message: {error}")
                    continue
                if not addressed:
                    self._refuse(sender, "addressed to another replica")
                    continue
                try:
                    self._open_replica(())
                except Exception as error:   # a damaged file: say which, serve on without it
                    self.refusals.note(("replica", type(error).__name__),
                                       f"cannot open the control replica: {error}")
                    return
            why = self.replica.receive(data, sender)
            if why is not None:
                self._refuse(sender, why)
        if self.replica is not None:
            self._process()

    def take_kv_ops(self, sender: str, ops: list) -> list:
        """The mesh ops of lightray.kv (from a live peer) are served here; the others
        are returned for the state."""
        if not any(op[0] in KV_MESH_OPS for op in ops):
            return ops
        view = self.state.membership.peers.get(sender)
        rest = []
        for op in ops:
            if op[0] not in KV_MESH_OPS:
                rest.append(op)
            elif view is not None and view.alive:
                self.kv.from_peer(sender, op)
        return rest

    def kv_from_client(self, identity: bytes, request_id: int, request) -> None:
        self.kv.from_client(identity, request_id, request)

    def end_of_turn(self) -> None:
        """Once per loop turn: this turn's kv writes proposed as one batch, the
        replica's Ready run, kv messages to peers sent (one per peer)."""
        if self.needs_process:
            self.needs_process = False
            self.kv.flush_proposals()
            if self.replica is not None:
                self._process()
            self.kv.flush_peers()

    def leader(self) -> str | None:
        replica = self.replica
        if self.mesh is None:
            return replica.leader if replica is not None else None
        return control_plane.known_leader(replica.leader if replica is not None else None,
                                          self.state.membership.control_roles())

    def _refuse(self, sender: str, why: str) -> None:
        kind = why.partition(":")[0].split(" ", 2)[:2]
        self.refusals.note(("raft", sender, tuple(kind)),
                           f"dropped a RAFT message from peer {sender}: {why}")

    def tick(self) -> None:
        self.kv.tick(time.monotonic())
        if self.replica is None:
            return
        self.replica.tick()
        if self.replica.is_leader and self.mesh is not None:
            self._change_voters()
        self._process()

    def _change_voters(self) -> None:
        """The leader adds and removes voters (control_plane decides which)."""
        replica = self.replica
        change = control_plane.next_voter_change(
            replica.voters, self.state.membership.control_members(), self.control_replicas)
        if change is None:
            return
        try:
            if change[0] == "add":
                replica.add_voter(change[1])
            else:
                replica.remove_voter(change[1])
        except (ProposalRefused, NotLeader):
            return      # one change at a time: the previous is not committed yet
        _log.info("control plane: %s voter %s", change[0], change[1])

    # ------------------------------------------------------------ outputs

    def _process(self) -> None:
        """Run the replica's Ready (saved and fsync'd first), send its messages."""
        try:
            out = self.replica.process(self._send_raft if self.mesh is not None else None)
        except ReplicaDamaged as error:
            self.replica_damaged(error)
            return
        except Exception as error:   # a full disk, say: report, the agent serves on
            self.refusals.note(("replica", type(error).__name__),
                               f"control replica: {type(error).__name__}: {error}")
            return
        self._send_raft(out.messages)
        self.kv.on_output(out)
        self.kv.flush_peers()
        for token, why in out.dropped:
            _log.debug("control plane: a write was dropped: %s", why)
        for index, why in out.undecodable:
            self.refusals.note(("undecodable",), f"control log entry {index} is no "
                                                 f"command: {why}")

    def replica_damaged(self, error: ReplicaDamaged) -> None:
        """SQLite found control.db damaged: the replica stops serving it and is
        reopened from its files, which sets the file aside and rebuilds the state
        from raft.db (and the leader). A replica that cannot be reopened (raft.db
        damaged too) takes no further part: this agent then serves no control data."""
        self.refusals.note(("replica", "damaged"),
                           f"control replica: {error}; it no longer serves that file and "
                           "is rebuilt from its Raft log and the leader")
        try:
            self.replica.close()
        except Exception:
            pass
        self.replica = None
        try:
            self.replica = ControlReplica(self.state.node_id, self.directory, (),
                                          election_ticks=10, heartbeat_ticks=1)
        except Exception as reopen_error:
            self.refusals.note(("replica", "unusable"),
                               f"control replica: cannot be rebuilt ({reopen_error}); "
                               "this agent takes no further part in the control plane")
            return
        self._process()

    def _send_raft(self, messages: list) -> None:
        """[(replica id, bytes)]: one mesh message per replica."""
        if self.mesh is None or not messages:
            return
        by_destination: dict = {}
        for destination, data in messages:
            by_destination.setdefault(destination, []).append((m.RAFT, data))
        for destination, ops in by_destination.items():
            self.mesh.send(destination, ops)

    def role(self):
        replica = self.replica
        if replica is None:
            return None
        return control_plane.role(True, replica.is_leader,
                                  self.state.node_id in replica.voters)

    def writes(self, writes: list, forwarded: bool) -> None:
        """Propose writes if this node's replica leads, else send them to the
        leader (control_plane.write_destination); none is ever fatal."""
        if not writes:
            return
        replica = self.replica
        if replica is not None and replica.is_leader:
            wall = time.time()
            for write in writes:
                command = control_command(write, wall)
                try:
                    replica.propose(validate(command), None)
                except (TypeError, ValueError) as error:
                    self.refusals.note(("control write", command[0]),
                                       f"control store: dropped {command[0]!r}: {error}")
                except (NotLeader, ProposalRefused) as error:
                    # Leadership is moving: this write is lost (nobody waits for it yet).
                    _log.debug("control plane: dropped %r: %s", command[0], error)
            self._process()
            return
        membership = self.state.membership
        leader = control_plane.known_leader(replica.leader if replica is not None else None,
                                            membership.control_roles())
        destination = control_plane.write_destination(self.state.node_id, leader,
                                                      membership.head_id, forwarded)
        wall = time.time()
        commands = [control_command(write, wall) for write in writes]
        if destination is not None and self.mesh.send(destination, [(m.CONTROL, commands)]):
            return
        if forwarded:
            _log.debug("control plane: %d forwarded write(s) dropped: no leader known",
                       len(commands))
            return
        # Our own: kept until a leader (or the head, once it admitted us) can take
        # them, the oldest dropped past a bound.
        self.unsent.extend(commands)
        excess = len(self.unsent) - MAX_UNSENT_WRITES
        if excess > 0:
            del self.unsent[:excess]
            _log.debug("control plane: %d write(s) dropped: no leader for too long", excess)

    def send_unsent(self) -> None:
        if self.unsent:
            unsent, self.unsent = self.unsent, []
            self.writes(unsent, False)

    def hand_over(self):
        """Before a graceful stop: leadership to the most up-to-date other
        voter (its TIMEOUT_NOW sent now); its node id, None if this node
        does not lead or leads alone."""
        if self.replica is None:
            return None
        successor = self.replica.hand_over()
        if successor is not None:
            self._process()
        return successor

    def close(self) -> None:
        if self.replica is not None:
            self.replica.close()


def control_command(write: tuple, wall: float) -> tuple:
    """A control-store command from the state's write: dicts become JSON
    text, and a timestamp left None becomes now. ("actor_name_release", actor
    id, namespace, name), from the actor book (which imports no store), becomes
    the kv_write that frees the name's cluster-wide claim."""
    if write[0] == "actor_name_release":
        write = kv_requests.name_release(*write[1:])
    command = tuple(json.dumps(v, sort_keys=True) if isinstance(v, dict) else v for v in write)
    if command[-1] is None:
        command = command[:-1] + (wall,)
    return command
