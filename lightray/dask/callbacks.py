"""Callbacks into lightray's Dask scheduler, in the driver and in the workers.

    driver:  presubmit(task, key, deps) -> value or None   before a task is submitted
             postsubmit(task, key, deps, object_ref)        after it is
             postsubmit_all(object_refs, dsk)               after the whole graph is
             finish(result)                                 with the final result
    worker:  pretask(key, object_refs) -> state             before the task runs
             posttask(key, result, state)                   after it ran

A callback is active inside ``with MyCallback():`` (several may be nested) or
for one call with ``compute(scheduler=lightray.get, lightray_callbacks=[...])``.
Worker hooks travel with each task (the callback object is pickled), so they
can only record into something reachable from the worker, such as a file.
"""
from __future__ import annotations


class Callback:
    """Subclass and override the hooks you need."""

    active: list = []

    def presubmit(self, task, key, deps):
        return None

    def postsubmit(self, task, key, deps, object_ref):
        pass

    def pretask(self, key, object_refs):
        return None

    def posttask(self, key, result, pre_state):
        pass

    def postsubmit_all(self, object_refs, dsk):
        pass

    def finish(self, result):
        pass

    def __enter__(self):
        Callback.active = Callback.active + [self]
        return self

    def __exit__(self, *exc_info):
        Callback.active = [c for c in Callback.active if c is not self]


def _overrides(callback, name: str) -> bool:
    return getattr(type(callback), name) is not getattr(Callback, name)


class CallbackSet:
    """The callbacks of one run, sorted by which hooks they implement."""

    __slots__ = ("all", "presubmit", "postsubmit", "worker", "postsubmit_all", "finish")

    def __init__(self, per_call):
        callbacks = list(Callback.active) + list(per_call or ())
        for callback in callbacks:
            if not isinstance(callback, Callback):
                raise TypeError(f"lightray_callbacks takes lightray.dask.Callback instances, "
                                f"got {type(callback).__name__}")
        self.all = callbacks
        self.presubmit = [c for c in callbacks if _overrides(c, "presubmit")]
        self.postsubmit = [c for c in callbacks if _overrides(c, "postsubmit")]
        # Only callbacks with worker hooks are shipped with every task.
        self.worker = tuple(c for c in callbacks
                            if _overrides(c, "pretask") or _overrides(c, "posttask"))
        self.postsubmit_all = [c for c in callbacks if _overrides(c, "postsubmit_all")]
        self.finish = [c for c in callbacks if _overrides(c, "finish")]
