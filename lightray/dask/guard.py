"""The guard: a graph holding lightray ObjectRefs runs only on lightray.get.

A persisted collection's graph holds the ObjectRefs of its keys themselves
(``{key: ObjectRef(...)}``). Dask's own schedulers would hand such a ref to
user code as if it were the value. Once lightray.dask is imported, each of
Dask's own schedulers (sync, threads, processes, an Executor) that
``dask.base.get_scheduler`` returns first checks the graph it is given and
raises ``PersistedOnLightrayError``, naming lightray, when a key's value (or
a key fused into a task) is an ObjectRef.

    dask.compute(x) ──get_scheduler()──▶ guarded(threaded.get)
        guarded: graph ──materialize + convert once──▶ any DataNode(ObjectRef)?
            yes: raise PersistedOnLightrayError    no: threaded.get(graph, keys)

The materialized graph is what the wrapped scheduler receives, so the check
costs no second conversion.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping

import dask.base
import dask.local
from dask._task_spec import DataNode, convert_legacy_graph

from ..object_ref import ObjectRef
from .graph import inlined_refs


class PersistedOnLightrayError(RuntimeError):
    """A graph holding lightray ObjectRefs was given to another Dask scheduler."""


def refs_in_graph(graph: Mapping) -> list:
    """Keys of a converted graph whose value is a lightray ObjectRef."""
    held = []
    for key, node in graph.items():
        if isinstance(node, DataNode) and isinstance(node.value, ObjectRef):
            held.append(key)
        else:
            held.extend(inlined_refs(node))   # fused into a task's subgraph
    return held


class GuardedScheduler:
    """A Dask scheduler function that first refuses graphs holding ObjectRefs.

    Compares equal to the scheduler it wraps, as dask compares schedulers
    (``get_scheduler(...) == multiprocessing.get``).
    """

    __slots__ = ("schedule",)

    def __init__(self, schedule):
        self.schedule = schedule

    def __call__(self, dsk, keys, **kwargs):
        if not isinstance(dsk, Mapping):
            dsk = dsk.__dask_graph__()
        graph = convert_legacy_graph(dsk)
        held = refs_in_graph(graph)
        if held:
            raise PersistedOnLightrayError(
                f"this Dask graph holds {len(held)} lightray ObjectRef(s) (e.g. key "
                f"{held[0]!r}): it was persisted with scheduler=lightray.get and its data "
                f"lives in lightray's object store, so compute it with "
                f"scheduler=lightray.get, not {_name_of(self.schedule)}")
        return self.schedule(graph, keys, **kwargs)

    def __eq__(self, other):
        if isinstance(other, GuardedScheduler):
            other = other.schedule
        return self.schedule == other

    def __hash__(self):
        return hash(self.schedule)

    def __repr__(self):
        return f"GuardedScheduler({_name_of(self.schedule)})"


def _name_of(schedule) -> str:
    module = getattr(schedule, "__module__", None) or ""
    name = getattr(schedule, "__qualname__", None) or type(schedule).__name__
    return f"{module}.{name}" if module else name


def _needs_guard(schedule) -> bool:
    """Dask's own schedulers (sync, threads, processes, an Executor's).

    A scheduler function of the user's own passes untouched: it may well be
    a wrapper around lightray.get, and it gets the graph dask gives it.
    """
    if isinstance(schedule, GuardedScheduler):
        return False
    if isinstance(schedule, functools.partial):
        return schedule.func is dask.local.get_async
    return any(schedule is named for named in dask.base.named_schedulers.values())


def install() -> None:
    """Wrap dask.base.get_scheduler once per process (idempotent)."""
    original = dask.base.get_scheduler
    if getattr(original, "__lightray_original__", None) is not None:
        return

    @functools.wraps(original)
    def get_scheduler(*args, **kwargs):
        schedule = original(*args, **kwargs)
        return GuardedScheduler(schedule) if _needs_guard(schedule) else schedule

    get_scheduler.__lightray_original__ = original
    dask.base.get_scheduler = get_scheduler
