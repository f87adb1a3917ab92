"""The object table of local mode: values in this process's memory, with refcounts.

    put / task result ──resolve──▶ entry (value or error) ──get──▶ copy (or the object itself)
    ObjectRef.__init__ / __del__ ──▶ counts ──last ref gone──▶ entry dropped

With copy_values (the default) an entry holds the value's pickle
(lightray.serialization.Serialized) and every get unpickles a fresh copy, as
a worker on another process would see it; the refs that pickle contains are
pinned while the entry lives, like the agent pins an object's contained refs.
Without copy_values an entry holds the object itself (Dask's sync scheduler).
"""
from __future__ import annotations

import collections
import concurrent.futures
import threading
import time

from .. import exceptions, serialization
from ..ids import HANDLE_SUFFIX, TASK_ID_BYTES, is_handle_object, task_of

# How long one wait slice lasts in a thread that runs a task: an asynchronous
# exception (cancel) reaches a thread only between bytecodes, never inside
# Condition.wait, so task threads wait in short slices.
TASK_WAIT_SLICE_S = 0.05

# Values whose copy no one could tell from the original: copy_values does
# not pickle these (None, numbers, strings, bytes).
IMMUTABLE_TYPES = frozenset((type(None), bool, int, float, complex, str, bytes))


class _Entry:
    __slots__ = ("done", "value", "error", "serialized", "callbacks", "pinned")

    def __init__(self):
        self.done = False
        self.value = None           # the object itself (copy_values=False)
        self.serialized = None      # its pickle (copy_values=True)
        self.error = None           # the exception a get raises
        self.callbacks = []         # called (no arguments, no lock held) once done
        self.pinned = ()            # ids of refs inside serialized, counted while it lives


new_entry = _Entry


