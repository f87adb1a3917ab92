#!/usr/bin/env python
"""Dask workloads on lightray's Dask scheduler and on Dask's other schedulers.

Usage::

    python benchmarks/dask_bench.py                      # every scheduler, every case
    python benchmarks/dask_bench.py --quick              # 1 timed run, no warm-up
    python benchmarks/dask_bench.py --schedulers lightray,threads --cases graph_10k
    python benchmarks/dask_bench.py --json dask_results.json

Schedulers
----------
* ``lightray``: ``scheduler=lightray.get`` after ``lightray.init(num_cpus=2)``.
* ``threads``, ``processes``, ``sync``: Dask's local schedulers
  (``num_workers=2`` for the first two).
* ``distributed``: a ``distributed.Client`` on ``LocalCluster(n_workers=2,
  threads_per_worker=1, processes=True)``, used as ``scheduler=client``.
* ``ray``: ``ray.util.dask.ray_dask_get`` after ``ray.init(num_cpus=2)``
  (skipped when ``import ray`` fails; ``distributed`` likewise).

Cases
-----
* ``graph_10k``: a raw dict graph of 10,101 tasks: 10,000 independent
  ``(operator.add, i, 1)`` tasks, then a sum tree of width 100 (100 tasks
  that each sum 100 of them, one task that sums those 100).
* ``graph_1M`` (only when named in ``--cases``): the same shape 100 times
  wider, 1,010,001 tasks (1,000,000 adds, 10,000 sums of 100, one sum of
  those). ``benchmarks/scale.py --parts graph`` also reports the peak memory
  of the driver, the agent and the workers.
* ``array_1600``: ``x = da.ones((4000, 4000), chunks=(100, 100))``, i.e.
  1,600 chunks; ``(x + x.T).sum()``.
* ``groupby_1M``: the talk's groupby-mean on 1,000,000 rows: random integer
  columns ``age`` and ``grade`` in ``dd.from_pandas(df, npartitions=10)``;
  ``ddf.groupby("age").mean()``.
* ``set_index_1M``: ``ddf.set_index("key", shuffle_method="tasks")`` on
  1,000,000 rows (a random permutation ``key`` and a float column) in 16
  partitions; the whole sorted frame is brought back to the driver.
* ``set_index_1M_nomr``: lightray only: the same with
  ``lightray_multi_return=False``, which turns off lightray's one-task,
  many-returns execution of the shuffle's split tasks.
* ``mean_512MB``: ``da.random.random((65536, 1024), chunks=(4096, 1024))``
  (512 MiB of float64 in 16 chunks of 32 MiB), ``.mean()``.

Method
------
* Every scheduler runs in its own subprocess (this script re-invokes itself
  with ``--system NAME``), one after the other. The subprocess reports one
  JSON line per case; the parent enforces a per-case timeout and, after a hang
  or crash, records that case as an error and starts a new subprocess for the
  remaining cases.
* Starting a runtime (``lightray.init``, ``ray.init``, the LocalCluster and
  its Client) is timed once, separately, and is not part of any case.
* The input data of the DataFrame cases is made before timing; Dask
  collections are built before timing too (building them is cheap), so a
  case's time is the ``compute`` call alone.
* Each case: 1 untimed warm-up run, then the median of 3 timed runs. For a
  slow scheduler, fewer: as many as fit in 30 s at the warm-up's pace, at
  least 1 (the log and the JSON list every run). ``--quick``: no warm-up and
  1 timed run.
* Every result is checked against a reference computed with pandas/NumPy.
* The table shows seconds per case and, in parentheses, each scheduler's time
  divided by lightray's: above 1 means lightray was faster. The ``lr tasks``
  column is ``lightray.dask.last_run_stats()["tasks_submitted"]`` of
  lightray's last run of the case.
"""
import argparse
import json
import operator
import os
import statistics
import sys
import time
from functools import partial
from typing import Callable, Optional

import harness
from harness import emit, error_text, fmt, log

SCRIPT = os.path.abspath(__file__)

RESULT_TAG = "@@DASKBENCH_RESULT"
START_TAG = "@@DASKBENCH_START"
INIT_TAG = "@@DASKBENCH_INIT"

NUM_CPUS = 2
RUNS = 3  # timed runs per case after the warm-up ...
RUN_BUDGET_S = 30.0  # ... fewer (at least 1) if RUNS times the warm-up exceeds this

SCHEDULERS = ["lightray", "threads", "processes", "sync", "distributed", "ray"]
LOCAL_SCHEDULERS = ("threads", "processes", "sync")  # nothing to start
# Schedulers that need a package beyond dask itself.
NEEDS_MODULE = {"lightray": "lightray", "distributed": "distributed", "ray": "ray"}

