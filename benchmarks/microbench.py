#!/usr/bin/env python
"""Single-node microbenchmarks for lightray, optionally side by side with Ray.

Usage::

    python benchmarks/microbench.py                  # lightray only
    python benchmarks/microbench.py --vs ray         # lightray and Ray
    python benchmarks/microbench.py --vs ray --quick --cases tasks_sync,put_small
    python benchmarks/microbench.py --vs ray --cases actors   # the actor cases only
    python benchmarks/microbench.py --vs ray --json results.json
    python benchmarks/microbench.py --local-mode     # local mode beside normal mode

Method
------
* Every system runs in its own subprocess (this script re-invokes itself with
  ``--system NAME``), so lightray and Ray never share an interpreter, and the
  two systems run one after the other, never at the same time. Both are started
  with ``num_cpus=2``; Ray additionally gets ``include_dashboard=False,
  log_to_driver=False`` and a quiet logging level.
* The worker subprocess reports one JSON line per case on stdout. The parent
  enforces a per-case timeout; if a case hangs or crashes the worker, that case
  is recorded as an error and a new worker resumes with the remaining cases.
* ``init_first_result`` starts fresh interpreters (``python -c ...``) and
  measures, inside each, from the first line of the program (before
  ``import X``) until ``X.get(f.remote())`` returns, so it includes the import,
  ``init(num_cpus=2)``, and the first task. One untimed warm-up run, then the
  median of 3 runs (``--quick``: 1 run and no warm-up). The fresh processes
  write bytecode caches to a private temporary directory even under
  PYTHONDONTWRITEBYTECODE, as an installed package has them.
* Throughput cases (``tasks_sync``, ``tasks_async``, ``put_small``,
  ``get_small``, ``wait_1000`` and the actor cases) warm up briefly, then
  repeat the operation for about 2 s (``--quick``: 0.5 s), split into 3 equal
  trials. The reported value is the median rate of the trials.
* ``nested_tasks_async``: one task that submits 1,000 no-op tasks from its
  worker and gets them all; the driver gets that task, repeated (counts the
  1,000 inner tasks). ``tasks_ref_args_async``: like ``tasks_async``, but
  each task takes as argument the ref of one small ``put`` object.
* ``put_100MB`` puts a 100 MB (10**8 bytes) float64 array from
  ``np.random``, created once, and drops the ref after each put. The value is
  the median GB/s (1 GB = 10**9 bytes); the best is kept in the JSON output.
* ``get_100MB`` gets that array through one ref kept alive the whole time and
  reports the median latency in microseconds. Ray returns a zero-copy
  read-only view of its shared-memory store, so this mostly measures whether
  a system copies the data.
* ``wait_1000`` copies Ray's ``ray_perf`` "single client wait 1k refs": submit
  1,000 no-op tasks, then call ``wait(not_ready, num_returns=1)`` until every
  ref is ready. The timed region includes the submission. Reported as refs/s.
* The actor cases follow Ray's ``ray_perf`` definitions, scaled to 2 CPUs.
  The target actor's method ``small_value`` returns ``b"ok"``; the actor is
  made with ``num_cpus=0`` like ``ray_perf``'s ``Actor`` (the async actor with
  the defaults, like its ``AsyncActor``). ``actor_calls_sync``: one
  ``get(a.small_value.remote())`` at a time. ``actor_calls_async``: submit
  1,000 calls, then one ``get`` of all. ``actor_calls_concurrent``: the same on
  an actor made with ``.options(max_concurrency=16)`` (a threaded actor).
  ``async_actor_calls_async``: the same on an actor whose methods are
  ``async def``. ``n_n_actor_calls_async``: 2 tasks, each submitting 1,000
  calls spread over 2 target actors in turn and then getting them; the driver
  waits for both tasks (``ray_perf``'s "n:n actor calls async" with n = 2).
  All report calls/s and are timed like the throughput cases. Each case
  creates its own actors, waits until they answer, makes 20 untimed calls on
  each (plus one small round of the caller tasks for n:n), then, after
  measuring, kills them with ``kill`` and waits until their processes have
  exited, so one case's actors never run during the next.
  ``--cases actors`` selects them all (``--cases core`` the others).

``--local-mode`` runs the cases once more with ``init(local_mode=True)``
(system ``lightray-local``: tasks in threads of the driver, no agent) and adds
its column and the ratio local / normal; without ``--cases`` it runs
``tasks_sync``, ``tasks_async`` and ``actor_calls_async``. Killed actors of
local mode have no process to wait for.

The ratio column is always lightray / Ray for the case's own metric. For
throughputs, higher is better. For times, lower is better. The "better"
column states which system wins and by how much.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import harness
from harness import child_env, emit, error_text, fmt, log, tail

SCRIPT = os.path.abspath(__file__)

RESULT_TAG = "@@MICROBENCH_RESULT"
START_TAG = "@@MICROBENCH_START"
FIRST_RESULT_TAG = "@@MICROBENCH_FIRST_RESULT"

NUM_CPUS = 2
BIG_BYTES = 100 * 10**6  # 100 MB
ASYNC_BATCH = 1000
WAIT_REFS = 1000
CONCURRENT_ACTOR_THREADS = 16  # max_concurrency of actor_calls_concurrent
NN_CALLERS = 2  # n:n actor calls: caller tasks ...
NN_TARGETS = 2  # ... each calling these actors in turn ...
NN_CALLS_PER_CALLER = 1000  # ... this many times per step
ACTOR_WARMUP_CALLS = 20  # calls on each new actor before the timed part
ACTOR_EXIT_TIMEOUT = 10.0  # seconds to wait for killed actors' processes to end

SYSTEMS = {
    "lightray": {"module": "lightray", "init_kwargs": {"num_cpus": NUM_CPUS}},
    "lightray-local": {"module": "lightray",
                       "init_kwargs": {"num_cpus": NUM_CPUS, "local_mode": True}},
    "ray": {
        "module": "ray",
        "init_kwargs": {
            "num_cpus": NUM_CPUS,
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": "ERROR",
        },
    },
}

# name -> (unit, higher_is_better)
CASES = {
    "init_first_result": ("s", False),
    "tasks_sync": ("tasks/s", True),
    "tasks_async": ("tasks/s", True),
    "nested_tasks_async": ("tasks/s", True),
    "tasks_ref_args_async": ("tasks/s", True),
    "put_small": ("ops/s", True),
    "get_small": ("ops/s", True),
    "put_100MB": ("GB/s", True),
    "get_100MB": ("us", False),
    "wait_1000": ("refs/s", True),
    "actor_calls_sync": ("calls/s", True),
    "actor_calls_async": ("calls/s", True),
    "actor_calls_concurrent": ("calls/s", True),
    "async_actor_calls_async": ("calls/s", True),
    "n_n_actor_calls_async": ("calls/s", True),
}

ACTOR_CASES = [c for c in CASES if "actor" in c]
LOCAL_MODE_CASES = ["tasks_sync", "tasks_async", "actor_calls_async"]
# --cases accepts these group names too, e.g. ``--cases actors``
CASE_GROUPS = {
    "actors": ACTOR_CASES,
    "core": [c for c in CASES if c not in ACTOR_CASES],
}

# Versions in the machine line: display name -> package
PACKAGES = {"Ray": "ray", "NumPy": "numpy"}


@dataclass
class Settings:
    duration: float  # seconds of timed work per throughput case
    warmup: float  # seconds of untimed warm-up per throughput case
    trials: int  # the timed duration is split into this many trials
    fresh_runs: int  # timed fresh-process runs for init_first_result
    fresh_warmups: int  # untimed fresh-process runs before those
    big_reps: int  # max repetitions for the 100 MB cases
    big_budget: float  # ... or stop after this many seconds

    @classmethod
    def for_mode(cls, quick: bool) -> "Settings":
        if quick:
            return cls(0.5, 0.1, 3, 1, 0, 5, 1.0)
        return cls(2.0, 0.3, 3, 3, 1, 10, 3.0)


@dataclass
class Result:
    case: str
    unit: str
    higher_is_better: bool
    value: Optional[float] = None
    error: Optional[str] = None
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------
# Measurement helpers (run inside the worker subprocess)
# --------------------------------------------------------------------------


def run_for(step: Callable[[], int], seconds: float) -> tuple:
    """Call ``step`` (returns ops done) repeatedly, at least once, for ``seconds``.

    Returns (ops, elapsed_seconds).
    """
    ops = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        ops += step()
        now = time.perf_counter()
        if now >= deadline:
            return ops, now - start


def measure_rate(step: Callable[[], int], cfg: Settings) -> tuple:
    """Warm up, then return (median rate, per-trial rates) in ops/s."""
    run_for(step, cfg.warmup)
    rates = []
    for _ in range(cfg.trials):
        ops, elapsed = run_for(step, cfg.duration / cfg.trials)
        rates.append(ops / elapsed)
    return statistics.median(rates), rates


def repeat_timed(fn: Callable[[], None], cfg: Settings) -> list:
    """Run ``fn`` once untimed, then up to ``big_reps`` timed runs within
    ``big_budget`` seconds (at least 3). Returns durations in seconds."""
    fn()
    times = []
    budget_end = time.perf_counter() + cfg.big_budget
    while len(times) < cfg.big_reps:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 3 and time.perf_counter() > budget_end:
            break
    return times


# --------------------------------------------------------------------------
# Cases. Each takes (system module, remote no-op function, Settings) and
# returns (value, extra dict).
# --------------------------------------------------------------------------


def _noop():
    return None


def case_tasks_sync(rt, noop, cfg):
    def step():
        rt.get(noop.remote())
        return 1

    value, rates = measure_rate(step, cfg)
    return value, {"trial_rates": rates}


def case_tasks_async(rt, noop, cfg):
    def step():
        rt.get([noop.remote() for _ in range(ASYNC_BATCH)])
        return ASYNC_BATCH

    value, rates = measure_rate(step, cfg)
    return value, {"trial_rates": rates, "batch": ASYNC_BATCH}


def _submit_and_get(module: str, n: int) -> int:
    """Outer task of nested_tasks_async: submits ``n`` no-op tasks from inside
    a worker, then gets them all."""
    import importlib

    rt = importlib.import_module(module)
    inner = rt.remote(_noop)
    rt.get([inner.remote() for _ in range(n)])
    return n


def _take(value):
    return None


def case_nested_tasks_async(rt, noop, cfg):
    outer = rt.remote(_submit_and_get)
    module = rt.__name__

    def step():
        return rt.get(outer.remote(module, ASYNC_BATCH))

    value, rates = measure_rate(step, cfg)
    return value, {"trial_rates": rates, "batch": ASYNC_BATCH}


def case_tasks_ref_args_async(rt, noop, cfg):
    take = rt.remote(_take)
    arg = rt.put(0)   # one small object, passed by ref to every task

    def step():
        rt.get([take.remote(arg) for _ in range(ASYNC_BATCH)])
        return ASYNC_BATCH

    value, rates = measure_rate(step, cfg)
    return value, {"trial_rates": rates, "batch": ASYNC_BATCH}


def case_put_small(rt, noop, cfg):
    def step():
        for _ in range(100):
            rt.put(0)
        return 100

    value, rates = measure_rate(step, cfg)
    return value, {"trial_rates": rates}


def case_get_small(rt, noop, cfg):
    ref = rt.put(0)

    def step():
        for _ in range(100):
            rt.get(ref)
        return 100

    value, rates = measure_rate(step, cfg)
    return value, {"trial_rates": rates}


def make_big_array():
    import numpy as np

    return np.random.default_rng(0).random(BIG_BYTES // 8)


def case_put_100MB(rt, noop, cfg):
    arr = make_big_array()

    def put_and_drop():
        ref = rt.put(arr)
        del ref

    times = repeat_timed(put_and_drop, cfg)
    rates = [arr.nbytes / t / 1e9 for t in times]
    return statistics.median(rates), {"best": max(rates), "rates": rates}


def case_get_100MB(rt, noop, cfg):
    arr = make_big_array()
    ref = rt.put(arr)

    def get_and_drop():
        out = rt.get(ref)
        del out

    times_us = [t * 1e6 for t in repeat_timed(get_and_drop, cfg)]
    return statistics.median(times_us), {"best": min(times_us), "samples_us": times_us}


def case_wait_1000(rt, noop, cfg):
    def step():
        not_ready = [noop.remote() for _ in range(WAIT_REFS)]
        while not_ready:
            _ready, not_ready = rt.wait(not_ready, num_returns=1)
        return WAIT_REFS

    value, rates = measure_rate(step, cfg)
    return value, {"trial_rates": rates}


# --------------------------------------------------------------------------
# Actor cases, after Ray's ray/_private/ray_perf.py ("1:1 actor calls sync",
# "1:1 actor calls async", "1:1 actor calls concurrent", "1:1 async-actor calls
# async", "n:n actor calls async"). Each case creates its own actors, makes a
# few calls on each, measures like the task cases, then kills its actors and
# waits until their processes have ended, so no case's actors linger into the
# next.
# --------------------------------------------------------------------------


class _Target:
    """ray_perf's ``Actor`` (made remote with ``num_cpus=0`` there, and here)."""

    def small_value(self):
        return b"ok"

    def pid(self):
        return os.getpid()


