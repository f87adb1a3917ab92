"""The object table: the values this process can read, and who waits for which.

    I/O thread ── on_ready(items) ──▶ ready ──notify──▶ get/wait (user threads, under cv)
                                        │ ├────────────▶ futures (set in the I/O thread)
                                        │ └────────────▶ when_ready callbacks
    materialize(id) ── INLINE: unpickle; SHARED: attach the segment (kept in mappings
                       while a ref is held; restored first when it was spilled)

No sockets of its own: what it says to the agent (SUBSCRIBE) and the
restore of a spilled (or lost) segment go through callables its client passes in, so
that it can be driven in tests with none. Payloads are only stored for
objects this process holds a ref to (the ledger's counts); the ledger tells
the table to forget an object when its last local ref goes.
"""
from __future__ import annotations

import concurrent.futures
import threading
import time

from .. import exceptions, serialization
from ..serialization import INLINE, SHARED
from ..store import shm
from ..transport import messages as m


class ObjectTable:
    """Ready payloads, futures and callbacks, and mapped segments of one process."""

    def __init__(self, ledger, *, send, send_locked, restore, in_io_thread):
        self.cv = threading.Condition(threading.Lock())
        self.ready: dict = {}                 # object id -> payload
        self.subscribed: set = set()          # ids we asked the agent about
        self._held = ledger.counts            # ids with a live local ref
        self._owned = ledger.owned            # ids the agent pushes to us unasked
        self._futures: dict = {}              # object id -> [Future]
        self._when_ready: dict = {}           # object id -> [callable()]
        # Mappings of segments this process read, kept while it holds the ref
        # so that a second get costs no mmap; dropped when the agent says the
        # object was spilled (the mapping would pin its memory).
        self.mappings: dict = {}              # object id -> (mmap, inband, buffers)
        self._send = send                     # send(ops) to the agent
        self._send_locked = send_locked       # same, caller holds the client's lock
        self._restore = restore               # restore(object id) -> payload of a spilled object
        self._in_io_thread = in_io_thread     # () -> bool

    # ------------------------------------------------------------ storing

    def store(self, object_id: bytes, payload) -> None:
        """A value this process made itself (put)."""
        with self.cv:
            self.ready[object_id] = payload

    def forget(self, object_id: bytes) -> None:
        """The last local ref to object_id is gone (caller holds the client's lock)."""
        with self.cv:   # on_ready checks our count and stores under cv
            self.ready.pop(object_id, None)
        self.subscribed.discard(object_id)
        # Dropping our mapping is enough: numpy views still alive keep it mapped.
        self.mappings.pop(object_id, None)

    def drop_mappings(self, object_ids) -> None:
        """The agent spilled these: unmap them (a mapping would pin the memory)."""
        for object_id in object_ids:
            self.mappings.pop(object_id, None)

    def on_ready(self, items: list) -> None:
        """(object id, payload) pairs that became ready; fires futures and callbacks."""
        fired = []
        notify = []
        with self.cv:
            held = self._held
            for object_id, payload in items:
                if object_id in held:
                    self.ready[object_id] = payload
                    if object_id in self._futures:
                        fired.append((object_id, self._futures.pop(object_id)))
                if object_id in self._when_ready:
                    notify.extend(self._when_ready.pop(object_id))
            self.cv.notify_all()
        for callback in notify:
            callback()
        for object_id, futures in fired:
            try:
                value = self.materialize(object_id)
            except _RestoreElsewhere:
                # Spilled already: restoring needs the I/O thread's replies.
                threading.Thread(target=self._settle_futures, args=(object_id, futures),
                                 daemon=True).start()
                continue
            except BaseException as error:  # the task's own error, delivered
                for future in futures:
                    future.set_exception(error)
            else:
                for future in futures:
                    future.set_result(value)

    def _settle_futures(self, object_id: bytes, futures) -> None:
        try:
            value = self.materialize(object_id)
        except BaseException as error:
            for future in futures:
                future.set_exception(error)
        else:
            for future in futures:
                future.set_result(value)

    def fail_all(self, error: BaseException) -> None:
        """The client stopped: wake every waiter and fail every future."""
        with self.cv:
            self.cv.notify_all()
        for futures in self._futures.values():
            for future in futures:
                if not future.done():
                    future.set_exception(error)
        self._futures.clear()

    # ------------------------------------------------------------ waiting

    def subscribe_missing(self, object_ids) -> list:
        """Ids not ready yet; asks the agent about those nobody pushes to us."""
        ready = self.ready
        missing = [i for i in object_ids if i not in ready]
        if missing:
            owned, subscribed = self._owned, self.subscribed
            ask = [i for i in missing if i not in owned and i not in subscribed]
            if ask:
                subscribed.update(ask)
                self._send([(m.SUBSCRIBE, ask)])
        return missing

    def wait(self, object_ids: list, missing: list, num_ready: int, timeout,
             stopped_reason) -> None:
        """Block until num_ready of object_ids are ready (missing: those that
        were not), or timeout passes; stopped_reason() is None while the
        client runs, else why it stopped (raised as RuntimeNotRunningError)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        ready = self.ready
        with self.cv:
            while True:
                missing = [i for i in missing if i not in ready]
                if len(object_ids) - len(missing) >= num_ready:
                    return
                reason = stopped_reason()
                if reason is not None:
                    raise exceptions.RuntimeNotRunningError(
                        f"lightray stopped while waiting: {reason}")
                if deadline is None:
                    self.cv.wait(1.0)
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    self.cv.wait(remaining)

    def future(self, ref) -> concurrent.futures.Future:
        future = concurrent.futures.Future()
        object_id = ref._id
        with self.cv:
            ready = object_id in self.ready
            if not ready:
                self._futures.setdefault(object_id, []).append(future)
        if ready:
            try:
                future.set_result(self.materialize(object_id))
            except BaseException as error:
                future.set_exception(error)
        else:
            # Keep the ref alive until the future fires.
            future.add_done_callback(lambda _f, _keep=ref: None)
            self.subscribe_missing([object_id])
        return future

    def when_ready(self, ref, callback) -> None:
        """Call callback() (in the I/O thread) once ref is ready, without fetching it."""
        object_id = ref._id
        with self.cv:
            ready = object_id in self.ready
            if not ready:
                # The closure holds the ref: the agent pushes results only to
                # owners still holding them.
                self._when_ready.setdefault(object_id, []).append(
                    lambda _keep=ref: callback())
        if ready:
            callback()
        else:
            self.subscribe_missing([object_id])

    def when_ready_locked(self, ref, callback) -> bool:
        """Like when_ready, for a caller holding the client's lock; False (and
        no call) when ref is ready already."""
        object_id = ref._id
        with self.cv:
            if object_id in self.ready:
                return False
            self._when_ready.setdefault(object_id, []).append(lambda _keep=ref: callback())
        if object_id not in self._owned and object_id not in self.subscribed:
            self.subscribed.add(object_id)
            self._send_locked([(m.SUBSCRIBE, [object_id])])
        return True

    # ------------------------------------------------------------ reading

    def materialize(self, object_id: bytes):
        """The value of a ready object (raises the error it holds)."""
        kind, data = self.ready[object_id]
        if kind == INLINE:
            return serialization.deserialize(data)
        if kind == SHARED:
            mapping = self.mappings.get(object_id)
            if mapping is None:
                try:
                    mapping = self.attach(object_id, data)
                except _MadeAgain as again:
                    with self.cv:
                        if object_id in self._held:
                            self.ready[object_id] = again.payload
                    return self.materialize_payload(object_id, again.payload)
                if object_id in self._held:
                    self.mappings[object_id] = mapping
            return serialization.deserialize(mapping[1], mapping[2])
        raise serialization.deserialize(data)

    def materialize_payload(self, object_id: bytes, payload):
        """The value of a payload handed over directly (a task's argument)."""
        kind, data = payload
        if kind == INLINE:
            return serialization.deserialize(data)
        if kind == SHARED:
            try:
                _, inband, buffers = self.attach(object_id, data)
            except _MadeAgain as again:
                return self.materialize_payload(object_id, again.payload)
            return serialization.deserialize(inband, buffers)
        raise serialization.deserialize(data)

    def attach(self, object_id: bytes, layout):
        """Map a segment (bringing it back first if it was spilled; _MadeAgain
        if it was lost and made again as another kind of payload)."""
        for _ in range(100):
            try:
                return shm.attach(layout)
            except FileNotFoundError:
                if self._in_io_thread():
                    raise _RestoreElsewhere() from None
                payload = self._restore(object_id)
                if payload[0] != SHARED:
                    raise _MadeAgain(payload) from None
                layout = payload[1]
        raise exceptions.ObjectLostError(
            f"object {object_id.hex()} keeps being spilled before it can be read")


class _RestoreElsewhere(Exception):
    """The I/O thread met a spilled segment: restore it from another thread."""


class _MadeAgain(Exception):
    """The object was lost and made again (lightray.agent.lineage) as an
    inline value or an error: read that payload instead."""

    def __init__(self, payload):
        super().__init__("made again")
        self.payload = payload
