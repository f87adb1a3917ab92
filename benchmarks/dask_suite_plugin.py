"""pytest plugin for benchmarks/dask_suite.py: Dask's own tests on one chosen scheduler.

Loaded with ``-p dask_suite_plugin`` (benchmarks/ on PYTHONPATH) and told the
mode by LIGHTRAY_DASK_SUITE_MODE:

    lightray    lightray.init(num_cpus=LIGHTRAY_DASK_SUITE_CPUS); scheduler lightray.get
    local       lightray.init(local_mode=True, copy_values=False); lightray.get
    processes   Dask's multiprocessing scheduler (one process pool for the session)
    sync        Dask's synchronous scheduler

Every computation whose scheduler dask.base.get_scheduler resolves to one of
Dask's local schedulers (threads, sync, processes: named, configured, or a
collection's default) goes to the mode's scheduler instead. A test that calls
a scheduler function directly (dask.threaded.get(dsk, keys)) is untouched, in
every mode alike.
"""
from __future__ import annotations

import functools
import os

import dask.base
import dask.local
import dask.multiprocessing
import dask.threaded

MODES = ("lightray", "local", "processes", "sync")


def _dask_local_schedulers() -> tuple:
    return (dask.threaded.get, dask.local.get_sync, dask.multiprocessing.get)


def _target(mode: str):
    """lightray.get, or Dask's sync scheduler (processes has its own, below)."""
    if mode in ("lightray", "local"):
        import lightray
        return lightray.get
    return dask.local.get_sync


def _route(original, target):
    local = _dask_local_schedulers()

    @functools.wraps(original)
    def get_scheduler(*args, **kwargs):
        schedule = original(*args, **kwargs)
        # == as well as is: lightray's guard wraps Dask's schedulers in an
        # object comparing equal to the one it wraps.
        if any(schedule is s or schedule == s for s in local):
            return target
        return schedule

    return get_scheduler


def pytest_configure(config):
    mode = os.environ.get("LIGHTRAY_DASK_SUITE_MODE", "")
    if mode not in MODES:
        raise RuntimeError(f"LIGHTRAY_DASK_SUITE_MODE must be one of {MODES}, got {mode!r}")
    if mode == "lightray":
        import lightray
        lightray.init(num_cpus=int(os.environ.get("LIGHTRAY_DASK_SUITE_CPUS", "2")))
    elif mode == "local":
        import lightray
        lightray.init(local_mode=True, copy_values=False)
    elif mode == "processes":
        # One pool for the session: Dask's default is a fresh spawned pool per
        # compute, which costs seconds each. Values still cross processes.
        import concurrent.futures
        import multiprocessing
        context = multiprocessing.get_context(dask.config.get("multiprocessing.context", "spawn"))
        # (Passed to each call, not put in dask.config: tests deep-copy the config.)
        pool = config._lightray_suite_pool = concurrent.futures.ProcessPoolExecutor(
            int(os.environ.get("LIGHTRAY_DASK_SUITE_CPUS", "2")), mp_context=context)

        def processes_get(dsk, keys, **kwargs):
            kwargs.setdefault("pool", pool)
            return dask.multiprocessing.get(dsk, keys, **kwargs)

        dask.base.get_scheduler = _route(dask.base.get_scheduler, processes_get)
    if mode != "processes":
        dask.base.get_scheduler = _route(dask.base.get_scheduler, _target(mode))
    config._lightray_suite_mode = mode


def pytest_unconfigure(config):
    if getattr(config, "_lightray_suite_mode", None) in ("lightray", "local"):
        import lightray
        lightray.shutdown()
    pool = getattr(config, "_lightray_suite_pool", None)
    if pool is not None:
        pool.shutdown(cancel_futures=True)


def pytest_report_header(config):
    return (f"dask {dask.__version__}; Dask's local schedulers routed to: "
            f"{os.environ.get('LIGHTRAY_DASK_SUITE_MODE')}")