class _AsyncTarget:
    """ray_perf's ``AsyncActor``: every method is ``async def``."""

    async def small_value(self):
        return b"ok"

    async def pid(self):
        return os.getpid()


def _call_in_turn(module: str, targets: list, n: int) -> int:
    """Caller task of n_n_actor_calls_async (ray_perf's ``work``): ``n`` calls
    spread over ``targets`` in turn, all submitted before one ``get``."""
    import importlib

    rt = importlib.import_module(module)
    rt.get([targets[i % len(targets)].small_value.remote() for i in range(n)])
    return n


def _process_gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def retire_actors(rt, handles: list, pids: list) -> Optional[float]:
    """Kill the actors and wait for their processes to end.

    Returns the seconds that took, or None if some process was still running
    after ``ACTOR_EXIT_TIMEOUT`` (also logged on stderr).
    """
    t0 = time.perf_counter()
    for handle in handles:
        rt.kill(handle)
    pids = [pid for pid in pids if pid != os.getpid()]   # local mode: actors are threads
    deadline = t0 + ACTOR_EXIT_TIMEOUT
    while not all(_process_gone(pid) for pid in pids):
        if time.perf_counter() > deadline:
            alive = [pid for pid in pids if not _process_gone(pid)]
            log(f"  warning: actor processes {alive} still running "
                f"{ACTOR_EXIT_TIMEOUT:.0f}s after kill")
            return None
        time.sleep(0.01)
    return time.perf_counter() - t0


