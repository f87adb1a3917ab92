"""Object bytes moving between nodes. No I/O.

    reader here: RESTORE ──▶ room reserved ──PULL(chunk)×WINDOW──▶ holder
    holder: a view of its mapped segment ──PULL_DATA + raw frame──▶ here
    here: pwrite into <segment>.pulling (the agent's I/O side), next chunk asked;
          complete: renamed, readers answered, waiting tasks woken

One pull per object however many readers wait. The pulled copy is a
secondary copy: under memory pressure it is dropped (back to REMOTE) rather
than spilled. A holder that spilled the object restores it first
(PULL_RETRY meanwhile).

``ObjectPulls`` is a part of ``AgentState`` (lightray.agent.state, its
``object_pulls`` field): it owns the table of pulls under way (object id ->
Pull, which the store also reads), works on the object table, the peers'
views (read only) and the Effects it is given, and accounts for the bytes
through the store (StoreCapacity) it is given.
"""
from __future__ import annotations

from ...config import pull_chunk_bytes, pull_window
from ...serialization import SHARED
from ...states import PULLING, REMOTE, SPILLING
from ...transport import messages as m

CHUNK = pull_chunk_bytes()   # bytes per pulled chunk
WINDOW = pull_window()       # chunks in flight per pull
PUSH_MAX = CHUNK             # arguments up to this size are pushed with their task


class Pull:
    __slots__ = ("holder", "remote_name", "size", "next_offset", "inflight", "received",
                 "pushed")

    def __init__(self, holder: str, remote_name: str, size: int):
        self.holder = holder
        self.remote_name = remote_name
        self.size = size
        self.next_offset = 0
        self.inflight = 0
        self.received = 0
        self.pushed = False          # its bytes come unasked, in one chunk


