"""Harness shared by the benchmark scripts in this folder.

``microbench.py`` and ``dask_bench.py`` work the same way: the parent process
re-invokes the script with ``--system NAME`` once per system, reads the JSON
lines that worker prints on stdout, enforces a per-case timeout, and restarts
the worker after a hang or crash. This module holds the pieces of that they
share, so each script keeps only its cases and its report:

* subprocesses: ``child_env``, ``importable``;
* the worker's side of the line protocol: ``emit``, ``error_text``;
* the parent's side: ``WorkerSpec``, ``spawn_worker``, ``kill_worker``,
  ``collect_from_worker``, ``run_system``;
* command line and reporting: ``parse_list``, ``log``, ``tail``, ``fmt``,
  ``markdown_table``, ``render_errors``, ``print_errors``, ``write_json``;
* machine description: ``cpu_model``, ``package_version``, ``machine_info``,
  ``describe_machine``.

The scripts import it as ``import harness``: Python puts a script's own folder
on ``sys.path``, both when it is run as ``python benchmarks/NAME.py`` and when
it re-invokes itself as a worker.
"""
import json
import os
import platform
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------
# Subprocesses
# --------------------------------------------------------------------------


def child_env() -> dict:
    """Environment for subprocesses: repo importable, Ray quiet."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p
    )
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def importable(module: str) -> bool:
    """Whether ``import module`` works in a fresh interpreter with ``child_env``."""
    probe = subprocess.run([sys.executable, "-c", f"import {module}"],
                           capture_output=True, env=child_env(), check=False)
    return probe.returncode == 0


def with_ray_if_asked(systems: list, vs) -> list:
    """systems, plus "ray" when ``--vs ray`` was given and Ray imports."""
    if vs != "ray":
        return systems
    if importable("ray"):
        return systems + ["ray"]
    log("warning: --vs ray given but `import ray` fails; running without Ray")
    return systems


# --------------------------------------------------------------------------
# Text helpers
# --------------------------------------------------------------------------


def tail(text: str, lines: int = 6) -> str:
    """The last ``lines`` lines of ``text``, joined with `` | ``."""
    return " | ".join(text.strip().splitlines()[-lines:])


def error_text(exc: BaseException) -> str:
    """``Type: message`` of an exception, cut to 500 characters."""
    return f"{type(exc).__name__}: {exc}"[:500]


def log(msg: str) -> None:
    """Progress line on stderr (stdout is for the table, or the JSON lines)."""
    print(msg, file=sys.stderr, flush=True)


def fmt(value: Optional[float]) -> str:
    """A number with about three significant digits; ``-`` for None."""
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if value >= 0.01 else f"{value:.2g}"


def parse_list(text: Optional[str], choices: list, what: str,
               groups: Optional[dict] = None) -> list:
    """Comma-separated subset of ``choices`` in their order; all when empty.

    ``groups`` maps a group name to a list of choices: naming the group
    selects all of them (e.g. ``--cases actors``). Exits with a message naming
    the unknown ``what``\\ s.
    """
    if not text:
        return list(choices)
    groups = groups or {}
    chosen = set()
    unknown = []
    for name in (c.strip() for c in text.split(",")):
        if not name:
            continue
        if name in groups:
            chosen.update(groups[name])
        elif name in choices:
            chosen.add(name)
        else:
            unknown.append(name)
    if unknown:
        names = list(choices) + [f"{g} (group)" for g in groups]
        raise SystemExit(f"unknown {what}(s): {', '.join(unknown)}; "
                         f"choose from {', '.join(names)}")
    return [c for c in choices if c in chosen]  # canonical order


# --------------------------------------------------------------------------
# Worker side of the line protocol
# --------------------------------------------------------------------------


def emit(tag: str, payload) -> None:
    """Print one protocol line, ``TAG <json>``, for the parent."""
    sys.stdout.write(f"{tag} {json.dumps(payload)}\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------
# Parent side: spawn a worker, read its lines, recover from hangs and crashes
# --------------------------------------------------------------------------


@dataclass
class WorkerSpec:
    """What the parent needs to know about one script's workers."""

    script: str  # path of the script to re-invoke with --system NAME
    start_tag: str  # line tag: the worker starts a case (payload: its name)
    result_tag: str  # line tag: a case's result (payload: dict with "case")
    error_result: Callable[[str, str], dict]  # (case, message) -> result dict
    log_result: Callable[[str, dict], None]  # (system, result) -> None
    startup: str = "startup"  # word in "during <startup>: ..." messages
    extra_args: tuple = ()  # more command-line arguments for every worker