def measure_actor_rate(rt, handles: list, step: Callable[[], int], cfg: Settings,
                       warmup: Optional[Callable[[], None]] = None, **extra) -> tuple:
    """Warm the ``handles`` up (then run ``warmup``), ``measure_rate(step)``,
    then retire them. The actors are killed even when the measurement fails.
    """
    try:
        pids = rt.get([h.pid.remote() for h in handles])  # every actor is up
    except BaseException:
        for handle in handles:
            rt.kill(handle)
        raise
    try:
        for _ in range(ACTOR_WARMUP_CALLS):
            rt.get([h.small_value.remote() for h in handles])
        if warmup is not None:
            warmup()
        value, rates = measure_rate(step, cfg)
    finally:
        kill_s = retire_actors(rt, handles, pids)
    return value, {"trial_rates": rates, "actors": len(handles),
                   "kill_and_exit_s": kill_s, **extra}


def _target_class(rt, **options):
    return rt.remote(num_cpus=0, **options)(_Target)


def case_actor_calls_sync(rt, noop, cfg):
    actor = _target_class(rt).remote()

    def step():
        rt.get(actor.small_value.remote())
        return 1

    return measure_actor_rate(rt, [actor], step, cfg)


def _batch_step(rt, actor):
    def step():
        rt.get([actor.small_value.remote() for _ in range(ASYNC_BATCH)])
        return ASYNC_BATCH
    return step


