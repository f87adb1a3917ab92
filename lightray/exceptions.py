"""Exceptions raised by lightray to user code.

``TaskError`` mirrors Ray's RayTaskError: when a task raises, ``get`` raises an
exception that is both a ``TaskError`` and, whenever the original type can be
subclassed, an instance of the original exception's type, so that
``except ValueError`` catches a remote ValueError.
"""
from __future__ import annotations

import concurrent.futures


class LightrayError(Exception):
    """Base class of every error lightray raises itself."""


class TaskError(LightrayError):
    """A task raised an exception; ``cause`` holds the original one."""

    def __init__(self, function_name: str, traceback_str: str, cause: BaseException | None,
                 pid: int = 0, node_id: str = ""):
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.pid = pid
        self.node_id = node_id
        super().__init__(self._message())

    def _message(self) -> str:
        return (f"task {self.function_name}() failed in worker pid={self.pid} on node "
                f"{self.node_id}:\n{self.traceback_str.rstrip()}")

    def __str__(self) -> str:
        return self._message()

    def __reduce__(self):
        return (_rebuild_task_error, (self.function_name, self.traceback_str,
                                      _picklable_or_none(self.cause), self.pid, self.node_id))

    def as_instanceof_cause(self) -> "TaskError":
        """An equivalent error that is also an instance of the cause's type."""
        cause_type = type(self.cause)
        if self.cause is None or isinstance(self, cause_type):
            return self
        dual = _dual_class(cause_type)
        if dual is None:
            return self
        error = dual.__new__(dual)
        TaskError.__init__(error, self.function_name, self.traceback_str, self.cause,
                           self.pid, self.node_id)
        error.args = (self._message(),)
        return error


_dual_classes: dict = {}


def _dual_class(cause_type: type):
    """A class deriving from TaskError and cause_type, or None if impossible."""
    if cause_type in _dual_classes:
        return _dual_classes[cause_type]
    dual = None
    if issubclass(cause_type, Exception):
        try:
            dual = type(f"TaskError({cause_type.__name__})", (TaskError, cause_type),
                        {"__init__": TaskError.__init__, "__str__": TaskError.__str__,
                         "__reduce__": TaskError.__reduce__, "__module__": __name__})
        except TypeError:  # layout conflicts, final classes
            dual = None
    _dual_classes[cause_type] = dual
    return dual


def _picklable_or_none(obj):
    # cloudpickle, not pickle: a class defined inside a function is pickled by
    # value, and cloudpickle maps it back to the caller's own class object.
    import cloudpickle
    try:
        cloudpickle.dumps(obj)
        return obj
    except Exception:
        return None


def _rebuild_task_error(function_name, traceback_str, cause, pid, node_id):
    return TaskError(function_name, traceback_str, cause, pid, node_id).as_instanceof_cause()


class GetTimeoutError(LightrayError, TimeoutError):
    """``get`` did not see the object become ready within its timeout."""


class KVTimeoutError(GetTimeoutError):
    """A ``lightray.kv`` call was not answered within its timeout: for a write,
    it may or may not have been applied (a retry of it applies it once)."""


class KVError(LightrayError):
    """A ``lightray.kv`` request the control store will not serve (it names why)."""


class WorkerCrashedError(LightrayError):
    """The worker running the task died (killed, segfault, os._exit) and the
    task had no retries left."""


class OutOfMemoryError(WorkerCrashedError):
    """The task's worker was killed because the node ran short of memory (by
    the agent's memory monitor, or by the kernel's OOM killer) and the task had
    no retries left; the message names the task, its memory and the threshold."""


class TaskCancelledError(LightrayError, concurrent.futures.CancelledError):
    """The task was cancelled with ``lightray.cancel`` (or ``ref.cancel()``);
    a concurrent.futures.CancelledError, as ObjectRef is future-like."""


class ObjectLostError(LightrayError):
    """Every copy of the object is gone and it cannot be rebuilt."""


class OwnerDiedError(ObjectLostError):
    """The process or node that owned the object died, so nothing can rebuild
    it; the message names the owner."""


class ObjectStoreFullError(LightrayError):
    """The object store cannot hold the value."""


class TaskUnschedulableError(LightrayError):
    """The task asks for resources that no node of the runtime has."""


class RuntimeNotRunningError(LightrayError):
    """The runtime this object or call belongs to has been shut down."""


class ActorDiedError(LightrayError):
    """The actor is dead: killed, its constructor raised, its process died with
    no restarts left, or every handle to it went away. ``cause`` holds the
    constructor's exception when that is why."""

    def __init__(self, message: str, cause: BaseException | None = None):
        super().__init__(message)
        self.cause = cause

    def __reduce__(self):
        return (ActorDiedError, (self.args[0], _picklable_or_none(self.cause)))
