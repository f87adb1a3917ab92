"""ObjectRef: a handle on a value that exists, or will exist, somewhere in the runtime."""
from __future__ import annotations

from . import serialization
from .runtime import current_client_or_none, require_client_for


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

    def __await__(self):
        import asyncio  # imported here: most programs never await a ref
        return asyncio.wrap_future(self.future()).__await__()


def _rebuild_object_ref(object_id: bytes) -> ObjectRef:
    return ObjectRef(object_id, current_client_or_none())