def case_actor_calls_async(rt, noop, cfg):
    actor = _target_class(rt).remote()
    return measure_actor_rate(rt, [actor], _batch_step(rt, actor), cfg,
                              batch=ASYNC_BATCH)


def case_actor_calls_concurrent(rt, noop, cfg):
    actor = _target_class(rt).options(max_concurrency=CONCURRENT_ACTOR_THREADS).remote()
    return measure_actor_rate(rt, [actor], _batch_step(rt, actor), cfg,
                              batch=ASYNC_BATCH, max_concurrency=CONCURRENT_ACTOR_THREADS)


def case_async_actor_calls_async(rt, noop, cfg):
    actor = rt.remote(_AsyncTarget).remote()
    return measure_actor_rate(rt, [actor], _batch_step(rt, actor), cfg,
                              batch=ASYNC_BATCH)


def case_n_n_actor_calls_async(rt, noop, cfg):
    targets = [_target_class(rt).remote() for _ in range(NN_TARGETS)]
    caller = rt.remote(_call_in_turn)
    module = rt.__name__

    def step():
        done = rt.get([caller.remote(module, targets, NN_CALLS_PER_CALLER)
                       for _ in range(NN_CALLERS)])
        return sum(done)

    def warm_callers():  # the caller tasks' first run imports, leases, ...
        rt.get([caller.remote(module, targets, 10) for _ in range(NN_CALLERS)])

    return measure_actor_rate(rt, targets, step, cfg, warmup=warm_callers,
                              callers=NN_CALLERS,
                              calls_per_caller=NN_CALLS_PER_CALLER)


