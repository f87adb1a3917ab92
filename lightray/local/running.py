"""What a task and an actor call share in local mode: arguments, results,
errors, and the asynchronous exception that cancels a thread.

    .remote(args) ──prepare_arguments──▶ Call (pickled args with copy_values, else the objects)
    thread ──arguments(call)──▶ values ──user code──▶ store_results / task_error

Cancelling a running task raises KeyboardInterrupt inside its thread with
PyThreadState_SetAsyncExc: CPython checks for it between bytecodes, so it
lands at once in Python code but only after a blocking C call (time.sleep,
a read) returns. ``guarded`` keeps such an exception from landing in
lightray's own code after the user's code has ended.
"""
from __future__ import annotations

import ctypes
import os
import threading
import traceback
from threading import get_ident

from .. import exceptions, serialization
from ..ids import return_ids
from ..object_ref import ObjectRef
from ..remote_function import _serialize_or_explain
from ..task_spec import Dep, substitute
from .objects import IMMUTABLE_TYPES


_THIS_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep



class Call:
    """A prepared invocation: its arguments, the refs it needs, its returns."""

    __slots__ = ("task_id", "name", "marked", "pickled", "keep", "deps", "num_returns",
                 "return_ids", "refs")

    def __init__(self, task_id: bytes, name: str, num_returns: int):
        self.task_id = task_id
        self.name = name
        self.num_returns = num_returns
        self.return_ids = [task_id + b"\x00\x00"] if num_returns == 1 \
            else return_ids(task_id, num_returns)
        self.marked = ((), {})      # (args, kwargs) with Dep(i) for top-level refs
        self.pickled = None         # their pickle, with copy_values
        self.keep = None            # the arguments as given, while pickled holds them
        self.deps: list = []        # the top-level ObjectRefs (kept alive until it runs)
        self.refs: list = []        # the return refs handed to the caller


_NOT_COPIED_ARGUMENTS = IMMUTABLE_TYPES | {Dep}   # a Dep is replaced by its value's copy


def prepare_arguments(call: Call, args: tuple, kwargs: dict, copy_values: bool) -> None:
    """Mark the top-level refs of args and, with copy_values, pickle the rest
    now, in the caller's thread: an unpicklable argument fails at .remote()
    with the same TypeError as in cluster mode."""
    deps = call.deps

    def mark(value):
        if type(value) is ObjectRef:
            deps.append(value)
            return Dep(len(deps) - 1)
        return value

    marked = (tuple(mark(a) for a in args), {k: mark(v) for k, v in kwargs.items()})
    immutable = _NOT_COPIED_ARGUMENTS
    if copy_values and not (all(type(a) in immutable for a in marked[0])
                            and all(type(v) in immutable for v in marked[1].values())):
        call.pickled = _serialize_or_explain(call.name, marked, args, kwargs)
        # The pickle holds the refs nested in args as ids only: keep the
        # arguments themselves (and so those refs) until the call has run.
        call.keep = (args, kwargs)
    else:
        call.marked = marked


def arguments(call: Call, objects) -> tuple:
    """(args, kwargs) for running call, once its deps are done: a fresh copy
    with copy_values; the deps' values substituted (a failed dep raises DepFailed)."""
    if not call.deps and call.pickled is None:
        return call.marked
    dep_ids = [ref._id for ref in call.deps]
    if dep_ids:
        objects.wait(dep_ids, len(dep_ids), None, sliced=True)
    values = []
    for ref in call.deps:
        entry = objects.entries.get(ref._id)
        if entry is not None and entry.error is not None:
            raise DepFailed(entry.error)
        values.append(objects.value(ref._id))
    if call.pickled is not None:
        args, kwargs = serialization.deserialize(call.pickled.inband, call.pickled.buffers)
    else:
        args, kwargs = call.marked
    return substitute(args, kwargs, values)


