"""Dask graphs as lightray sees them: normalized nodes, order, dependents, splits.

Everything here is pure: it reads a graph and answers questions about it. No
task is submitted and no lightray call is made.
"""
from __future__ import annotations

import collections
import operator

from dask._task_spec import (Alias, DataNode, GraphNode, Task, TaskRef, _execute_subgraph,
                             convert_legacy_graph)
from dask.core import flatten

from ..object_ref import ObjectRef


def normalize(dsk) -> dict:
    """{key: GraphNode} for a dict graph, a HighLevelGraph or a Dask expression."""
    if hasattr(dsk, "__dask_graph__") and not isinstance(dsk, dict):
        dsk = dsk.__dask_graph__()
    return convert_legacy_graph(dict(dsk))


def requested_keys(keys) -> list:
    """The flat list of keys asked for (a single key or nested lists of keys)."""
    if isinstance(keys, list):
        return list(flatten(keys))
    return [keys]


def repack(keys, values: dict):
    """Values arranged like keys: nested lists of keys give nested tuples, as
    Dask's own schedulers return them."""
    if isinstance(keys, list):
        return tuple(repack(k, values) for k in keys)
    return values[keys]


def topological_order(graph: dict, needed: set) -> list:
    """Keys of needed and everything they depend on, dependencies first.

    Iterative (Kahn's algorithm), so a chain of any length is fine.
    """
    reachable = set()
    stack = list(needed)
    while stack:
        key = stack.pop()
        if key in reachable:
            continue
        if key not in graph:
            raise KeyError(f"key {key!r} is not in the Dask graph")
        reachable.add(key)
        stack.extend(graph[key].dependencies)
    missing_deps = collections.Counter()
    dependents = collections.defaultdict(list)
    for key in reachable:
        deps = graph[key].dependencies
        missing_deps[key] = len(deps)
        for dep in deps:
            dependents[dep].append(key)
    ready = [k for k in reachable if missing_deps[k] == 0]
    order = []
    while ready:
        key = ready.pop()
        order.append(key)
        for child in dependents.get(key, ()):
            missing_deps[child] -= 1
            if missing_deps[child] == 0:
                ready.append(child)
    if len(order) != len(reachable):
        raise ValueError("the Dask graph has a cycle")
    return order


def count_dependents(graph: dict, order: list) -> dict:
    counts = collections.Counter()
    for key in order:
        for dep in graph[key].dependencies:
            counts[dep] += 1
    return counts


def selection_of(node):
    """(parent key, index) if node is ``getitem(parent, index)``, else None."""
    if not isinstance(node, Task) or node.func is not operator.getitem or node.kwargs:
        return None
    if len(node.args) != 2:
        return None
    source, index = node.args
    if not isinstance(source, (Alias, TaskRef)) or isinstance(index, GraphNode):
        return None
    try:
        hash(index)
    except TypeError:
        return None
    return source.key if isinstance(source, TaskRef) else source.target, index


def find_splits(graph: dict, order: list, requested: set) -> dict:
    """{parent key: [(selection key, index), ...]} for tasks whose every
    dependent only picks an item of their result (each split of a shuffle).

    Such a parent can run once with num_returns=len(selections), so each
    piece moves exactly once and the selection tasks disappear.
    """
    selections = collections.defaultdict(list)
    blocked = set(requested)
    for key in order:
        node = graph[key]
        picked = selection_of(node)
        if picked is not None and picked[0] in graph:
            selections[picked[0]].append((key, picked[1]))
        else:
            blocked.update(node.dependencies)
    splits = {}
    for parent, picks in selections.items():
        if parent in blocked or len(picks) < 2 or not isinstance(graph[parent], Task):
            continue
        splits[parent] = picks
    return splits


def literal_value(node):
    """(True, value) for a DataNode, else (False, None)."""
    if isinstance(node, DataNode):
        return True, node.value
    return False, None


def alias_target(node):
    if isinstance(node, Alias) and node.target != node.key:
        return node.target
    return None


def lift_inlined_refs(node):
    """(node, {key: ObjectRef}): a fused task with persisted keys pulled out.

    Dask's linear fusion may inline a persisted key (a DataNode holding an
    ObjectRef) into the subgraph of a fused task, where the worker would see
    the ref instead of its value. Such keys become external dependencies of
    the fused task again, so lightray passes their refs as arguments and the
    worker gets the values. Other nodes come back unchanged, with {}.
    """
    lifted = inlined_refs(node)
    if not lifted:
        return node, {}
    inner, outkey, inkeys, *deps = node.args
    inner = {k: v for k, v in inner.items() if k not in lifted}
    new_inkeys = tuple(inkeys) + tuple(lifted)
    return Task(node.key, _execute_subgraph, inner, outkey, new_inkeys,
                *deps, *(TaskRef(k) for k in lifted),
                _data_producer=node.data_producer), lifted


def inlined_refs(node) -> dict:
    """{key: ObjectRef} of persisted keys inlined into a fused task's subgraph."""
    if not isinstance(node, Task) or node.func is not _execute_subgraph:
        return {}
    return {k: v.value for k, v in node.args[0].items()
            if isinstance(v, DataNode) and isinstance(v.value, ObjectRef)}