IN_PROCESS_CASES = {
    "tasks_sync": case_tasks_sync,
    "tasks_async": case_tasks_async,
    "nested_tasks_async": case_nested_tasks_async,
    "tasks_ref_args_async": case_tasks_ref_args_async,
    "put_small": case_put_small,
    "get_small": case_get_small,
    "put_100MB": case_put_100MB,
    "get_100MB": case_get_100MB,
    "wait_1000": case_wait_1000,
    "actor_calls_sync": case_actor_calls_sync,
    "actor_calls_async": case_actor_calls_async,
    "actor_calls_concurrent": case_actor_calls_concurrent,
    "async_actor_calls_async": case_async_actor_calls_async,
    "n_n_actor_calls_async": case_n_n_actor_calls_async,
}


# --------------------------------------------------------------------------
# init_first_result: fresh interpreters
# --------------------------------------------------------------------------


def first_result_program(system: str) -> str:
    spec = SYSTEMS[system]
    mod, kwargs = spec["module"], spec["init_kwargs"]
    return "\n".join(
        [
            "import time; _t0 = time.perf_counter()",
            f"import {mod} as _rt",
            f"_rt.init(**{kwargs!r})",
            "@_rt.remote",
            "def f():",
            "    return 1",
            "assert _rt.get(f.remote()) == 1",
            "_elapsed = time.perf_counter() - _t0",
            f"print({FIRST_RESULT_TAG!r}, _elapsed, flush=True)",
            "_rt.shutdown()",
        ]
    )


