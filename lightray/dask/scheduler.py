"""``lightray.get(dsk, keys)``: a Dask scheduler that runs each Dask task as a lightray task.

    Dask graph ──normalize──▶ {key: GraphNode} ──topological order──▶ submit each task
        its dependencies are passed as ObjectRefs (resolved in the worker, so
        intermediate data never passes through the driver)
    the driver drops its ref to a key once every dependent is submitted: the
        agent keeps the value exactly until the last dependent has finished
    only the requested keys are fetched

Submission never waits for a task: a graph of any size is handed to the agent
in one pass, without per-task round trips. A task whose every dependent only
picks an item of its result (the splits of a task shuffle) runs once with
``num_returns`` and the picking tasks are dropped.
"""
from __future__ import annotations

from .. import api
from ..object_ref import ObjectRef
from ..options import TASK_OPTIONS, TaskOptions
from ..remote_function import RemoteFunction
from ..runtime import client_for_submission
from . import graph as g
from . import guard
from .callbacks import CallbackSet
from .diagnostics import DaskDiagnostics

# Options a Dask task may carry (num_returns is the scheduler's own business).
DASK_TASK_OPTIONS = tuple(o for o in TASK_OPTIONS if o != "num_returns")

_last_run_stats: dict = {}

guard.install()   # from now on other schedulers refuse graphs holding ObjectRefs


# ------------------------------------------------------------ in the worker

def run_dask_task(node, dep_keys, callbacks, *dep_values):
    """Run one Dask task with its dependencies' values (in a lightray worker)."""
    states = [callback.pretask(node.key, dep_values) for callback in callbacks]
    result = node(dict(zip(dep_keys, dep_values)))
    for callback, state in zip(callbacks, states):
        callback.posttask(node.key, result, state)
    return result


def run_dask_split(node, dep_keys, callbacks, indices, *dep_values):
    """Run a task once and return each piece its dependents pick, as separate returns."""
    result = run_dask_task(node, dep_keys, callbacks, *dep_values)
    return [result[i] for i in indices]


# ------------------------------------------------------------- in the driver