CASES = {
    "graph_10k": "raw graph: 10,000 tasks + sum tree",
    "graph_1M": "raw graph: 1,000,000 tasks + sum tree",
    "array_1600": "(x + x.T).sum(), 1,600 chunks",
    "groupby_1M": "groupby-mean, 1M rows",
    "set_index_1M": "set_index, 1M rows, task shuffle",
    "set_index_1M_nomr": "set_index, same, lightray multi-return off",
    "mean_512MB": "mean of a 512 MiB random array",
}
LIGHTRAY_ONLY = {"set_index_1M_nomr"}
NAMED_ONLY = {"graph_1M"}   # run only when --cases names them (minutes each)

# Versions in the machine line: display name -> package
PACKAGES = {"Dask": "dask", "distributed": "distributed", "Ray": "ray",
            "pandas": "pandas", "NumPy": "numpy"}


# --------------------------------------------------------------------------
# Schedulers (run inside the worker subprocess)
# --------------------------------------------------------------------------


class Scheduler:
    """How one scheduler computes a collection or a raw graph."""

    name = ""

    def start(self) -> None:
        pass

    def compute(self, collection, **kwargs):
        import dask

        return dask.compute(collection, scheduler=self.get_fn(), **kwargs)[0]

    def get(self, dsk: dict, keys):
        return self.get_fn()(dsk, keys)

    def get_fn(self):
        raise NotImplementedError

    def stop(self) -> None:
        pass


class LightrayScheduler(Scheduler):
    name = "lightray"

    def start(self):
        import lightray

        lightray.init(num_cpus=NUM_CPUS)
        self.lightray = lightray

    def get_fn(self):
        return self.lightray.get

    def stats(self) -> dict:
        try:
            import lightray.dask as ld

            return dict(ld.last_run_stats())
        except (ImportError, AttributeError):
            return {}

    def stop(self):
        self.lightray.shutdown()


class LocalDaskScheduler(Scheduler):
    def __init__(self, name: str):
        self.name = name

    def get_fn(self):
        import dask.local
        import dask.multiprocessing
        import dask.threaded

        if self.name == "sync":
            return dask.local.get_sync
        module = dask.threaded if self.name == "threads" else dask.multiprocessing
        return partial(module.get, num_workers=NUM_CPUS)


class DistributedScheduler(Scheduler):
    name = "distributed"

    def start(self):
        import logging

        from distributed import Client, LocalCluster

        logging.getLogger("distributed").setLevel(logging.ERROR)
        self.cluster = LocalCluster(n_workers=NUM_CPUS, threads_per_worker=1,
                                    processes=True, dashboard_address=None)
        self.client = Client(self.cluster)

    def compute(self, collection, **kwargs):
        import dask

        return dask.compute(collection, scheduler=self.client, **kwargs)[0]

    def get_fn(self):
        return self.client.get

    def stop(self):
        self.client.close()
        self.cluster.close()