# Bytecode caches for the fresh processes: an installed package has its .pyc
# files (pip compiles them), but an environment with PYTHONDONTWRITEBYTECODE
# (or a read-only checkout) would compile every module of lightray on every
# start, and the case would measure the compiler instead of the start-up.
# The warm-up run fills this private cache; nothing is written to the tree.
_BYTECODE_CACHE = os.path.join(tempfile.gettempdir(), f"lightray-bench-pyc-{os.getuid()}")


def fresh_first_result(system: str, timeout: float) -> tuple:
    """One fresh-process run. Returns (in-process seconds, wall seconds)."""
    env = child_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = _BYTECODE_CACHE
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", first_result_program(system)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    wall = time.perf_counter() - t0
    for line in proc.stdout.splitlines():
        if line.startswith(FIRST_RESULT_TAG):
            if proc.returncode != 0:
                break
            return float(line.split()[1]), wall
    raise RuntimeError(
        f"fresh process exited with {proc.returncode}: {tail(proc.stderr)}"
    )


def case_init_first_result(system: str, cfg: Settings):
    for _ in range(cfg.fresh_warmups):
        fresh_first_result(system, timeout=60)
    runs = [fresh_first_result(system, timeout=60) for _ in range(cfg.fresh_runs)]
    inner = [r[0] for r in runs]
    return statistics.median(inner), {
        "runs_s": inner,
        "process_wall_s": [r[1] for r in runs],
    }


# --------------------------------------------------------------------------
# Worker: ``--system NAME`` runs the cases in this process
# --------------------------------------------------------------------------


def run_case(case: str, fn: Callable[[], tuple]) -> Result:
    unit, higher = CASES[case]
    result = Result(case, unit, higher)
    try:
        result.value, result.extra = fn()
    except Exception as exc:  # one case failing must not stop the others
        result.error = error_text(exc)
    return result


def worker_main(system: str, cases: list, cfg: Settings) -> None:
    """Run ``cases`` for ``system`` and print one JSON result line per case."""
    if "init_first_result" in cases:  # before this process starts a runtime
        emit(START_TAG, "init_first_result")
        emit(RESULT_TAG, asdict(run_case(
            "init_first_result", lambda: case_init_first_result(system, cfg))))
    cases = [c for c in cases if c in IN_PROCESS_CASES]
    if not cases:
        return

    emit(START_TAG, "__init__")
    try:
        import importlib

        rt = importlib.import_module(SYSTEMS[system]["module"])
        rt.init(**SYSTEMS[system]["init_kwargs"])
        noop = rt.remote(_noop)
        rt.get(noop.remote())
    except Exception as exc:
        for case in cases:
            unit, higher = CASES[case]
            emit(RESULT_TAG, asdict(Result(
                case, unit, higher, error="init failed: " + error_text(exc))))
        return

    for case in cases:
        emit(START_TAG, case)
        emit(RESULT_TAG, asdict(run_case(
            case, lambda: IN_PROCESS_CASES[case](rt, noop, cfg))))
    rt.shutdown()


# --------------------------------------------------------------------------
# Parent: spawn one worker per system, collect, print
# --------------------------------------------------------------------------


def error_result(case: str, message: str) -> dict:
    unit, higher = CASES[case]
    return asdict(Result(case, unit, higher, error=message))


def log_result(system: str, res: dict) -> None:
    if res["error"]:
        log(f"  {system:9s} {res['case']:23s} ERROR {res['error']}")
    else:
        log(f"  {system:9s} {res['case']:23s} {fmt(res['value'])} {res['unit']}")


WORKER = harness.WorkerSpec(SCRIPT, START_TAG, RESULT_TAG, error_result, log_result)


def run_system(system: str, cases: list, quick: bool, timeout: float) -> dict:
    """Run all ``cases`` for one system, restarting the worker after failures."""
    return harness.run_system(WORKER, system, cases, quick, timeout)


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


