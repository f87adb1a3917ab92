"""The object store's capacity in the agent: reservations, spilling, restoring. A part of AgentState.

    RESERVE(size) ──▶ granted at once while it fits, else queued (FIFO) ──▶ INFO_REPLY ok | full
    usage + reservations over the threshold ──▶ least recently used objects spilled
                      (SpillIO copies them to files; then their segments are unlinked)
    RESTORE, or a task needing a spilled argument ──▶ room reserved, copied back
                      (same name and layout) ──▶ waiters answered, tasks woken

Every process reserves room before it writes a segment (a put, a task's
return, an implicit put of a large argument), so the store never overshoots
its capacity and a producer waits (back-pressure) instead of failing while
spilling makes room. Room given back (a spilled or freed segment) is granted
again at once, so in a turn that grants room the freed segments are unlinked
before the replies go out (Effects.room_granted), and the warm pool is
trimmed first: /dev/shm never holds more than the capacity. ``ObjectStoreFullError`` only when waiting cannot help:
one object larger than the whole store (or a task's arguments, which must be
in memory together), spilling turned off, or the spill disk failing.

Spill state of an object (ObjectEntry.spill): None (in memory) -> SPILLING
(being copied out, still readable) -> SPILLED (only on disk) -> RESTORING
(being copied back) -> None. A reader that finds a segment gone (it was
spilled after the payload reached it) asks for it back with RESTORE; a
numpy view mapped before the spill stays valid, since unlinking a segment
leaves existing mappings alone.

Choosing what to spill: least recently used first (``lru``: created,
passed to a task, or restored), skipping arguments of tasks on a worker's
queue; only when nothing else is left and producers wait are those spilled too.

Read-ahead: when readers ask for spilled objects in the order they were
spilled (a loop over results, the common case), the next few are restored
before they are asked for, into free room below the threshold only (read-ahead
never evicts anything), so the copies overlap the reader's own work.
"""
from __future__ import annotations

import collections
import os

from .. import exceptions, serialization
from .. import task_spec as ts
from ..serialization import ERROR, SHARED
from .records import ClientEntry
from . import segments, store_summary
from ..states import PULLING, REMOTE, RESTORING, SPILLED, SPILLING, WAITING
from .instructions import RestoreJob, SpillJob
from ..transport import messages as m

# Spill states (SPILLING, SPILLED, ...) are named in lightray.states.
READ_AHEAD = 4    # spilled objects restored ahead of a sequential reader