class RayScheduler(Scheduler):
    name = "ray"

    def start(self):
        import ray
        from ray.util.dask import ray_dask_get

        ray.init(num_cpus=NUM_CPUS, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
        self.ray, self.ray_dask_get = ray, ray_dask_get

    def get_fn(self):
        return self.ray_dask_get

    def stop(self):
        self.ray.shutdown()


def make_scheduler(name: str) -> Scheduler:
    if name == "lightray":
        return LightrayScheduler()
    if name == "distributed":
        return DistributedScheduler()
    if name == "ray":
        return RayScheduler()
    return LocalDaskScheduler(name)


# --------------------------------------------------------------------------
# Cases. Each setup function builds its inputs (untimed) and returns
# (run, check): run(scheduler) computes the result, check(result) asserts it.
# --------------------------------------------------------------------------

GRAPH_WIDTH = 10_000
TREE_FANOUT = 100


def setup_graph_10k(sched: Scheduler, width: int = GRAPH_WIDTH):
    dsk = {("x", i): (operator.add, i, 1) for i in range(width)}
    for j in range(width // TREE_FANOUT):
        dsk[("s", j)] = (sum, [("x", i) for i in range(j * TREE_FANOUT, (j + 1) * TREE_FANOUT)])
    dsk["total"] = (sum, [("s", j) for j in range(width // TREE_FANOUT)])
    expected = sum(range(1, width + 1))

    def run():
        return sched.get(dsk, "total")

    def check(result):
        assert result == expected, (result, expected)

    return run, check


def setup_graph_1M(sched: Scheduler):
    return setup_graph_10k(sched, 100 * GRAPH_WIDTH)


def setup_array_1600(sched: Scheduler):
    import dask.array as da

    x = da.ones((4000, 4000), chunks=(100, 100))
    assert x.npartitions == 1600
    y = (x + x.T).sum()

    def check(result):
        assert float(result) == 2.0 * 4000 * 4000, result

    return lambda: sched.compute(y), check


def setup_groupby_1M(sched: Scheduler):
    import dask.dataframe as dd
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.integers(0, 100, size=(1_000_000, 2)), columns=["age", "grade"])
    ddf = dd.from_pandas(df, npartitions=10)
    query = ddf.groupby("age").mean()
    expected = df.groupby("age").mean()

    def check(result):
        pd.testing.assert_frame_equal(result.sort_index(), expected)

    return lambda: sched.compute(query), check


def _set_index_inputs():
    import dask.dataframe as dd
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 1_000_000
    df = pd.DataFrame({"key": rng.permutation(n), "value": rng.random(n)})
    ddf = dd.from_pandas(df, npartitions=16)
    query = ddf.set_index("key", shuffle_method="tasks")
    expected = df.set_index("key").sort_index()

    def check(result):
        pd.testing.assert_frame_equal(result, expected)

    return query, check


def setup_set_index_1M(sched: Scheduler):
    query, check = _set_index_inputs()
    return lambda: sched.compute(query), check


def setup_set_index_1M_nomr(sched: Scheduler):
    if sched.name != "lightray":
        raise NotApplicable
    query, check = _set_index_inputs()
    return lambda: sched.compute(query, lightray_multi_return=False), check


def setup_mean_512MB(sched: Scheduler):
    import dask.array as da

    x = da.random.random((65536, 1024), chunks=(4096, 1024))
    assert x.nbytes == 512 * 2**20 and x.npartitions == 16
    query = x.mean()

    def check(result):
        assert abs(float(result) - 0.5) < 1e-3, result

    return lambda: sched.compute(query), check


SETUPS = {
    "graph_10k": setup_graph_10k,
    "graph_1M": setup_graph_1M,
    "array_1600": setup_array_1600,
    "groupby_1M": setup_groupby_1M,
    "set_index_1M": setup_set_index_1M,
    "set_index_1M_nomr": setup_set_index_1M_nomr,
    "mean_512MB": setup_mean_512MB,
}


class NotApplicable(Exception):
    """This case does not apply to this scheduler."""


# --------------------------------------------------------------------------
# Worker: ``--system NAME`` runs the cases in this process
# --------------------------------------------------------------------------


def time_case(run: Callable, check: Callable, quick: bool) -> dict:
    """Warm up once (unless quick), then time RUNS runs (fewer if slow, 1 if quick)."""
    warmup_s = None
    if not quick:
        t0 = time.perf_counter()
        check(run())
        warmup_s = time.perf_counter() - t0
    runs = 1 if quick else max(1, min(RUNS, int(RUN_BUDGET_S // warmup_s)))
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - t0)
        check(result)
        del result
    return {"value": statistics.median(times), "runs_s": times, "warmup_s": warmup_s}


def worker_main(system: str, cases: list, quick: bool) -> None:
    """Run ``cases`` on ``system`` and print one JSON result line per case."""
    emit(START_TAG, "__init__")
    sched = make_scheduler(system)
    t0 = time.perf_counter()
    try:
        sched.start()
    except Exception as exc:
        for case in cases:
            emit(RESULT_TAG, {"case": case, "error": "start failed: " + error_text(exc)})
        return
    emit(INIT_TAG, time.perf_counter() - t0)

    for case in cases:
        emit(START_TAG, case)
        result = {"case": case}
        try:
            run, check = SETUPS[case](sched)
            result.update(time_case(run, check, quick))
            if system == "lightray":
                result["stats"] = sched.stats()
        except NotApplicable:
            result["not_applicable"] = True
        except Exception as exc:  # one case failing must not stop the others
            result["error"] = error_text(exc)
        emit(RESULT_TAG, result)
    sched.stop()


# --------------------------------------------------------------------------
# Parent: spawn one worker per scheduler, collect, print
# --------------------------------------------------------------------------


def log_result(system: str, res: dict) -> None:
    if res.get("error"):
        log(f"  {system:11s} {res['case']:18s} ERROR {res['error']}")
    elif res.get("not_applicable"):
        pass
    else:
        runs = ", ".join(fmt(t) for t in res["runs_s"])
        log(f"  {system:11s} {res['case']:18s} {fmt(res['value'])} s  (runs: {runs})")


def error_result(case: str, message: str) -> dict:
    return {"case": case, "error": message}


WORKER = harness.WorkerSpec(SCRIPT, START_TAG, RESULT_TAG, error_result, log_result,
                            startup="start-up")


def run_system(system: str, cases: list, quick: bool, timeout: float) -> tuple:
    """Run all ``cases`` on one scheduler, restarting the worker after failures.

    Returns (results by case, info dict with the start-up time).
    """
    info = {}

    def on_line(tag: str, payload: str) -> None:
        if tag == INIT_TAG:
            info.setdefault("init_s", json.loads(payload))
            if system not in LOCAL_SCHEDULERS:
                log(f"  {system:11s} {'(start-up)':18s} {fmt(info['init_s'])} s")

    return harness.run_system(WORKER, system, cases, quick, timeout, on_line), info


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


def cell(res: Optional[dict], base: Optional[float]) -> str:
    """Seconds, and (ratio to lightray) when there is a lightray time."""
    if not res:
        return "-"
    if res.get("error"):
        return "ERROR"
    if res.get("not_applicable") or res.get("value") is None:
        return "n/a"
    text = fmt(res["value"])
    if base:
        ratio = res["value"] / base
        text += f" ({ratio:.2f}x)" if ratio < 10 else f" ({ratio:.0f}x)"
    return text


def render_table(systems: list, cases: list, results: dict, infos: dict) -> str:
    lr = results.get("lightray", {})
    show_tasks = any(lr.get(c, {}).get("stats", {}).get("tasks_submitted") is not None
                     for c in cases)
    header = ["case"] + systems + (["lr tasks"] if show_tasks else [])
    rows = [header]
    for case in cases:
        base = lr.get(case, {}).get("value")
        row = [CASES[case]]
        for system in systems:
            res = results.get(system, {}).get(case)
            if res is None and case in LIGHTRAY_ONLY and system != "lightray":
                res = {"not_applicable": True}
            row.append(cell(res, None if system == "lightray" else base))
        if show_tasks:
            tasks = lr.get(case, {}).get("stats", {}).get("tasks_submitted")
            row.append("-" if tasks is None else f"{tasks:,}")
        rows.append(row)
    startup = ["start-up (not in the cases)"]
    for system in systems:
        init = infos.get(system, {}).get("init_s")
        startup.append("-" if init is None or system in LOCAL_SCHEDULERS else fmt(init))
    if show_tasks:
        startup.append("")
    rows.append(startup)

    return harness.markdown_table(rows, right_aligned=range(1, len(header)))


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Dask workloads on lightray.get and on Dask's other schedulers.",
        epilog=f"cases: {', '.join(CASES)}; schedulers: {', '.join(SCHEDULERS)}",
    )
    p.add_argument("--cases", help="comma-separated subset of cases")
    p.add_argument("--schedulers", help="comma-separated subset of schedulers")
    p.add_argument("--quick", action="store_true", help="no warm-up, 1 timed run per case")
    p.add_argument("--json", metavar="PATH", help="write results as JSON")
    p.add_argument("--timeout", type=float, default=180.0,
                   help="per-case timeout in seconds (default: 180)")
    p.add_argument("--system", choices=SCHEDULERS,
                   help="internal: run the cases on one scheduler in this process "
                        "and print JSON lines")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cases = harness.parse_list(args.cases, list(CASES), "case")
    if not args.cases:
        cases = [c for c in cases if c not in NAMED_ONLY]
    if args.system:
        worker_main(args.system, cases, args.quick)
        return 0

    systems = []
    for system in harness.parse_list(args.schedulers, SCHEDULERS, "scheduler"):
        module = NEEDS_MODULE.get(system)
        if module and not harness.importable(module):
            log(f"warning: `import {module}` fails; skipping the {system} scheduler")
            continue
        systems.append(system)

    info = harness.machine_info(PACKAGES.values())
    log(f"machine: {harness.describe_machine(info, PACKAGES)}")
    results, infos, durations = {}, {}, {}
    for system in systems:
        system_cases = [c for c in cases if c not in LIGHTRAY_ONLY or system == "lightray"]
        log(f"running {system} ({'quick' if args.quick else 'full'}) ...")
        t0 = time.perf_counter()
        results[system], infos[system] = run_system(system, system_cases, args.quick,
                                                    args.timeout)
        durations[system] = time.perf_counter() - t0
        log(f"  {system} done in {durations[system]:.1f}s")

    print()
    print(render_table(systems, cases, results, infos))
    harness.print_errors(results)
    print("\nseconds per case (median); in parentheses: time / lightray's time, "
          "above 1 means lightray was faster.")
    print(f"machine: {harness.describe_machine(info, PACKAGES)}")
    print("wall time per scheduler (start-up, warm-ups, runs): "
          + ", ".join(f"{s} {d:.0f}s" for s, d in durations.items()))

    if args.json:
        harness.write_json(args.json, {"machine": info, "quick": args.quick, "cases": cases,
                                       "schedulers": systems, "startup": infos,
                                       "results": results, "wall_s": durations})
    return 0


if __name__ == "__main__":
    sys.exit(main())
