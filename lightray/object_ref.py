"""ObjectRef: a handle on a value that exists, or will exist, somewhere in the runtime."""
from __future__ import annotations

import concurrent.futures
import logging

from . import exceptions, serialization
from .runtime import current_client_or_none, require_client_for

_log = logging.getLogger(__name__)


class ObjectRef:
    """A reference to an object in the runtime.

    Hashable and picklable: a ref passed into a task (also inside lists or
    dicts) still points at the same object there. While any ObjectRef to an
    object exists in any process, the object is kept.
    """

    __slots__ = ("_id", "_client", "__weakref__")

    def __init__(self, object_id: bytes, client, *, owned: bool = False):
        self._id = object_id
        self._client = client
        if client is not None:
            client.add_local_ref(object_id, owned)

    def __del__(self):
        client = self._client
        if client is not None:
            # No lock here: __del__ may run inside any allocation, even one
            # made while this thread holds the client's lock. deque.append is
            # atomic; the client applies these decrements in order later.
            client.pending_decs.append(self._id)

    def binary(self) -> bytes:
        return self._id

    def hex(self) -> str:
        return self._id.hex()

    def task_id(self) -> str:
        return self._id[:-2].hex()

    def __hash__(self):
        return hash(self._id)

    def __eq__(self, other):
        return isinstance(other, ObjectRef) and other._id == self._id

    def __repr__(self):
        return f"ObjectRef({self._id.hex()})"

    def __reduce__(self):
        serialization.record_contained_ref(self._id)
        return (_rebuild_object_ref, (self._id,))

    def future(self):
        """A concurrent.futures.Future that resolves to the value (or its error)."""
        return require_client_for(self).future(self)

    as_future = future

    # Future-like, as concurrent.futures.Future (and where Dask looks for a
    # future, e.g. dask.array.utils.assert_eq on a persisted array's chunks).

    def result(self, timeout: float | None = None):
        """The value; raises the task's error, or TimeoutError (GetTimeoutError)."""
        return require_client_for(self).get_values([self], timeout)[0]

    def exception(self, timeout: float | None = None):
        """The task's error, or None if it succeeded; waits up to timeout.
        A cancelled task raises its TaskCancelledError (a CancelledError)."""
        client = require_client_for(self)
        client.wait_ready([self._id], 1, timeout)
        try:
            client.get_values([self], 0)
        except concurrent.futures.CancelledError:
            raise
        except exceptions.GetTimeoutError:
            raise
        except Exception as error:
            return error
        return None

    def done(self) -> bool:
        """True once the value (or its error) is ready; never blocks."""
        return require_client_for(self).is_ready(self._id)

    def cancelled(self) -> bool:
        """True once the task is known to have been cancelled."""
        if not self.done():
            return False
        try:
            require_client_for(self).get_values([self], 0)
        except concurrent.futures.CancelledError:
            return True
        except Exception:
            return False
        return False

    def cancel(self) -> bool:
        """Ask to cancel the task; False if its result is ready already.

        As lightray.cancel: a queued task never runs, a running one gets
        KeyboardInterrupt. True means the request went out before the result
        was ready; the task may still finish first (then result() gives it).
        """
        if self.done():
            return False
        require_client_for(self).cancel(self, False)
        return True

    def add_done_callback(self, fn) -> None:
        """Call fn(self) once the result (or its error) is ready, at once if it
        is; later in lightray's I/O thread, so fn should be quick. An exception
        from fn is logged, as concurrent.futures does."""
        if not callable(fn):
            raise TypeError(f"add_done_callback takes a callable, got {type(fn).__name__}")

        def call(_settled) -> None:
            try:
                fn(self)
            except Exception:
                _log.exception("exception calling callback for %r", self)

        # Through future(): it settles the value first (restoring a spilled
        # one off the I/O thread), so fn may call self.result() at once.
        self.future().add_done_callback(call)

    def __dask_tokenize__(self):
        return ("lightray.ObjectRef", self._id.hex())

    def __await__(self):
        import asyncio  # imported here: most programs never await a ref
        return asyncio.wrap_future(self.future()).__await__()


def _rebuild_object_ref(object_id: bytes) -> ObjectRef:
    return ObjectRef(object_id, current_client_or_none())