class LocalObjects:
    """Entries by object id; every change under ``lock`` (``changed`` to wait on it)."""

    def __init__(self, copy_values: bool, on_handle_gone):
        self.copy_values = copy_values
        # One lock for the table; ``changed`` (a Condition on it) only for
        # waiting: taking the lock itself is much cheaper than the Condition.
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self._waiters = 0
        self.entries: dict = {}
        self.counts: dict = {}         # object id -> refs to it (a plain dict: faster than Counter)
        self.pending_decs: collections.deque = collections.deque()  # ObjectRef.__del__
        self._on_handle_gone = on_handle_gone     # actor id -> None (no lock held)
        self.closed = False

    # ---------------------------------------------------------- ref counting

    def add_ref(self, object_id: bytes) -> None:
        with self.lock:
            counts = self.counts
            counts[object_id] = counts.get(object_id, 0) + 1

    def drain(self) -> None:
        """Apply the decrements ObjectRef.__del__ queued (it may not lock)."""
        decs = self.pending_decs
        if not decs:
            return
        gone_handles = []
        with self.lock:
            self.drain_locked(gone_handles)
        self.handles_gone(gone_handles)

    def drain_locked(self, gone_handles: list) -> None:
        """drain() under lock: the actors whose last handle went are added
        to gone_handles, for handles_gone once the lock is let go."""
        decs = self.pending_decs
        while decs:
            self._unref_locked(decs.popleft(), gone_handles)

    def handles_gone(self, gone_handles: list) -> None:
        for actor_id in gone_handles:
            self._on_handle_gone(actor_id)

    def _unref_locked(self, object_id: bytes, gone_handles: list) -> None:
        counts = self.counts
        left = counts.get(object_id, 0) - 1
        if left > 0:
            counts[object_id] = left
            return
        counts.pop(object_id, None)
        if object_id[TASK_ID_BYTES:] == HANDLE_SUFFIX:   # an actor's handle object
            gone_handles.append(task_of(object_id))
            return
        self._drop_locked(object_id, gone_handles)

    def _drop_locked(self, object_id: bytes, gone_handles: list) -> None:
        """Forget an entry no ref points at once it is done (a pending one
        goes when its task ends: finish)."""
        entry = self.entries.get(object_id)
        if entry is not None and entry.done and not entry.callbacks:
            del self.entries[object_id]
            for inner in entry.pinned:
                self._unref_locked(inner, gone_handles)

    # --------------------------------------------------------------- results

    def expect(self, object_ids) -> None:
        """Entries for results a task will produce."""
        with self.lock:
            for object_id in object_ids:
                self.entries.setdefault(object_id, _Entry())

    def resolve(self, object_id: bytes, value) -> None:
        """object_id now holds value (pickled first with copy_values; a
        pickling error propagates to the caller and nothing is stored)."""
        if not self.copy_values or type(value) in IMMUTABLE_TYPES:
            self.finish(object_id, value, None, None)
        else:
            self.finish(object_id, None, serialization.serialize(value), None)

    def resolve_pickled(self, object_id: bytes, serialized) -> None:
        """object_id now holds the value of serialized (copy_values), or
        serialized itself when it is not a Serialized (an immutable value)."""
        if type(serialized) is serialization.Serialized:
            self.finish(object_id, None, serialized, None)
        else:
            self.finish(object_id, serialized, None, None)

    def fail(self, object_id: bytes, error: BaseException) -> None:
        self.finish(object_id, None, None, error)

    def finish(self, object_id, value, serialized, error) -> None:
        """object_id is done with value, its pickle serialized, or error (a
        second answer is ignored); its callbacks run, without the lock."""
        with self.lock:
            entry = self.entries.get(object_id)
            if entry is None:
                entry = self.entries[object_id] = _Entry()
            if entry.done:
                return   # a cancelled task finishing late: its first answer stands
            entry.done = True
            entry.value, entry.serialized, entry.error = value, serialized, error
            if serialized is not None and serialized.contained:
                entry.pinned = tuple(serialized.contained)
                counts = self.counts
                for inner in entry.pinned:
                    counts[inner] = counts.get(inner, 0) + 1
            callbacks, entry.callbacks = entry.callbacks, []
            if self._waiters:
                self.changed.notify_all()
            unwanted = object_id not in self.counts and not is_handle_object(object_id)
        for callback in callbacks:
            callback()
        if unwanted:
            # Nobody holds a ref any more (fire-and-forget task): drop it now.
            gone_handles = []
            with self.lock:
                if object_id not in self.counts:
                    self._drop_locked(object_id, gone_handles)
            for actor_id in gone_handles:
                self._on_handle_gone(actor_id)

    # ------------------------------------------------------------ reading

    def is_ready(self, object_id: bytes) -> bool:
        entry = self.entries.get(object_id)
        return entry is not None and entry.done

    def wait(self, object_ids: list, num_ready: int, timeout, sliced: bool) -> None:
        """Block until num_ready of object_ids are done or timeout passes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        changed = self.changed
        with self.lock:
            while True:
                if self.closed:
                    raise exceptions.RuntimeNotRunningError("lightray stopped: shutdown")
                ready = sum(1 for i in object_ids if self.is_ready(i))
                if ready >= num_ready:
                    return
                missing = [i for i in object_ids if i not in self.entries]
                if missing:
                    raise exceptions.ObjectLostError(
                        f"object {missing[0].hex()} is not in this local-mode runtime (every "
                        "ref to it was dropped, or it belongs to another session)")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return
                if sliced:
                    remaining = TASK_WAIT_SLICE_S if remaining is None \
                        else min(remaining, TASK_WAIT_SLICE_S)
                self._waiters += 1
                try:
                    changed.wait(remaining)
                finally:
                    self._waiters -= 1

    def value(self, object_id: bytes):
        """The value of a done entry (a fresh copy with copy_values), or its error raised."""
        entry = self.entries[object_id]
        if entry.error is not None:
            raise entry.error
        if entry.serialized is not None:
            serialized = entry.serialized
            return serialization.deserialize(serialized.inband, serialized.buffers)
        return entry.value

    def when_done(self, object_id: bytes, callback) -> None:
        """Call callback() once object_id is done (at once if it is)."""
        with self.lock:
            entry = self.entries.get(object_id)
            if entry is not None and not entry.done:
                entry.callbacks.append(callback)
                return
        callback()

    def future(self, object_id: bytes) -> concurrent.futures.Future:
        future = concurrent.futures.Future()

        def settle():
            if object_id not in self.entries:
                future.set_exception(exceptions.ObjectLostError(
                    f"object {object_id.hex()} is not in this local-mode runtime"))
                return
            try:
                future.set_result(self.value(object_id))
            except BaseException as error:   # the task's error, for the future's owner
                future.set_exception(error)
        self.when_done(object_id, settle)
        return future

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.changed.notify_all()
            pending = [e for e in self.entries.values() if not e.done]
        error = exceptions.RuntimeNotRunningError("lightray stopped: shutdown")
        for entry in pending:
            callbacks, entry.callbacks = entry.callbacks, []
            entry.done, entry.error = True, error
            for callback in callbacks:
                callback()
