"""Dask on lightray: ``dask.config.set(scheduler=lightray.get)``.

``lightray.get(dsk, keys)`` dispatches here when its first argument is a Dask
graph (a mapping, a HighLevelGraph or a Dask expression). Importing this
package needs dask; lightray itself does not.

    scheduler     get() and persist(): each Dask task runs as a lightray task
    guard         other Dask schedulers refuse a graph holding ObjectRefs (persisted)
    graph         pure questions about a Dask graph: nodes, order, dependents, splits
    callbacks     Callback: hooks into the scheduler, in the driver and the workers
    diagnostics   Dask's local diagnostics (ProgressBar, Profiler, ...) fed by lightray

May import: dask, and the floor below it (lightray.api, remote_function,
object_ref, options, runtime). Only lightray.api imports it, on first use of
a Dask graph (dask is optional).
"""
from .callbacks import Callback
from .scheduler import get, last_run_stats, persist

__all__ = ["Callback", "get", "last_run_stats", "persist"]