class DepFailed(Exception):
    """An argument's task failed: the call fails with that same error."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


def split_results(call: Call, result, what: str) -> tuple:
    num_returns = call.num_returns
    if num_returns == 1:
        return (result,)
    if num_returns == 0:
        return ()
    try:
        results = tuple(result)
    except TypeError:
        results = None
    if results is None or len(results) != num_returns:
        raise ValueError(f"{what} {call.name}() declared num_returns={num_returns} "
                         f"but returned {type(result).__name__}"
                         + ("" if results is None else f" of length {len(results)}"))
    return results


def store_results(call: Call, objects, result, what: str = "task") -> None:
    """Split result into call's returns and resolve them (pickled with
    copy_values: an unpicklable result raises here, inside the task)."""
    if call.num_returns == 1:   # the common case, without a tuple
        if objects.copy_values and type(result) not in IMMUTABLE_TYPES:
            objects.finish(call.return_ids[0], None, serialization.serialize(result), None)
        else:
            objects.finish(call.return_ids[0], result, None, None)
        return
    results = split_results(call, result, what)
    if objects.copy_values:
        # Every return pickled first: one that cannot be fails the call whole.
        immutable = IMMUTABLE_TYPES
        pickles = [value if type(value) in immutable else serialization.serialize(value)
                   for value in results]
        for object_id, pickled in zip(call.return_ids, pickles):
            objects.resolve_pickled(object_id, pickled)
        return
    for object_id, value in zip(call.return_ids, results):
        objects.resolve(object_id, value)


def fail_all(call: Call, objects, error: BaseException) -> None:
    for object_id in call.return_ids:
        objects.fail(object_id, error)


def task_error(name: str, error: BaseException, node_id: str) -> exceptions.TaskError:
    """The TaskError a get of a failed call raises, with the user's frames
    (those of lightray.local that called them left out)."""
    cause = error.cause if isinstance(error, exceptions.TaskError) else error
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_THIS_PACKAGE):
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(error), error, tb))
    return exceptions.TaskError(name, text, cause, os.getpid(), node_id).as_instanceof_cause()


def should_retry(retry_exceptions, error: BaseException) -> bool:
    if retry_exceptions is True:
        return isinstance(error, Exception)
    if isinstance(retry_exceptions, tuple):
        return isinstance(error, retry_exceptions)
    return False


# ------------------------------------------------------- asynchronous exceptions

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
_set_async_exc.restype = ctypes.c_int


def interrupt_thread(thread_id: int, exception_type=KeyboardInterrupt) -> bool:
    """Raise exception_type in the thread thread_id at its next bytecode."""
    return _set_async_exc(thread_id, exception_type) == 1


def clear_interrupt(thread_id: int) -> None:
    """Take back an exception interrupt_thread sent that has not landed yet."""
    _set_async_exc(thread_id, ctypes.py_object())  # NULL clears it


class Interruptible:
    """The part of a call that may be interrupted, and the lock that decides
    whether an interrupt may still be sent (``lock`` is shared by a runtime)."""

    __slots__ = ("thread_id", "in_user_code", "interrupt_sent")

    def __init__(self):
        self.thread_id = 0
        self.in_user_code = False
        self.interrupt_sent = False


def guarded(state: Interruptible, lock: threading.Lock, work, *args):
    """Run work(*args) (the user's code) so that an interrupt for it lands in it
    or not at all: ('ok', result), ('interrupted', exc) or ('error', exc)."""
    outcome = None
    while True:
        try:
            if outcome is None:
                with lock:
                    state.thread_id = get_ident()
                    state.in_user_code = True
                try:
                    outcome = ("ok", work(*args))
                except KeyboardInterrupt as error:
                    outcome = ("interrupted", error)
                except BaseException as error:   # the user's code failed
                    outcome = ("error", error)
            with lock:
                state.in_user_code = False
                if state.interrupt_sent:
                    clear_interrupt(state.thread_id)
            return outcome
        except KeyboardInterrupt as error:
            # Sent just as the user's code ended: it landed here instead.
            if outcome is None:
                outcome = ("interrupted", error)