def verdict(ratio: float, higher_is_better: bool) -> str:
    """Turn a lightray/ray ratio into e.g. 'ray 3.1x faster'."""
    speedup = ratio if higher_is_better else 1 / ratio
    if speedup >= 1:
        return f"lightray {speedup:.2f}x faster"
    return f"ray {1 / speedup:.2f}x faster"


def table_rows(cases: list, results: dict) -> list:
    lr = results.get("lightray", {})
    ray = results.get("ray")
    local = results.get("lightray-local")
    rows = []
    for case in cases:
        unit, higher = CASES[case]
        a = lr.get(case, {})
        row = [case, unit + (" ↑" if higher else " ↓"), cell(a)]
        if local is not None:
            c = local.get(case, {})
            ratio = "-"
            if a.get("value") and c.get("value"):
                ratio = f"{c['value'] / a['value']:.3g}"
            row += [cell(c), ratio]
        if ray is not None:
            b = ray.get(case, {})
            ratio = better = "-"
            if a.get("value") and b.get("value"):
                r = a["value"] / b["value"]
                ratio, better = f"{r:.3g}", verdict(r, higher)
            row += [cell(b), ratio, better]
        rows.append(row)
    return rows


def cell(res: dict) -> str:
    if res.get("error"):
        return "ERROR"
    return fmt(res.get("value"))


def render_table(cases: list, results: dict) -> str:
    header = ["case", "unit", "lightray"]
    if "lightray-local" in results:
        header += ["local mode", "ratio local/normal"]
    if "ray" in results:
        header += ["ray", "ratio lr/ray", "better"]
    return harness.markdown_table([header] + table_rows(cases, results),
                                  right_aligned=set(range(2, len(header))))


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="lightray microbenchmarks (optionally vs Ray).",
        epilog="cases: " + ", ".join(CASES) + "; groups for --cases: "
               + ", ".join(f"{g} ({', '.join(cs)})" for g, cs in CASE_GROUPS.items()),
    )
    p.add_argument("--vs", choices=["ray"], help="also run Ray for comparison")
    p.add_argument("--cases", help="comma-separated subset of cases and groups, "
                                   "e.g. tasks_sync,put_small or actors")
    p.add_argument("--quick", action="store_true", help="shorter durations")
    p.add_argument("--local-mode", action="store_true",
                   help="also run lightray in local mode (init(local_mode=True)); default "
                        "cases: " + ", ".join(LOCAL_MODE_CASES))
    p.add_argument("--json", metavar="PATH", help="write results as JSON")
    p.add_argument("--timeout", type=float, default=90.0,
                   help="per-case timeout in seconds (default: 90)")
    p.add_argument("--system", choices=list(SYSTEMS),
                   help="internal: run the cases for one system in this process "
                        "and print JSON lines")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.local_mode and not args.cases:
        args.cases = ",".join(LOCAL_MODE_CASES)
    cases = harness.parse_list(args.cases, list(CASES), "case", CASE_GROUPS)
    if args.system:
        worker_main(args.system, cases, Settings.for_mode(args.quick))
        return 0

    systems = harness.with_ray_if_asked(
        ["lightray"] + (["lightray-local"] if args.local_mode else []), args.vs)

    info = harness.machine_info(PACKAGES.values())
    log(f"machine: {harness.describe_machine(info, PACKAGES)}")
    results = {}
    for system in systems:
        log(f"running {system} ({'quick' if args.quick else 'full'}) ...")
        t0 = time.perf_counter()
        results[system] = run_system(system, cases, args.quick, args.timeout)
        log(f"  {system} done in {time.perf_counter() - t0:.1f}s")

    print()
    print(render_table(cases, results))
    harness.print_errors(results)
    print(f"\n↑ higher is better, ↓ lower is better; machine: {harness.describe_machine(info, PACKAGES)}")

    if args.json:
        harness.write_json(args.json, {"machine": info, "quick": args.quick, "cases": cases,
                                       "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