class Literal:
    """A key's value known in the driver (a literal, or a presubmit shortcut)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


class _Submitter:
    """Makes and caches the RemoteFunction for each distinct option set."""

    def __init__(self):
        self._functions: dict = {}

    def function(self, body, options: dict, num_returns: int = 1) -> RemoteFunction:
        cache_key = (body, repr(sorted(options.items())), num_returns)
        function = self._functions.get(cache_key)
        if function is None:
            unknown = sorted(set(options) - set(DASK_TASK_OPTIONS))
            if unknown:
                raise ValueError(f"unknown lightray option(s) for Dask tasks "
                                 f"{', '.join(map(repr, unknown))}; valid options are: "
                                 f"{', '.join(DASK_TASK_OPTIONS)}")
            TaskOptions(options)  # validates the values
            function = RemoteFunction(body, {**options, "num_returns": num_returns})
            self._functions[cache_key] = function
        return function


_submitter = _Submitter()


def _annotations(dsk) -> dict:
    """{key: lightray options} from dask.annotate(lightray={...})."""
    per_key: dict = {}
    layers = getattr(dsk, "layers", None)
    if isinstance(layers, dict):   # a HighLevelGraph
        for layer in layers.values():
            options = (getattr(layer, "annotations", None) or {}).get("lightray")
            if options:
                for key in layer:
                    per_key[key] = options
    annotate = getattr(dsk, "__dask_annotations__", None)
    if callable(annotate):
        try:
            found = annotate() or {}
        except Exception:  # an expression that cannot tell: no annotations
            found = {}
        for key, options in (found.get("lightray") or {}).items():
            per_key[key] = options
    return per_key


class GraphRun:
    """One submission of a Dask graph."""

    def __init__(self, dsk, keys, *, callbacks=None, remote_args=None, multi_return=True):
        self.keys = keys
        self.requested = g.requested_keys(keys)
        self.annotations = _annotations(dsk)
        self.graph = g.normalize(dsk)
        self.callbacks = CallbackSet(callbacks)
        self.remote_args = dict(remote_args or {})
        self.multi_return = multi_return
        self.tasks_submitted = 0

    def submit(self, diagnostics=None) -> dict:
        """{requested key: ObjectRef or Literal} once every task is submitted."""
        graph = self.graph
        requested = set(self.requested)
        order = g.topological_order(graph, requested)
        remaining = g.count_dependents(graph, order)
        splits = g.find_splits(graph, order, requested) if self.multi_return else {}
        split_members = {sel: (parent, i) for parent, picks in splits.items()
                         for i, (sel, _) in enumerate(picks)}
        results: dict = {}   # key -> ObjectRef, or Literal
        if diagnostics is not None:
            diagnostics.start(graph, order)
        for key in order:
            node = graph[key]
            if key in split_members:
                if diagnostics is not None:   # its ref came with its parent's
                    diagnostics.skipped(key)
            elif not self._submit_one(key, node, results, splits.get(key), diagnostics) \
                    and diagnostics is not None:
                diagnostics.skipped(key)
            for dep in node.dependencies:
                remaining[dep] -= 1
                if remaining[dep] == 0 and dep not in requested:
                    # Submitted dependents pin it in the agent until they finish.
                    results.pop(dep, None)
            if key in splits:
                results.pop(key, None)
        refs = {k: results[k] for k in self.requested}
        for callback in self.callbacks.postsubmit_all:
            callback.postsubmit_all([v for v in refs.values() if isinstance(v, ObjectRef)], graph)
        return refs

    def _submit_one(self, key, node, results: dict, split, diagnostics) -> bool:
        """Settle key; True if that took a lightray task."""
        target = g.alias_target(node)
        if target is not None:
            results[key] = results[target]
            return False
        is_literal, value = g.literal_value(node)
        if is_literal:
            results[key] = value if isinstance(value, ObjectRef) else Literal(value)
            return False
        node, lifted = g.lift_inlined_refs(node)
        dep_keys = list(node.dependencies)
        # ObjectRefs, or the values themselves where the driver knows them.
        args = []
        for dep in dep_keys:
            found = lifted[dep] if dep in lifted else results[dep]
            args.append(found.value if type(found) is Literal else found)
        for callback in self.callbacks.presubmit:
            shortcut = callback.presubmit(node, key, args)
            if shortcut is not None:
                results[key] = Literal(shortcut)
                return False
        options = {**self.remote_args, **self.annotations.get(key, {})}
        worker_callbacks = self.callbacks.worker
        if split is None:
            function = _submitter.function(run_dask_task, options)
            ref = function.remote(node, dep_keys, worker_callbacks, *args)
            results[key] = ref
        else:
            indices = [index for _, index in split]
            function = _submitter.function(run_dask_split, options, len(indices))
            refs = function.remote(node, dep_keys, worker_callbacks, indices, *args)
            for (selection, _), piece in zip(split, refs):
                results[selection] = piece
            ref = refs[0]
        self.tasks_submitted += 1
        if diagnostics is not None:
            diagnostics.submitted(key, node, ref if split is None else refs)
        for callback in self.callbacks.postsubmit:
            callback.postsubmit(node, key, args, ref)
        return True


def get(dsk, keys, *, lightray_callbacks=None, lightray_remote_args=None,
        lightray_multi_return: bool = True, **kwargs):
    """Compute keys of a Dask graph on lightray (see the module docstring)."""
    client_for_submission()   # starts a runtime if there is none
    run = GraphRun(dsk, keys, callbacks=lightray_callbacks, remote_args=lightray_remote_args,
                   multi_return=lightray_multi_return)
    with DaskDiagnostics.from_active() as diagnostics:
        refs = run.submit(diagnostics)
        pending = [v for v in refs.values() if isinstance(v, ObjectRef)]
        fetched = dict(zip((id(r) for r in pending), api.get(pending))) if pending else {}
        values = {k: (fetched[id(v)] if isinstance(v, ObjectRef) else v.value)
                  for k, v in refs.items()}
        diagnostics.finished()
    _record_stats(run)
    result = g.repack(run.keys, values)
    for callback in run.callbacks.finish:
        callback.finish(result)
    return result


def _record_stats(run: GraphRun) -> None:
    _last_run_stats.clear()
    _last_run_stats.update(tasks_in_graph=len(run.graph), tasks_submitted=run.tasks_submitted)


def last_run_stats() -> dict:
    """Counts of the last ``get(dsk, keys)`` or persist in this process:
    tasks_in_graph, tasks_submitted."""
    return dict(_last_run_stats)


def _holds_values_themselves(client) -> bool:
    """True for a local-mode runtime handing tasks the very objects (copy_values=False)."""
    return (getattr(client, "runs_in_process", False) is True
            and getattr(client, "copy_values", True) is False)


def persist(collections, optimize_graph: bool = True, *, lightray_callbacks=None,
            lightray_remote_args=None, lightray_multi_return: bool = True, **kwargs):
    """Dask's persist protocol (dask calls ``lightray.get.persist``): returns the
    collections rebuilt on graphs that hold the ObjectRefs of their keys."""
    from dask._expr import CompositeExpr, _ExprSequence
    from dask.base import _rebuild_composite_collection, collections_to_expr

    client = client_for_submission()
    expr = collections_to_expr(collections, optimize_graph)
    collection_exprs = list(expr.operands) if isinstance(expr, _ExprSequence) else [expr]
    has_composite = any(isinstance(e, CompositeExpr) for e in collection_exprs)
    expr = expr.optimize()
    if has_composite:
        collection_exprs = list(expr.operands) if isinstance(expr, _ExprSequence) else [expr]
        if len(collection_exprs) != len(collections):
            collection_exprs = [None] * len(collections)
    else:
        collection_exprs = [None] * len(collections)
    keys, postpersists = [], []
    for collection, collection_expr, collection_keys in zip(
            collections, collection_exprs, expr.__dask_keys__()):
        flat = list(g.requested_keys(collection_keys))
        keys.extend(flat)
        if isinstance(collection_expr, CompositeExpr):
            postpersists.append((collection, collection_expr, None, flat))
        else:
            rebuild, state = collection.__dask_postpersist__()
            postpersists.append((rebuild, None, state, flat))
    run = GraphRun(expr, keys, callbacks=lightray_callbacks, remote_args=lightray_remote_args,
                   multi_return=lightray_multi_return)
    refs = run.submit()
    _record_stats(run)
    # The refs themselves go into the graph, as distributed leaves Futures
    # (dask's helpers call .result() on them); guard.py keeps other schedulers off.
    stored = {k: (v if isinstance(v, ObjectRef) else v.value) for k, v in refs.items()}
    if _holds_values_themselves(client):
        # Local mode without copies is Dask's sync scheduler: persist leaves
        # the values themselves in the graph, as that one does (no copy made).
        held = [k for k, v in stored.items() if isinstance(v, ObjectRef)]
        if held:
            stored.update(zip(held, api.get([stored[k] for k in held])))
    rebuilt = []
    for rebuild, _, state, flat in postpersists:
        if state is None:
            rebuilt.append(_rebuild_composite_collection(rebuild, flat, stored,
                                                         cull_to_child_keys=True))
        else:
            rebuilt.append(rebuild({k: stored[k] for k in flat}, *state))
    return rebuilt
