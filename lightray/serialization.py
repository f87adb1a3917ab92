"""Turning values into payloads and back.

A payload is what travels in messages and sits in the agent's object table:

    (INLINE, pickle_bytes)                 value under the inline threshold
    (SHARED, segment_layout)               value written once to shared memory
    (ERROR,  pickle_bytes_of_exception)    the task producing it failed
    (LOCAL,  None)                         (a task argument only) produced by a task
                                           ahead in the same worker's queue

Pickle protocol 5 keeps large buffers (numpy arrays, bytes-like data)
out of band: they are written straight into a segment and read back as views
over it, never copied through a pickle stream. Plain ``pickle`` is tried first
(it is several times faster); cloudpickle takes over for what plain pickle
cannot do by reference (lambdas, closures, classes defined in ``__main__``).

ObjectRefs met while pickling are recorded (``contained`` ids) so that whoever
receives the payload can pin the objects they point to.

Functions pickled by value keep their code's file name (cloudpickle writes
"<dynamic-code>" in its place), so a remote traceback names the user's file
and line, and shows the line wherever that file can be read.
"""
from __future__ import annotations

import collections
import io
import pickle
import threading
import types

import cloudpickle

from .exceptions import LightrayError

INLINE, SHARED, ERROR, LOCAL = 0, 1, 2, 3

_capture = threading.local()


def record_contained_ref(object_id: bytes) -> None:
    """Called by ObjectRef.__reduce__ while a value is being serialized."""
    found = getattr(_capture, "ids", None)
    if found is not None:
        found.append(object_id)


class Serialized:
    __slots__ = ("inband", "buffers", "contained", "size")

    def __init__(self, inband, buffers, contained):
        self.inband = inband            # the pickle stream
        self.buffers = buffers          # out-of-band PickleBuffers
        self.contained = contained      # ids of ObjectRefs inside the value
        self.size = len(inband) + sum(b.raw().nbytes for b in buffers)


_DYNAMIC_CODE = "<dynamic-code>"   # what cloudpickle puts in co_filename


def _code_reduce_keeping_filename(code: types.CodeType):
    constructor, args = cloudpickle.Pickler.dispatch_table[types.CodeType](code)
    return constructor, tuple(code.co_filename if arg == _DYNAMIC_CODE else arg for arg in args)


class _Pickler(cloudpickle.Pickler):
    dispatch_table = collections.ChainMap(
        {types.CodeType: _code_reduce_keeping_filename}, cloudpickle.Pickler.dispatch_table)


def _cloudpickle_dumps(value, buffer_callback=None) -> bytes:
    with io.BytesIO() as file:
        _Pickler(file, protocol=5, buffer_callback=buffer_callback).dump(value)
        return file.getvalue()


def _dumps(value, buffer_callback, force_cloudpickle: bool):
    if not force_cloudpickle:
        try:
            data = pickle.dumps(value, protocol=5, buffer_callback=buffer_callback)
            # A by-reference global of __main__ would not import in a worker.
            if b"__main__" not in data:
                return data
        except (pickle.PicklingError, AttributeError, TypeError):
            pass
    return None


def serialize(value, *, oob_min: int = 64 * 1024) -> Serialized:
    """Pickle value; buffers of at least oob_min bytes are kept out of band."""
    buffers: list = []

    def keep_large_out_of_band(buf):
        if buf.raw().nbytes >= oob_min:
            buffers.append(buf)
            return False
        return True

    previous = getattr(_capture, "ids", None)
    _capture.ids = contained = []
    try:
        data = _dumps(value, keep_large_out_of_band, False)
        if data is None:
            buffers.clear()
            contained.clear()
            data = _cloudpickle_dumps(value, keep_large_out_of_band)
    finally:
        _capture.ids = previous
    return Serialized(data, buffers, contained)


def serialize_inline(value) -> Serialized:
    """Serialize with every buffer in band (for values known to be small)."""
    return serialize(value, oob_min=1 << 62)


def deserialize(inband, buffers=()):
    return pickle.loads(inband, buffers=buffers)


def dumps_function(function) -> bytes:
    return _cloudpickle_dumps(function)


def dumps_exception(error: BaseException) -> bytes:
    try:
        return _cloudpickle_dumps(error)
    except Exception:
        return pickle.dumps(LightrayError(f"{type(error).__name__}: {error}"), protocol=5)
