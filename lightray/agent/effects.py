"""The buffers every part of the agent's state writes its instructions into.

    parts (leases, workers, store, cluster, ...) ──append──▶ Effects
    AgentState.take_instructions() ──▶ Effects.take() ──▶ typed instructions, in order

One Effects per AgentState, passed to each part that emits something. The
buffers coalesce what one turn produces: one frame per destination (an
identity's ops list), one ControlWrites per turn (the I/O side proposes them to the
control leader or sends them to it). ``take`` turns
them into the instructions of lightray.agent.instructions, in the order the
I/O loop must carry them out, and empties them (in place: parts keep their
references). ``needs_schedule`` asks the state to place queued work at the
end of the turn.
"""
from __future__ import annotations

import collections

from . import instructions as i


class Effects:
    __slots__ = ("outbox", "spawn", "kill", "free_segments", "free_files", "io_jobs",
                 "peer_outbox", "peer_data", "mesh_connect", "mesh_disconnect", "mesh_rename",
                 "control_writes", "control_forwarded", "raft_in", "pull_io", "needs_schedule",
                 "room_granted")

    def __init__(self):
        self.outbox: dict = collections.defaultdict(list)   # receive identity -> [ops]
        self.spawn: list = []             # worker ids to fork
        self.kill: list = []              # pids to SIGKILL
        self.free_segments: list = []     # segment names freed
        self.free_files: list = []        # spill files to delete
        self.io_jobs: list = []           # SpillJob / RestoreJob
        # In a cluster (lightray.agent.cluster):
        self.peer_outbox: dict = collections.defaultdict(list)   # node id -> [ops]
        self.peer_data: list = []         # (node id, PULL_DATA op, segment name)
        self.mesh_connect: list = []      # (node id, address)
        self.mesh_disconnect: list = []   # node ids
        self.mesh_rename: list = []       # (old key, node id)
        self.control_writes: list = []    # commands for the control store, made here
        self.control_forwarded: list = []   # ... and sent here by peers (CONTROL)
        self.raft_in: list = []           # (node id, bytes): RAFT messages from peers
        self.pull_io: list = []           # ("open", id, name, size) / ("abort", id)
        self.needs_schedule = False
        # Room in the store was granted (a reservation, a restore, a pull):
        # the segments freed this turn go first, so that what the store holds
        # in /dev/shm never exceeds its capacity while the new one is written.
        self.room_granted = False

    def take(self, workers: dict) -> list:
        """The instructions, in order: mesh connections before the messages
        sent over them, a pushed chunk after the message announcing it, disk
        jobs, local answers, then freed segments (giving back a large one
        takes milliseconds, which writers and the spill thread spend working
        meanwhile), forks, kills, spill files to delete. In a turn that
        granted room in the store, freed segments come first instead: the
        room they gave back may be what was granted."""
        out: list = []
        if self.room_granted:
            self.room_granted = False
            if self.free_segments:
                out.extend(i.FreeSegment(name) for name in self.free_segments)
                self.free_segments.clear()
        if self.mesh_connect:
            out.extend(i.MeshConnect(node_id, address) for node_id, address in self.mesh_connect)
            self.mesh_connect.clear()
        if self.mesh_rename:
            out.extend(i.MeshRename(old, new) for old, new in self.mesh_rename)
            self.mesh_rename.clear()
        if self.pull_io:
            out.extend(self.take_pull_io())
        if self.peer_outbox:
            out.extend(i.SendPeer(node_id, ops) for node_id, ops in self.peer_outbox.items())
            self.peer_outbox.clear()
        if self.peer_data:
            out.extend(i.SendChunk(node_id, op, name) for node_id, op, name in self.peer_data)
            self.peer_data.clear()
        if self.mesh_disconnect:
            out.extend(i.MeshDisconnect(node_id) for node_id in self.mesh_disconnect)
            self.mesh_disconnect.clear()
        if self.raft_in:
            out.append(i.RaftMessages(list(self.raft_in)))
            self.raft_in.clear()
        if self.control_writes or self.control_forwarded:
            out.append(i.ControlWrites(list(self.control_writes), list(self.control_forwarded)))
            self.control_writes.clear()
            self.control_forwarded.clear()
        if self.io_jobs:
            out.extend(self.io_jobs)
            self.io_jobs.clear()
        if self.outbox:
            out.extend(i.Send(identity, ops) for identity, ops in self.outbox.items())
            self.outbox.clear()
        if self.free_segments:
            out.extend(i.FreeSegment(name) for name in self.free_segments)
            self.free_segments.clear()
        if self.spawn:
            out.extend(i.Spawn(worker_id, workers[worker_id].actor is not None)
                       for worker_id in self.spawn)
            self.spawn.clear()
        if self.kill:
            out.extend(i.Kill(pid) for pid in self.kill)
            self.kill.clear()
        if self.free_files:
            out.append(i.RemoveFiles(list(self.free_files)))
            self.free_files.clear()
        return out

    def take_pull_io(self) -> list:
        jobs = self.pull_io
        out = [i.OpenPull(job[1], job[2], job[3]) if job[0] == "open" else i.AbortPull(job[1])
               for job in jobs]
        jobs.clear()
        return out

    def send(self, identity: bytes, op: tuple) -> None:
        self.outbox[identity].append(op)