def spawn_worker(spec: WorkerSpec, system: str, cases: list, quick: bool, stderr_file):
    """Start ``spec.script --system system``; return (process, queue of stdout lines).

    The queue ends with None when the worker closes stdout.
    """
    cmd = [sys.executable, spec.script, "--system", system, "--cases", ",".join(cases)]
    if quick:
        cmd.append("--quick")
    cmd.extend(spec.extra_args)
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
    """Kill a worker and every process in its session, and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def collect_from_worker(spec: WorkerSpec, system: str, cases: list, quick: bool,
                        timeout: float, results: dict,
                        on_line: Optional[Callable[[str, str], None]] = None) -> None:
    """Run one worker over ``cases`` and store each case result in ``results``.

    Lines with a tag other than the start and result tags go to
    ``on_line(tag, payload)``. Stops at the first hang or crash. That case, or
    every remaining case if the hang happened during start-up, is recorded as
    an error.
    """
    with tempfile.TemporaryFile("w+") as stderr_file:
        proc, lines = spawn_worker(spec, system, cases, quick, stderr_file)
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
            if tag == spec.start_tag:
                current, deadline = json.loads(payload), time.monotonic() + timeout
            elif tag == spec.result_tag:
                res = json.loads(payload)
                results[res["case"]] = res
                spec.log_result(system, res)
            elif on_line is not None:
                on_line(tag, payload)

        if failure is None:
            return
        stderr_file.seek(0)
        detail = tail(stderr_file.read())
        message = f"{failure} (stderr: {detail})" if detail else failure
        if current in (None, "__init__"):
            pending = [c for c in cases if c not in results]
            message = f"during {spec.startup}: {message}"
        else:
            pending = [current] if current not in results else []
        if not pending:
            log(f"  {system}: worker {message} after finishing {current}")
        for case in pending:
            results[case] = spec.error_result(case, message)
            spec.log_result(system, results[case])


def run_system(spec: WorkerSpec, system: str, cases: list, quick: bool, timeout: float,
               on_line: Optional[Callable[[str, str], None]] = None) -> dict:
    """Run all ``cases`` for one system, restarting the worker after failures.

    Returns the results by case; ``on_line`` as in ``collect_from_worker``.
    """
    results = {}
    while True:
        remaining = [c for c in cases if c not in results]
        if not remaining:
            return results
        collect_from_worker(spec, system, remaining, quick, timeout, results, on_line)
        if all(c not in results for c in remaining):  # no progress: give up
            for case in remaining:
                results[case] = spec.error_result(case, "worker made no progress")


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


def markdown_table(rows: list, right_aligned: Iterable[int]) -> str:
    """A Markdown table of ``rows`` (the first is the header), padded to align.

    Columns whose index is in ``right_aligned`` are right-aligned, the others
    left-aligned.
    """
    right = set(right_aligned)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]

    def line(row):
        return "| " + " | ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths))
        ) + " |"

    sep = "|" + "|".join(
        "-" * (w + 1) + ":" if i in right else "-" * (w + 2)
        for i, w in enumerate(widths)
    ) + "|"
    return "\n".join([line(rows[0]), sep] + [line(r) for r in rows[1:]])


def render_errors(results: dict) -> str:
    """One ``- system case: error`` line per failed case, or an empty string."""
    out = []
    for system, by_case in results.items():
        for case, res in by_case.items():
            if res.get("error"):
                out.append(f"- {system} {case}: {res['error']}")
    return "\n".join(out)


def print_errors(results: dict) -> None:
    """Print the failed cases under an "errors:" heading, if any failed."""
    errors = render_errors(results)
    if errors:
        print("\nerrors:\n" + errors)


def write_json(path: str, record: dict) -> None:
    """Write every result (the --json option of each script)."""
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
    log(f"wrote {path}")


# --------------------------------------------------------------------------
# Machine description
# --------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_version(name: str) -> str:
    """Installed version of distribution ``name``, or ``n/a``."""
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return "n/a"


def machine_info(packages: Iterable[str]) -> dict:
    """CPUs, CPU model, Python, platform, ``<pkg>_version`` for each of
    ``packages``, and the date (UTC)."""
    info = {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    for pkg in packages:
        info[f"{pkg}_version"] = package_version(pkg)
    info["date_utc"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return info


def describe_machine(info: dict, packages: dict) -> str:
    """One line from ``machine_info``; ``packages`` maps display name -> package."""
    versions = "".join(f"{label} {info[f'{pkg}_version']}, "
                       for label, pkg in packages.items())
    return (
        f"{info['nproc']} CPUs ({info['cpu_model']}), Python {info['python']}, "
        f"{versions}{info['platform']}, {info['date_utc']}"
    )
