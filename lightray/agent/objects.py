"""The agent's object table: reference counts, readiness, subscribers. Part of AgentState.

    INC/DEC from processes ─┐                       ┌─▶ READY pushed to owner and subscribers
    pins of tasks/objects ──┼─▶ ObjectEntry.refs ──┤
    PUT / task results ─────┘                       └─▶ at refs == 0: freed, segment unlinked

Objects: ``refs`` counts the processes holding an ObjectRef (each counts
once, via INC/DEC) plus pins (pending tasks needing it as an argument or
holding it inside their arguments, objects containing it). An object is freed
when refs reaches 0 and it is not still being produced.

``ObjectDirectory`` is a part of ``AgentState`` (lightray.agent.state, its
``directory`` field): it works on the object table and the clients it is
given, tells the store (StoreCapacity) what enters and leaves memory, and
wakes tasks waiting for an argument through it; a freed actor handle object
is reported through the callback it is given.
"""
from __future__ import annotations

from .. import exceptions, serialization
from ..ids import task_of
from .records import ClientEntry, ObjectEntry
from ..serialization import ERROR, SHARED
from ..ids import HANDLE_PAYLOAD, is_handle_object
from ..transport import messages as m



class ObjectDirectory:
    __slots__ = ("effects", "objects", "clients", "early_decs", "store", "_handles_gone",
                 "_released")

    def __init__(self, effects, *, objects: dict, clients: dict, early_decs: dict, store,
                 handles_gone, released):
        self.effects = effects           # lightray.agent.effects.Effects
        self.objects = objects           # object id -> ObjectEntry
        self.clients = clients           # client id -> ClientEntry
        self.early_decs = early_decs     # client id -> ids DECed before we knew them
        self.store = store               # StoreCapacity (lightray.agent.store)
        self._handles_gone = handles_gone   # (actor id): its handle object was freed
        self._released = released        # (object id): it left the table (lineage counts)

    def on_inc(self, client: ClientEntry, object_ids: list) -> None:
        # An id we do not know yet gets an entry: its producer may be another
        # client's submission still on its way.
        self.pin(object_ids)
        client.held.update(object_ids)

    def on_dec(self, client: ClientEntry, object_ids: list) -> None:
        held = client.held
        for object_id in object_ids:
            if object_id in held:
                held.discard(object_id)
                self.unref(object_id)
            elif object_id not in self.objects:
                early = self.early_decs.setdefault(client.client_id, set())
                if len(early) < 100_000:   # only a race leaves ids here; bound it anyway
                    early.add(object_id)

    def expect_result(self, client: ClientEntry, object_id: bytes, call_site=None) -> None:
        """A task client submitted will produce object_id; client owns it."""
        entry = self.objects.get(object_id)
        if entry is not None and entry.pending:
            if object_id in client.held:
                return   # promised by a direct submission that is now retried here
            # A process the submitter passed the ref to (an actor call's
            # argument, on a socket of its own) counted it and may wait for
            # it already: its messages overtook this SUBMIT. Replacing the
            # entry would lose its count and its subscription (its get would
            # never be answered).
            entry.refs += 1
            entry.owner = client.client_id
        else:
            entry = self.objects[object_id] = ObjectEntry(1, owner=client.client_id)
        entry.call_site = call_site
        client.held.add(object_id)

    def unref(self, object_id: bytes) -> None:
        entry = self.objects.get(object_id)
        if entry is None:
            return
        entry.refs -= 1
        if entry.refs <= 0 and not entry.pending:
            self.free(object_id, entry)

    def pin(self, object_ids) -> None:
        objects = self.objects
        for object_id in object_ids:
            entry = objects.get(object_id)
            if entry is None:
                entry = objects[object_id] = ObjectEntry(0)
            entry.refs += 1

    def free(self, object_id: bytes, entry: ObjectEntry) -> None:
        del self.objects[object_id]
        self._released(object_id)
        payload = entry.payload
        if payload is not None and payload[0] == SHARED:
            self.store.forget_stored(object_id, entry)
        for inner in entry.contained:
            self.unref(inner)
        if payload is HANDLE_PAYLOAD and is_handle_object(object_id):
            self._handles_gone(task_of(object_id))

    def on_put(self, client: ClientEntry, object_id: bytes, payload, contained,
                call_site=None) -> None:
        entry = ObjectEntry(1, owner=client.client_id)
        entry.call_site = call_site
        self.objects[object_id] = entry
        client.held.add(object_id)
        self.set_ready(object_id, entry, payload, contained, push_owner=False)

    def set_ready(self, object_id: bytes, entry: ObjectEntry, payload, contained,
                   push_owner: bool = True) -> None:
        entry.payload = payload
        entry.pending = False
        if payload[0] == SHARED and entry.spill is None:   # (not on another node)
            self.store.used += payload[1][1]
            self.store.track_in_memory(object_id)
        if contained:
            entry.contained = tuple(contained)
            self.pin(contained)
        item = (object_id, payload)
        if push_owner:
            owner = self.clients.get(entry.owner)
            # Only while the owner still holds a ref: an intermediate it has
            # already let go of (a Dask graph's) would be sent for nothing.
            if owner is not None and object_id in owner.held:
                self.push_ready(owner.identity, item)
        if entry.subscribers:
            for identity in entry.subscribers:
                self.push_ready(identity, item)
            entry.subscribers = None
        if entry.waiting_tasks:
            self.store.wake_waiting_tasks(entry, payload)
        if entry.restore_waiters:
            # Readers that found it lost while it was made again (lineage).
            waiters, entry.restore_waiters = entry.restore_waiters, None
            for waiter in waiters:
                if payload[0] == SHARED and entry.spill is not None:
                    self.store.want_in_memory(object_id, entry, waiter)   # pull it here
                else:
                    self.effects.outbox[waiter[0]].append((m.INFO_REPLY, waiter[1],
                                                           ("ok", payload)))
        # (waking or failing its waiting tasks may have freed it already)
        if entry.refs <= 0 and self.objects.get(object_id) is entry:
            self.free(object_id, entry)

    def push_ready(self, identity: bytes, item) -> None:
        box = self.effects.outbox[identity]
        if box and box[-1][0] == m.READY:
            box[-1][1].append(item)
        else:
            box.append((m.READY, [item]))

    def on_subscribe(self, client: ClientEntry, object_ids: list) -> None:
        for object_id in object_ids:
            entry = self.objects.get(object_id)
            if entry is None:
                lost = exceptions.ObjectLostError(
                    f"object {object_id.hex()} is not in the store: it was freed or never existed")
                self.push_ready(client.identity, (object_id, (ERROR, serialization.dumps_exception(lost))))
            elif not entry.pending:
                self.push_ready(client.identity, (object_id, entry.payload))
            elif entry.owner != client.client_id:
                if entry.subscribers is None:
                    entry.subscribers = []
                entry.subscribers.append(client.identity)
