"""Dask on lightray: ``dask.config.set(scheduler=lightray.get)``.

``lightray.get(dsk, keys)`` dispatches here when its first argument is a Dask
graph (a mapping, a HighLevelGraph or a Dask expression). Importing this
package needs dask; lightray itself does not.
"""
from .callbacks import Callback
from .scheduler import get, last_run_stats, persist

__all__ = ["Callback", "get", "last_run_stats", "persist"]