class StoreCapacity:
    """The store's capacity: reservations, the LRU order, spills and restores.
    A part of AgentState (its ``store`` field); collaborators are given."""

    def __init__(self, effects, transitions, *, objects: dict, clients: dict, workers: dict,
                 pulls: dict, capacity: int, spill_dir: str | None, threshold: float,
                 spilling: bool, start_pull, drop_copy, forget_remote, fail_task, enqueue,
                 segment_prefix: str = ""):
        self.effects = effects           # lightray.agent.effects.Effects
        self.transitions = transitions   # lightray.states.Transitions
        self.objects = objects           # the object table
        self.clients = clients
        self.workers = workers           # (arguments of their tasks are not spilled)
        self.pulls = pulls               # object id -> Pull (lightray.agent.cluster.pulls)
        # from the cluster part: (object id, entry)
        self._start_pull = start_pull          # bring a REMOTE object here
        self._drop_copy = drop_copy            # evict a secondary copy
        self._forget_remote = forget_remote    # freed: tell the nodes with copies
        # from the task part: wake or fail tasks waiting for an argument
        self._fail_task = fail_task            # (task, error payload)
        self._enqueue = enqueue                # (task)
        self.segment_prefix = segment_prefix   # names of this store's segments
        self.capacity = capacity
        self.used = 0                    # bytes of segments in memory
        self.reserved = 0                # granted to producers, not yet written
        self.waiting_room: collections.deque = collections.deque()  # queued reservations/restores
        self.lru: collections.OrderedDict = collections.OrderedDict()  # in-memory SHARED ids
        self.spill_dir = spill_dir
        self.spill_threshold = threshold
        self.spilling = spilling and spill_dir is not None
        self.spilling_bytes = 0          # being copied out now
        self.spilled_now = 0             # bytes on disk now
        self.spilled_total = 0           # ever spilled
        self.restored_total = 0          # ever restored
        self.pulled_total = 0            # brought from other nodes
        self.served_total = 0            # sent to other nodes
        self.warm_bytes = 0              # freed segments kept warm (told by the agent's I/O side)
        self.spill_error = None          # the last failure to write the spill directory
        self.spill_failed: list = []     # ids whose spill failed, tried again after a success
        self._io_inflight: dict = {}     # object id -> its job, until SpillIO reports
        self.needs_work = False
        self.copy_seconds: dict = {}     # kind -> seconds SpillIO spent copying
        self.spill_count = 0             # spills so far: each spilled object's spill_seq
        self.spill_attempts = 0          # spills started so far: each spill file's suffix
        self.spill_order: dict = {}      # spill_seq -> id of an object on disk now
        self.last_read_seq = None        # spill_seq of the last object a reader asked back

    # ------------------------------------------------------- reservations

    def on_reserve(self, client: ClientEntry, request_id: int, size: int,
                   object_id: bytes) -> None:
        """client will write the segment of object_id, size bytes (a negative
        size: it could not, the room is given back)."""
        if size < 0:
            taken = min(-size, client.reserved)
            client.reserved -= taken
            self.reserved -= taken
            client.writing.pop(object_id, None)
            self.needs_work = True
            return
        if size > self.capacity:
            self._refuse(client.identity, request_id, size,
                         "the object is larger than the whole object store")
            return
        if not self.waiting_room and self._fits(size):
            self._grant(client, request_id, size, object_id)
            return
        if not self.spilling:
            self._refuse(client.identity, request_id, size, "spilling is turned off")
            return
        self.waiting_room.append(("reserve", client.client_id, request_id, size, object_id))
        self.needs_work = True

    def _fits(self, size: int) -> bool:
        return self.used + self.reserved + size <= self.capacity

    def _grant(self, client: ClientEntry, request_id: int, size: int, object_id: bytes) -> None:
        # Recorded before the reply that lets it create the segment
        # (lightray.agent.segments: unlinked if it dies before sealing it).
        client.writing[object_id] = size
        client.reserved += size
        self.reserved += size
        self.effects.room_granted = True   # (freed segments are unlinked before the reply)
        self.effects.outbox[client.identity].append((m.INFO_REPLY, request_id, ("ok",)))

    def _refuse(self, identity: bytes, request_id: int, size: int, why: str) -> None:
        error = (f"object store full: {why}. The object needs {size} bytes; the store holds "
                 f"{self.used} of {self.capacity} bytes in memory, "
                 f"{self.reserved} more are reserved, {self.spilled_now} bytes are spilled "
                 f"to {self.spill_dir or '(no spill directory)'}"
                 + (f"; last spill error: {self.spill_error}" if self.spill_error else ""))
        self.effects.outbox[identity].append((m.INFO_REPLY, request_id, ("full", error)))

    def consume_reservation(self, client: ClientEntry, payloads) -> None:
        """Segments written under client's reservation are now stored (sealed)."""
        for payload in payloads:
            if payload[0] == SHARED and client.reserved:
                taken = min(payload[1][1], client.reserved)
                client.reserved -= taken
                self.reserved -= taken
                self.needs_work = True
                object_id = segments.object_id_of(payload[1][0], self.segment_prefix)
                if object_id is not None:
                    client.writing.pop(object_id, None)

    def release_reservations(self, client: ClientEntry) -> None:
        """client is gone: its room comes back, the segments it had not sealed are unlinked."""
        if client.reserved:
            self.reserved -= client.reserved
            client.reserved = 0
            self.needs_work = True
        if client.writing:
            self.effects.free_segments.extend(
                segments.unsealed_names(client, self.objects, self.segment_prefix, self.clients))

    def orphan_segments(self, names) -> list:
        """Of the segment names found in the store's directory, those to unlink
        (lightray.agent.segments.orphans): held, written and copied by nobody."""
        copying = set(self._io_inflight) | set(self.pulls)
        return segments.orphans(names, self.segment_prefix, self.objects, self.clients, copying)

    # ------------------------------------------------------ the store's turn

    def work(self) -> None:
        """Grant what fits, spill what must go (called once per agent turn)."""
        self.needs_work = False
        self._grant_waiting()
        if self.spilling:
            self._spill_if_needed()
        if self.waiting_room and not self._spills_or_restores_running():
            self._refuse_stuck()

    def _grant_waiting(self) -> None:
        room = self.waiting_room
        while room:
            item = room[0]
            if item[0] == "reserve":
                _, client_id, request_id, size, object_id = item
                client = self.clients.get(client_id)
                if client is None:
                    room.popleft()
                    continue
                if not self._fits(size):
                    return
                room.popleft()
                self._grant(client, request_id, size, object_id)
            else:
                object_id = item[1]
                entry = self.objects.get(object_id)
                if entry is None or entry.spill not in (SPILLED, REMOTE):
                    room.popleft()
                    if entry is not None:
                        entry.restore_queued = False
                    continue
                if not self._fits(entry.payload[1][1]):
                    return
                room.popleft()
                entry.restore_queued = False
                self._start_restore(object_id, entry)

    def _spills_or_restores_running(self) -> bool:
        return bool(self._io_inflight) or bool(self.pulls)

    def _waiting_bytes(self) -> int:
        total = 0
        for item in self.waiting_room:
            if item[0] == "reserve":
                total += item[3]
            else:
                entry = self.objects.get(item[1])
                if entry is not None and entry.payload is not None:
                    total += entry.payload[1][1]
        return total

    def _spill_if_needed(self) -> None:
        target = int(self.spill_threshold * self.capacity)
        excess = (self.used - self.spilling_bytes + self.reserved + self._waiting_bytes()
                  - target)
        if excess <= 0:
            return
        in_use = self._objects_in_use()
        excess = self._spill_candidates(excess, in_use)
        if excess > 0 and self.waiting_room and not self.spilling_bytes:
            # Producers wait and only arguments of queued tasks are left:
            # spill those too (their readers keep their own mappings).
            self._spill_candidates(excess, ())

    def _spill_candidates(self, excess: int, in_use) -> int:
        objects = self.objects
        for object_id in list(self.lru):
            if excess <= 0:
                break
            entry = objects.get(object_id)
            if entry is None or entry.spill is not None or entry.payload is None \
                    or entry.payload[0] != SHARED:
                self.lru.pop(object_id, None)
                continue
            if object_id in in_use:
                continue
            if entry.location is not None:     # a copy: the primary is on another node
                self._drop_copy(object_id, entry)
                excess -= entry.payload[1][1]
                continue
            self._start_spill(object_id, entry)
            excess -= entry.payload[1][1]
        return excess

    def _objects_in_use(self) -> set:
        """Arguments of tasks on a worker's queue (running or about to), and of
        tasks waiting for an argument to be restored (spilling their other
        arguments meanwhile would make them wait for ever)."""
        in_use = set()
        for worker in self.workers.values():
            for task in worker.queue:
                in_use.update(task.spec[ts.DEPS])
        restoring = [job.object_id for job in self._io_inflight.values()
                     if type(job) is RestoreJob]
        restoring += [item[1] for item in self.waiting_room if item[0] == "restore"]
        for object_id in restoring:
            entry = self.objects.get(object_id)
            for task in (entry.waiting_tasks or ()) if entry is not None else ():
                in_use.update(task.spec[ts.DEPS])
        return in_use

    def _refuse_stuck(self) -> None:
        """Nothing is being spilled or restored and nothing can be: the
        queued producers would wait forever."""
        if self.reserved:
            return   # granted room about to be written, then spillable
        if self.spilling and self.lru:
            return   # something can still be spilled next turn
        while self.waiting_room:
            item = self.waiting_room.popleft()
            if item[0] == "reserve":
                client = self.clients.get(item[1])
                if client is not None:
                    self._refuse(client.identity, item[2], item[3],
                                 "spilling cannot make room" if self.spilling
                                 else "spilling is turned off")
            else:
                entry = self.objects.get(item[1])
                if entry is not None:
                    entry.restore_queued = False
                    self.restore_failed(item[1], entry, "not enough room to restore it"
                                         + (f"; last spill error: {self.spill_error}"
                                            if self.spill_error else ""))

    # ------------------------------------------------------------- spilling

    def track_in_memory(self, object_id: bytes) -> None:
        self.lru[object_id] = None
        self.lru.move_to_end(object_id)
        self.needs_work = True

    def _start_spill(self, object_id: bytes, entry) -> None:
        layout = entry.payload[1]
        self.spill_attempts += 1
        path = spill_file_name(self.spill_dir, object_id, self.spill_attempts)
        self.transitions.object(object_id, entry, SPILLING, "over the spill threshold")
        entry.spill_cancelled = False
        self.spilling_bytes += layout[1]
        self.lru.pop(object_id, None)
        self._submit_io(SpillJob(object_id, layout, path))

    def on_spill_done(self, object_id: bytes, error) -> None:
        _, layout, path = self._io_inflight.pop(object_id)
        size = layout[1]
        self.spilling_bytes -= size
        self.needs_work = True
        entry = self.objects.get(object_id)
        if entry is None or entry.spill != SPILLING:
            self.effects.free_files.append(path)   # freed meanwhile: its segment is gone too
            return
        if error is not None:
            # Kept in memory, and not tried again until a spill succeeds: a
            # full or vanished disk must end in an error, not a retry loop.
            self.spill_error = f"{type(error).__name__}: {error}"
            self.transitions.object(object_id, entry, None, "spill failed")
            self.spill_failed.append(object_id)
            self.effects.free_files.append(path)
            return
        if entry.spill_cancelled:
            # A task or reader wanted it while it was copied: keep it in memory.
            self.transitions.object(object_id, entry, None, "wanted while spilled")
            self.effects.free_files.append(path)
            self.track_in_memory(object_id)
            return
        if self.spill_failed:   # the disk takes files again
            for failed in self.spill_failed:
                if failed in self.objects:
                    self.lru[failed] = None
            self.spill_failed = []
        self.spill_error = None
        self.transitions.object(object_id, entry, SPILLED, "spill done")
        entry.spill_path = path
        self.spill_count += 1
        entry.spill_seq = self.spill_count
        self.spill_order[self.spill_count] = object_id
        self.used -= size
        self.spilled_now += size
        self.spilled_total += size
        self.effects.free_segments.append(layout[0])
        self.tell_holders_spilled(object_id)

    def tell_holders_spilled(self, object_id: bytes) -> None:
        # Holders may keep a mapping of it for quick gets: it would pin the memory.
        for client in self.clients.values():
            if object_id in client.held:
                box = self.effects.outbox[client.identity]
                if box and box[-1][0] == m.SPILLED:
                    box[-1][1].append(object_id)
                else:
                    box.append((m.SPILLED, [object_id]))

    # ------------------------------------------------------------ restoring

    def on_restore(self, client: ClientEntry, request_id: int, object_id: bytes) -> None:
        """A reader found the segment gone: answer with the payload once it is back."""
        entry = self.objects.get(object_id)
        if entry is not None and entry.pending and entry.payload is None:
            # Being made again (lightray.agent.lineage): answered when it is.
            if entry.restore_waiters is None:
                entry.restore_waiters = []
            entry.restore_waiters.append((client.identity, request_id))
            return
        if entry is None or entry.payload is None:
            lost = exceptions.ObjectLostError(
                f"object {object_id.hex()} is not in the store: it was freed")
            self.effects.outbox[client.identity].append(
                (m.INFO_REPLY, request_id, ("lost", serialization.dumps_exception(lost))))
            return
        seq = entry.spill_seq
        self.want_in_memory(object_id, entry, (client.identity, request_id))
        if seq is not None:
            self._read_ahead(seq)

    def _read_ahead(self, seq: int) -> None:
        """A reader asked back the object spilled seq-th: if that follows the
        previous ask (objects read ahead are not asked for), restore the next
        ones now, while they fit below the threshold."""
        last, self.last_read_seq = self.last_read_seq, seq
        if last is None or not last < seq <= last + READ_AHEAD + 1:
            return
        room = (int(self.spill_threshold * self.capacity) - self.used
                - self.reserved - self._waiting_bytes())
        for following in range(seq + 1, seq + 1 + READ_AHEAD):
            object_id = self.spill_order.get(following)
            entry = self.objects.get(object_id) if object_id is not None else None
            if entry is None or entry.spill != SPILLED or entry.restore_queued:
                continue
            size = entry.payload[1][1]
            if size > room:
                return
            room -= size
            self.want_in_memory(object_id, entry)

    def want_in_memory(self, object_id: bytes, entry, waiter=None) -> bool:
        """True if entry is readable now; else its restore is under way (waiter
        answered when done)."""
        if entry.spill is None or entry.spill == SPILLING:
            if entry.spill == SPILLING:
                entry.spill_cancelled = True
            if entry.spill is None and object_id in self.lru:
                self.lru.move_to_end(object_id)
            if waiter is not None:
                self.effects.outbox[waiter[0]].append((m.INFO_REPLY, waiter[1], ("ok", entry.payload)))
            return True
        if waiter is not None:
            if entry.restore_waiters is None:
                entry.restore_waiters = []
            entry.restore_waiters.append(waiter)
        if (entry.spill == SPILLED or entry.spill == REMOTE) and not entry.restore_queued:
            entry.restore_queued = True
            self.waiting_room.append(("restore", object_id))
            self.needs_work = True
        return False

    def _start_restore(self, object_id: bytes, entry) -> None:
        self.effects.room_granted = True
        if entry.spill == REMOTE:
            self._start_pull(object_id, entry)
            return
        layout = entry.payload[1]
        self.transitions.object(object_id, entry, RESTORING, "wanted back")
        self.reserved += layout[1]
        self._submit_io(RestoreJob(object_id, layout, entry.spill_path))

    def _submit_io(self, job) -> None:
        """A SpillJob or RestoreJob: for SpillIO, in flight until it reports."""
        self._io_inflight[job.object_id] = job
        self.effects.io_jobs.append(job)

    def on_restore_done(self, object_id: bytes, error) -> None:
        _, layout, path = self._io_inflight.pop(object_id)
        size = layout[1]
        self.reserved -= size
        self.needs_work = True
        entry = self.objects.get(object_id)
        if entry is None or entry.spill != RESTORING:
            # Freed while it was copied back.
            self.spilled_now -= size
            self.effects.free_segments.append(layout[0])
            self.effects.free_files.append(path)
            return
        if error is not None:
            self.transitions.object(object_id, entry, SPILLED, "restore failed")
            self.restore_failed(object_id, entry, f"{type(error).__name__}: {error}")
            return
        self.transitions.object(object_id, entry, None, "restore done")
        entry.spill_path = None
        self.spill_order.pop(entry.spill_seq, None)
        entry.spill_seq = None
        self.used += size
        self.spilled_now -= size
        self.restored_total += size
        self.effects.free_files.append(path)
        self.track_in_memory(object_id)
        waiters, entry.restore_waiters = entry.restore_waiters, None
        for identity, request_id in waiters or ():
            self.effects.outbox[identity].append((m.INFO_REPLY, request_id, ("ok", entry.payload)))
        self.wake_waiting_tasks(entry, entry.payload)

    def restore_failed(self, object_id: bytes, entry, why: str) -> None:
        """Readers and tasks waiting for an object that cannot be brought back
        (from the spill directory, or from another node) get ObjectLostError."""
        if entry.location is not None:
            what = f"could not be fetched from node {entry.location}"
        else:
            what = f"was spilled to {entry.spill_path} and could not be restored"
        lost = exceptions.ObjectLostError(f"object {object_id.hex()} {what}: {why}")
        payload = (ERROR, serialization.dumps_exception(lost))
        waiters, entry.restore_waiters = entry.restore_waiters, None
        for identity, request_id in waiters or ():
            self.effects.outbox[identity].append((m.INFO_REPLY, request_id, ("lost", payload[1])))
        self.wake_waiting_tasks(entry, payload)

    def arguments_fit(self, task) -> bool:
        """Fail a task whose arguments can never be in memory together."""
        objects = self.objects
        total = 0
        for object_id in task.spec[ts.DEPS]:
            payload = objects[object_id].payload
            if payload is not None and payload[0] == SHARED:
                total += payload[1][1]
        if total <= self.capacity:
            return True
        error = exceptions.ObjectStoreFullError(
            f"task {task.spec[ts.FUNCTION_NAME]}() needs {total} bytes of arguments in memory "
            f"at once, more than the object store's capacity of {self.capacity} bytes "
            f"({self.used} bytes in memory now, {self.spilled_now} spilled to "
            f"{self.spill_dir or '(no spill directory)'})")
        self._fail_task(task, (ERROR, serialization.dumps_exception(error)))
        return False

    def wake_waiting_tasks(self, entry, payload) -> None:
        if not entry.waiting_tasks:
            return
        waiting, entry.waiting_tasks = entry.waiting_tasks, None
        for task in waiting:
            if task.state != WAITING:
                continue
            if payload[0] == ERROR:
                self._fail_task(task, payload)
            else:
                task.missing_deps -= 1
                if task.missing_deps == 0:
                    self._enqueue(task)

    # -------------------------------------------------------------- freeing

    def forget_stored(self, object_id: bytes, entry) -> None:
        """The object is freed: give back its memory or its spill file."""
        payload = entry.payload
        if payload is None or payload[0] != SHARED:
            return
        if entry.copies or entry.spill == PULLING:
            self._forget_remote(object_id, entry)
        if entry.spill == REMOTE:
            return
        self.lru.pop(object_id, None)
        if entry.spill_seq is not None:
            self.spill_order.pop(entry.spill_seq, None)
        spill = entry.spill
        if spill is None or spill == SPILLING:
            # (A spill under way finds the entry gone and deletes its file.)
            self.effects.free_segments.append(payload[1][0])
            self.used -= payload[1][1]
            self.needs_work = True
        elif spill == SPILLED:
            self.effects.free_files.append(entry.spill_path)
            self.spilled_now -= payload[1][1]
        # RESTORING: the restore finds the entry gone and removes both copies.

    # ---------------------------------------------------------------- info

    def info(self) -> dict:
        return store_summary.info(self)

    def memory_summary(self) -> dict:
        return store_summary.memory_summary(self)


def spill_file_name(spill_dir: str, object_id: bytes, attempt: int) -> str:
    """One name per spill, never reused: an object restored and spilled again
    in one agent turn gets a new file while the old one waits for removal (a
    reused name would be refused by O_EXCL, or deleted under the new copy)."""
    return os.path.join(spill_dir, f"{object_id.hex()}.{attempt}")