class ObjectPulls:
    __slots__ = ("effects", "transitions", "store", "objects", "peers", "pulls", "node_id")

    def __init__(self, effects, transitions, *, store, objects: dict, peers: dict, pulls: dict,
                 node_id: str):
        self.effects = effects           # lightray.agent.effects.Effects
        self.transitions = transitions   # lightray.states.Transitions
        self.store = store               # StoreCapacity (lightray.agent.store)
        self.objects = objects           # the object table
        self.peers = peers               # node id -> NodeView (the cluster membership's)
        self.pulls = pulls               # object id -> Pull, for each pull under way
        self.node_id = node_id

    def start_pull(self, object_id: bytes, entry) -> None:
        holder = entry.location
        view = self.peers.get(holder)
        if view is None or not view.alive:
            why = (f"node {holder} holding it died ({view.load.get('died', 'unknown')})"
                   if view is not None else f"node {holder} holding it is unknown")
            self.store.restore_failed(object_id, entry, why)
            return
        size = entry.payload[1][1]
        self.transitions.object(object_id, entry, PULLING, ("pull from", holder))
        self.store.reserved += size
        pull = self.pulls[object_id] = Pull(holder, entry.remote_name, size)
        self.effects.pull_io.append(("open", object_id, entry.payload[1][0], size))
        self._request_chunks(object_id, pull)

    def push(self, node_id: str, object_id: bytes, layout) -> None:
        """Send a small object's bytes to node_id unasked (after the message
        that tells it to expect them: peer_data goes out after the outbox)."""
        self.store.served_total += layout[1]
        self.effects.peer_data.append(
            (node_id, (m.PULL_DATA, object_id, 0, layout[1], True), layout[0]))

    def expect_push(self, object_id: bytes, entry) -> None:
        """A peer sends this object's bytes along: a pull already under way."""
        size = entry.payload[1][1]
        self.transitions.object(object_id, entry, PULLING, ("pushed from", entry.location))
        self.store.reserved += size
        pull = self.pulls[object_id] = Pull(entry.location, entry.remote_name, size)
        pull.pushed = True
        pull.next_offset = size
        pull.inflight = 1
        self.effects.pull_io.append(("open", object_id, entry.payload[1][0], size))

    def accepts_chunk(self, op: tuple, sender: str) -> bool:
        """Whether a PULL_DATA is for a pull from sender under way here (a push
        may come for an object this node got meanwhile another way), and its
        bytes fall inside the object."""
        pull = self.pulls.get(op[1])
        return (pull is not None and pull.holder == sender
                and pull.pushed == (len(op) > 4 and op[4])
                and op[2] + op[3] <= pull.size)

    def _request_chunks(self, object_id: bytes, pull: Pull) -> None:
        box = self.effects.peer_outbox[pull.holder]
        while pull.inflight < WINDOW and pull.next_offset < pull.size:
            length = min(CHUNK, pull.size - pull.next_offset)
            box.append((m.PULL, object_id, pull.remote_name, pull.next_offset, length))
            pull.next_offset += length
            pull.inflight += 1

    def pull_args(self, object_id: bytes, offset: int, length: int) -> tuple:
        pull = self.pulls.get(object_id)
        return (object_id, pull.remote_name if pull else "", offset, length)

    def on_pull(self, sender: str, object_id: bytes, offset: int, length: int) -> None:
        """A peer asks for a chunk of an object we hold."""
        entry = self.objects.get(object_id)
        if (entry is None or entry.payload is None or entry.payload[0] != SHARED
                or entry.spill in (REMOTE, PULLING)):
            self.effects.peer_outbox[sender].append(
                (m.PULL_FAILED, object_id, f"node {self.node_id} does not hold it any more"))
            return
        if entry.spill is not None and entry.spill != SPILLING:
            self.store.want_in_memory(object_id, entry)      # on disk here: restore first
            self.effects.peer_outbox[sender].append((m.PULL_RETRY, object_id, offset, length))
            return
        if object_id in self.store.lru:
            self.store.lru.move_to_end(object_id)
        self.store.served_total += length
        self.effects.peer_data.append(
            (sender, (m.PULL_DATA, object_id, offset, length), entry.payload[1][0]))

    def on_pull_data(self, object_id: bytes, length: int, pushed: bool = False) -> None:
        """A chunk arrived (the agent wrote it already)."""
        pull = self.pulls.get(object_id)
        if pull is None or pull.pushed != pushed:
            return
        pull.inflight -= 1
        pull.received += length
        if pull.received < pull.size:
            self._request_chunks(object_id, pull)
            return
        entry = self.objects.get(object_id)
        self.end_pull(object_id, entry)
        if entry is None:
            return
        self.transitions.object(object_id, entry, None, "pulled")
        self.store.used += pull.size
        self.store.pulled_total += pull.size
        self.store.track_in_memory(object_id)
        waiters, entry.restore_waiters = entry.restore_waiters, None
        for identity, request_id in waiters or ():
            self.effects.outbox[identity].append(
                (m.INFO_REPLY, request_id, ("ok", entry.payload)))
        self.store.wake_waiting_tasks(entry, entry.payload)

    def end_pull(self, object_id: bytes, entry) -> None:
        pull = self.pulls.pop(object_id, None)
        if pull is None:
            return
        self.store.reserved -= pull.size
        self.store.needs_work = True
        if pull.received < pull.size:
            self.effects.pull_io.append(("abort", object_id))
        if entry is not None and entry.spill == PULLING:
            self.transitions.object(object_id, entry, REMOTE, "pull ended")

    def pull_failed(self, object_id: bytes, entry, why: str) -> None:
        self.end_pull(object_id, entry)
        self.store.restore_failed(object_id, entry, why)

    def drop_copy(self, object_id: bytes, entry) -> None:
        """Evict a secondary copy: the primary is on entry.location."""
        self.store.lru.pop(object_id, None)
        self.effects.free_segments.append(entry.payload[1][0])
        self.store.used -= entry.payload[1][1]
        self.transitions.object(object_id, entry, REMOTE, "copy dropped")
        self.store.tell_holders_spilled(object_id)
