"""Warnings raised in a task or actor method reach the caller when it reads the result.

    worker: capture() around reading the arguments and running the call
        warnings.warn(...) in user code ──showwarning hook──▶ this call's records
        (category, message, filename, lineno, module), each distinct one once
    attach(value, records) ──the result is pickled as _reemit_then_return(records, value)
    reader (driver get, or a task taking it as an argument) unpickles it:
        warnings.warn_explicit(...) for each record, then the value itself

The records travel inside the result's own pickle stream, so no message or
object table changes. A task reading a warned argument re-emits its warnings
inside its own capture, so they follow the data to whoever reads the final
result, as on Dask's in-process schedulers. The reader's filters decide what
is shown (``pytest.warns``, ``-W error``, "default" once per location); the
worker records every warning ("always" below any filter user code adds).

``init(forward_warnings=False)`` makes this process drop the records it reads.
Concurrency: the capture is per thread and per asyncio task (a contextvar), so
threaded and async actors keep each call's warnings apart.
"""
from __future__ import annotations

import contextlib
import contextvars
import sys
import threading
import warnings

import cloudpickle

# Most distinct warnings kept per call: a warning in a loop is one record.
MAX_RECORDS = 100

_current: contextvars.ContextVar = contextvars.ContextVar("lightray_task_warnings",
                                                          default=None)
_install_lock = threading.Lock()
_installed = False
_forwarding = True
_registry: dict = {}   # the reader's once-per-location memory ("default" action)


def set_forwarding(enabled: bool) -> None:
    """Whether this process re-emits the warnings of results it reads."""
    global _forwarding
    _forwarding = bool(enabled)


def forwarding() -> bool:
    return _forwarding


class _Records:
    __slots__ = ("items", "seen")

    def __init__(self):
        self.items: list = []   # (category, message, filename, lineno, module)
        self.seen: set = set()

    def add(self, message, category, filename, lineno) -> None:
        text = str(message)
        key = (category, text, filename, lineno)
        if key in self.seen or len(self.items) >= MAX_RECORDS:
            return
        self.seen.add(key)
        self.items.append((_picklable_category(category), text, filename, lineno,
                           _module_of(filename)))


def _picklable_category(category):
    try:
        cloudpickle.dumps(category)
        return category
    except Exception:   # a category that cannot travel arrives as a UserWarning
        return UserWarning


_modules_by_file: dict = {}   # filename -> module name, rebuilt on a miss


def _module_of(filename: str):
    """The name of the module warning code ran in (what warnings.warn gives
    warn_explicit, and what a filter's module regex is matched against);
    None (warn_explicit then derives one from the filename) if unknown."""
    name = _modules_by_file.get(filename)
    if name is None and filename not in _modules_by_file:
        for module_name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None)
            if path:
                _modules_by_file.setdefault(path, module_name)
        name = _modules_by_file.setdefault(filename, None)
    return name


def _install() -> None:
    """Once per process: record warnings of a capturing call, show the rest."""
    global _installed
    with _install_lock:
        if _installed:
            return
        shown_before = warnings.showwarning

        def showwarning(message, category, filename, lineno, file=None, line=None):
            records = _current.get()
            if records is None:
                shown_before(message, category, filename, lineno, file, line)
            else:
                records.add(message, category, filename, lineno)

        warnings.showwarning = showwarning
        # In front of the filters the worker started with (the interpreter's
        # "ignore" for DeprecationWarning, "default" once per location: the
        # reader applies its own); any filter user code adds later goes in
        # front of this one and wins.
        warnings.filterwarnings("always")
        _installed = True


@contextlib.contextmanager
def capture():
    """Record the warnings raised in this thread or task; yields the records."""
    _install()
    records = _Records()
    token = _current.set(records)
    try:
        yield records
    finally:
        _current.reset(token)


def attach(value, records):
    """The value, or a wrapper that re-emits records where it is unpickled."""
    if records is None or not records.items:
        return value
    return _Warned(tuple(records.items), value)


class _Warned:
    __slots__ = ("records", "value")

    def __init__(self, records, value):
        self.records = records
        self.value = value

    def __reduce__(self):
        return (_reemit_then_return, (self.records, self.value))


def _reemit_then_return(records, value):
    if _forwarding:
        for category, message, filename, lineno, module in records:
            # A filter of the reader's may turn it into an error (-W error):
            # reading the result then raises it, as the warning would have.
            # (module=None would not mean "derive it": warn_explicit then
            # shows nothing, so it is left out when unknown.)
            where = {"module": module} if module is not None else {}
            warnings.warn_explicit(message, category, filename, lineno, registry=_registry,
                                   **where)
    return value
