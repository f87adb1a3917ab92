#!/usr/bin/env python
"""Single-node microbenchmarks for lightray, optionally side by side with Ray.

Usage::

    python benchmarks/microbench.py                  # lightray only
    python benchmarks/microbench.py --vs ray         # lightray and Ray
    python benchmarks/microbench.py --vs ray --quick --cases tasks_sync,put_small
    python benchmarks/microbench.py --vs ray --json results.json

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
  median of 3 runs (``--quick``: 1 run and no warm-up).
* Throughput cases (``tasks_sync``, ``tasks_async``, ``put_small``,
  ``get_small``, ``wait_1000``) warm up briefly, then repeat the operation
  for about 2 s (``--quick``: 0.5 s), split into 3 equal trials. The reported
  value is the median rate of the trials.
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

The ratio column is always lightray / Ray for the case's own metric. For
throughputs, higher is better. For times, lower is better. The "better"
column states which system wins and by how much.
"""
import argparse
import json
import os
import platform
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

SCRIPT = os.path.abspath(__file__)
REPO_ROOT = os.path.dirname(os.path.dirname(SCRIPT))

RESULT_TAG = "@@MICROBENCH_RESULT"
START_TAG = "@@MICROBENCH_START"
FIRST_RESULT_TAG = "@@MICROBENCH_FIRST_RESULT"

NUM_CPUS = 2
BIG_BYTES = 100 * 10**6  # 100 MB
ASYNC_BATCH = 1000
WAIT_REFS = 1000

SYSTEMS = {
    "lightray": {"module": "lightray", "init_kwargs": {"num_cpus": NUM_CPUS}},
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
    "put_small": ("ops/s", True),
    "get_small": ("ops/s", True),
    "put_100MB": ("GB/s", True),
    "get_100MB": ("us", False),
    "wait_1000": ("refs/s", True),
}


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


def child_env() -> dict:
    """Environment for subprocesses: repo importable, Ray quiet."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p
    )
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


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


IN_PROCESS_CASES = {
    "tasks_sync": case_tasks_sync,
    "tasks_async": case_tasks_async,
    "put_small": case_put_small,
    "get_small": case_get_small,
    "put_100MB": case_put_100MB,
    "get_100MB": case_get_100MB,
    "wait_1000": case_wait_1000,
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


def fresh_first_result(system: str, timeout: float) -> tuple:
    """One fresh-process run. Returns (in-process seconds, wall seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", first_result_program(system)],
        capture_output=True,
        text=True,
        env=child_env(),
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


def tail(text: str, lines: int = 6) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


def emit(tag: str, payload) -> None:
    sys.stdout.write(f"{tag} {json.dumps(payload)}\n")
    sys.stdout.flush()


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


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


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def error_result(case: str, message: str) -> dict:
    unit, higher = CASES[case]
    return asdict(Result(case, unit, higher, error=message))


def spawn_worker(system: str, cases: list, quick: bool, stderr_file):
    cmd = [sys.executable, SCRIPT, "--system", system, "--cases", ",".join(cases)]
    if quick:
        cmd.append("--quick")
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=stderr_file,
        text=True,
        env=child_env(),
        start_new_session=True,  # so a hung worker can be killed with its children
    )
    lines = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines


def kill_worker(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def collect_from_worker(system, cases, quick, timeout, results) -> None:
    """Run one worker over ``cases`` and store each case result in ``results``.

    Stops at the first hang or crash. That case, or every remaining case if
    the hang happened during init, is recorded as an error.
    """
    with tempfile.TemporaryFile("w+") as stderr_file:
        proc, lines = spawn_worker(system, cases, quick, stderr_file)
        current, deadline = None, time.monotonic() + timeout
        failure = None
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                kill_worker(proc)
                failure = f"timed out after {timeout:.0f}s"
                break
            if line is None:  # EOF: worker exited
                code = proc.wait()
                if code != 0 or any(c not in results for c in cases):
                    failure = f"worker exited with code {code}"
                break
            tag, _, payload = line.rstrip("\n").partition(" ")
            if tag == START_TAG:
                current, deadline = json.loads(payload), time.monotonic() + timeout
            elif tag == RESULT_TAG:
                res = json.loads(payload)
                results[res["case"]] = res
                log_result(system, res)

        if failure is None:
            return
        stderr_file.seek(0)
        detail = tail(stderr_file.read())
        message = f"{failure} (stderr: {detail})" if detail else failure
        if current in (None, "__init__"):
            pending = [c for c in cases if c not in results]
            message = f"during startup: {message}"
        else:
            pending = [current] if current not in results else []
        if not pending:
            log(f"  {system}: worker {message} after finishing {current}")
        for case in pending:
            results[case] = error_result(case, message)
            log_result(system, results[case])


def run_system(system: str, cases: list, quick: bool, timeout: float) -> dict:
    """Run all ``cases`` for one system, restarting the worker after failures."""
    results = {}
    while True:
        remaining = [c for c in cases if c not in results]
        if not remaining:
            return results
        collect_from_worker(system, remaining, quick, timeout, results)
        if all(c not in results for c in remaining):  # no progress: give up
            for case in remaining:
                results[case] = error_result(case, "worker made no progress")


def log_result(system: str, res: dict) -> None:
    if res["error"]:
        log(f"  {system:9s} {res['case']:18s} ERROR {res['error']}")
    else:
        log(f"  {system:9s} {res['case']:18s} {fmt(res['value'])} {res['unit']}")


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


def fmt(value: Optional[float]) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if value >= 0.01 else f"{value:.2g}"


def verdict(ratio: float, higher_is_better: bool) -> str:
    """Turn a lightray/ray ratio into e.g. 'ray 3.1x faster'."""
    speedup = ratio if higher_is_better else 1 / ratio
    if speedup >= 1:
        return f"lightray {speedup:.2f}x faster"
    return f"ray {1 / speedup:.2f}x faster"


def table_rows(cases: list, results: dict) -> list:
    lr = results.get("lightray", {})
    ray = results.get("ray")
    rows = []
    for case in cases:
        unit, higher = CASES[case]
        a = lr.get(case, {})
        row = [case, unit + (" ↑" if higher else " ↓"), cell(a)]
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
    if "ray" in results:
        header += ["ray", "ratio lr/ray", "better"]
    rows = [header] + table_rows(cases, results)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    numeric = {2, 3, 4}

    def line(row):
        return "| " + " | ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths))
        ) + " |"

    sep = "|" + "|".join(
        "-" * (w + 1) + ":" if i in numeric else "-" * (w + 2)
        for i, w in enumerate(widths)
    ) + "|"
    return "\n".join([line(rows[0]), sep] + [line(r) for r in rows[1:]])


def render_errors(results: dict) -> str:
    out = []
    for system, by_case in results.items():
        for case, res in by_case.items():
            if res.get("error"):
                out.append(f"- {system} {case}: {res['error']}")
    return "\n".join(out)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return "n/a"


def machine_info() -> dict:
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "ray_version": package_version("ray"),
        "numpy_version": package_version("numpy"),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


def describe_machine(info: dict) -> str:
    return (
        f"{info['nproc']} CPUs ({info['cpu_model']}), Python {info['python']}, "
        f"Ray {info['ray_version']}, NumPy {info['numpy_version']}, "
        f"{info['platform']}, {info['date_utc']}"
    )


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def parse_cases(text: Optional[str]) -> list:
    if not text:
        return list(CASES)
    chosen = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in CASES]
    if unknown:
        raise SystemExit(f"unknown case(s): {', '.join(unknown)}; "
                         f"choose from {', '.join(CASES)}")
    return [c for c in CASES if c in chosen]  # canonical order


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="lightray microbenchmarks (optionally vs Ray).",
        epilog="cases: " + ", ".join(CASES),
    )
    p.add_argument("--vs", choices=["ray"], help="also run Ray for comparison")
    p.add_argument("--cases", help="comma-separated subset of cases")
    p.add_argument("--quick", action="store_true", help="shorter durations")
    p.add_argument("--json", metavar="PATH", help="write results as JSON")
    p.add_argument("--timeout", type=float, default=90.0,
                   help="per-case timeout in seconds (default: 90)")
    p.add_argument("--system", choices=list(SYSTEMS),
                   help="internal: run the cases for one system in this process "
                        "and print JSON lines")
    return p.parse_args(argv)


def ray_available() -> bool:
    probe = subprocess.run([sys.executable, "-c", "import ray"],
                           capture_output=True, env=child_env())
    return probe.returncode == 0


def main(argv=None) -> int:
    args = parse_args(argv)
    cases = parse_cases(args.cases)
    if args.system:
        worker_main(args.system, cases, Settings.for_mode(args.quick))
        return 0

    systems = ["lightray"]
    if args.vs == "ray":
        if ray_available():
            systems.append("ray")
        else:
            log("warning: --vs ray given but `import ray` fails; running lightray only")

    info = machine_info()
    log(f"machine: {describe_machine(info)}")
    results = {}
    for system in systems:
        log(f"running {system} ({'quick' if args.quick else 'full'}) ...")
        t0 = time.perf_counter()
        results[system] = run_system(system, cases, args.quick, args.timeout)
        log(f"  {system} done in {time.perf_counter() - t0:.1f}s")

    print()
    print(render_table(cases, results))
    errors = render_errors(results)
    if errors:
        print("\nerrors:\n" + errors)
    print(f"\n↑ higher is better, ↓ lower is better; machine: {describe_machine(info)}")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "quick": args.quick, "cases": cases,
                       "results": results}, f, indent=2)
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
