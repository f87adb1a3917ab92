"""Dask's own local diagnostics (ProgressBar, Profiler, ResourceProfiler) under lightray.get.

Dask's local schedulers call the hooks of every active ``dask.callbacks.Callback``
with a scheduler ``state`` dict. This class plays that part for lightray: it
keeps the same state ("waiting", "running", "finished" ...) and calls
``_start``, ``_start_state``, ``_pretask`` (at submission), ``_posttask`` (when
the driver learns the task finished) and ``_finish``. Times are as seen by
the driver.
"""
from __future__ import annotations

import threading

from dask.callbacks import local_callbacks, unpack_callbacks

from ..runtime import require_client_for


class DaskDiagnostics:
    def __init__(self):
        self._context = None
        self.active = False
        self.graph = None
        self.state: dict = {}
        self.errored = True
        self._lock = threading.Lock()

    @classmethod
    def from_active(cls) -> "DaskDiagnostics":
        return cls()

    def __enter__(self):
        self._context = local_callbacks(None)
        callbacks = self._context.__enter__()
        (self._start, self._start_state, self._pretask, self._posttask,
         self._finish) = unpack_callbacks(callbacks)
        self.active = bool(callbacks)
        return self

    def start(self, graph: dict, order: list) -> None:
        if not self.active:
            return
        self.graph = graph
        for callback in self._start:
            callback(graph)
        self.state = {
            "cache": {}, "ready": set(), "waiting": set(order), "running": set(),
            "finished": set(), "released": set(), "waiting_data": {},
            "dependencies": {k: set(graph[k].dependencies) for k in order},
            "dependents": {},
        }
        for callback in self._start_state:
            callback(graph, self.state)

    def submitted(self, key, node, ref_or_refs) -> None:
        if not self.active:
            return
        with self._lock:
            self.state["waiting"].discard(key)
            self.state["running"].add(key)
        for callback in self._pretask:
            callback(key, self.graph, self.state)
        ref = ref_or_refs[0] if isinstance(ref_or_refs, list) else ref_or_refs
        require_client_for(ref).when_ready(ref, lambda: self._done(key))

    def skipped(self, key) -> None:
        """A key settled without a task (alias, literal, picked split)."""
        if self.active:
            with self._lock:
                self.state["waiting"].discard(key)
                self.state["finished"].add(key)

    def _done(self, key) -> None:
        with self._lock:
            self.state["running"].discard(key)
            self.state["finished"].add(key)
        for callback in self._posttask:
            callback(key, None, self.graph, self.state, 0)

    def finished(self) -> None:
        self.errored = False

    def __exit__(self, *exc_info):
        try:
            if self.active and self.graph is not None:
                for callback in self._finish:
                    callback(self.graph, self.state, self.errored)
        finally:
            self._context.__exit__(*exc_info)
