#!/usr/bin/env python
"""Dask's own test suite, unchanged, on lightray.get, against Dask's own schedulers.

Usage::

    python benchmarks/dask_suite.py                       # lightray vs processes (+ sync)
    python benchmarks/dask_suite.py --local-mode          # also lightray's local mode vs sync
    python benchmarks/dask_suite.py --modules test_delayed,test_bag --jobs 2
    python benchmarks/dask_suite.py --python /tmp/dask-new/bin/python   # another dask

Each (module, mode) pair is one pytest run of the installed dask's test
module with benchmarks/dask_suite_plugin.py loaded, which routes every
computation that would run on Dask's threaded, sync or processes scheduler to
the mode's scheduler (see the plugin). Modes:

    lightray   lightray.get on lightray.init(num_cpus=2)     compared with processes
    processes  Dask's multiprocessing scheduler               (the baseline)
    sync       Dask's synchronous scheduler                   (the local-mode baseline)
    local      lightray.get on init(local_mode=True, copy_values=False), compared with sync

The outcome of every test comes from pytest's junit XML. The report gives
passed/failed/skipped per module and mode, then every test that fails on
lightray but passes on its baseline, with the first line of its error. Not
part of the default test suite: a full run takes hours on 2 cores.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

MODULES = {
    "test_delayed": "tests/test_delayed.py",
    "test_bag": "bag/tests/test_bag.py",
    "test_reductions": "array/tests/test_reductions.py",
    "test_array_core": "array/tests/test_array_core.py",
    "test_groupby": "dataframe/tests/test_groupby.py",
    "test_shuffle": "dataframe/tests/test_shuffle.py",
    "test_multi": "dataframe/tests/test_multi.py",
    "test_rolling": "dataframe/tests/test_rolling.py",
}
BASELINE = {"lightray": "processes", "local": "sync"}
# The installed dask has no pytest configuration of its own (it lives in the
# source tree): the parts that change outcomes, as Dask's CI runs its tests.
# A warning from dask, pandas or numpy code is an error; xfail is strict.
DASK_TEST_CONFIG = ["-W", "error:::dask[.*]", "-W", "error:::pandas[.*]",
                    "-W", "error:::numpy[.*]", "-o", "xfail_strict=true"]


def dask_location(python: str) -> tuple:
    """(dask's package directory, dask's version) for that interpreter."""
    out = subprocess.run(
        [python, "-c", "import dask, os; print(os.path.dirname(dask.__file__)); "
                       "print(dask.__version__)"],
        check=True, capture_output=True, text=True, timeout=120).stdout.split("\n")
    return out[0], out[1]


def run_module(python: str, dask_dir: str, module: str, mode: str, out_dir: str,
               timeout: int, cpus: int, keyword: str | None, dask_filters: bool = True,
               only: list | None = None) -> dict:
    """One pytest run; {test id: (outcome, message)} from its junit XML.
    only: test ids (as parse_junit names them) to run instead of the whole module."""
    xml_path = os.path.join(out_dir, f"{module}.{mode}.xml")
    log_path = os.path.join(out_dir, f"{module}.{mode}.log")
    env = dict(os.environ, LIGHTRAY_DASK_SUITE_MODE=mode,
               LIGHTRAY_DASK_SUITE_CPUS=str(cpus),
               PYTHONPATH=os.pathsep.join(filter(None, [HERE, REPO,
                                                        os.environ.get("PYTHONPATH")])))
    rootdir = os.path.dirname(dask_dir)
    module_path = os.path.join(dask_dir, MODULES[module])
    targets = [node_id_of(module_path, test_id) for test_id in only] if only else [module_path]
    command = [python, "-m", "pytest", *targets,
               "-p", "dask_suite_plugin", "-p", "no:cacheprovider", "-v",
               # dask/conftest.py (its fixtures: xfail, shuffle_method) lies above
               # the test module's directory: let pytest look that far up.
               f"--confcutdir={rootdir}", f"--rootdir={rootdir}",
               f"--timeout={timeout}", f"--junitxml={xml_path}", "-o", "junit_family=xunit1"]
    if dask_filters:
        command += DASK_TEST_CONFIG
    if keyword:
        command += ["-k", keyword]
    started = time.monotonic()
    crashed: dict = {}   # test id -> why: a test that took the pytest process down
    for _ in range(MAX_CRASHES + 1):
        if os.path.exists(xml_path):
            os.remove(xml_path)
        deselect = [arg for node_id in crashed for arg in ("--deselect", node_id)]
        with tempfile.TemporaryDirectory(prefix=f"dask_suite_{module}_{mode}_") as cwd, \
                open(log_path, "w") as log:
            # The whole module gets a generous bound; each test has --timeout.
            returncode = subprocess.run(
                command + deselect, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                timeout=max(3600, timeout * 20)).returncode
            if returncode >= 0 and os.path.exists(xml_path):
                break
            # Killed (a segfault in a test): run again without the test it was in.
            with open(log_path) as log_text:
                node_id = last_test_started(log_text.read(), cwd, rootdir)
        if node_id is None or node_id in crashed:
            break
        crashed[node_id] = f"the pytest process died (exit {returncode}) in this test"
    tests = parse_junit(xml_path)
    for node_id, why in crashed.items():
        tests[junit_id(node_id)] = ("failed", why)
    return {"seconds": round(time.monotonic() - started, 1), "tests": tests}


MAX_CRASHES = 5


def last_test_started(log_text: str, cwd: str, rootdir: str):
    """The node id (relative to rootdir, as --deselect takes it) of the last
    test pytest -v announced (relative to cwd): the one it died in."""
    found = re.findall(r"^(\S+\.py)::(\S+)", log_text, re.MULTILINE)
    if not found:
        return None
    path, name = found[-1]
    return f"{os.path.relpath(os.path.normpath(os.path.join(cwd, path)), rootdir)}::{name}"


def junit_id(node_id: str) -> str:
    """A pytest node id as parse_junit names the test (xunit1: dotted module::name)."""
    path, _, name = node_id.partition("::")
    return f"{path[:-3].replace(os.sep, '.')}::{name}"


def parse_junit(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    outcomes = {}
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = "failed", child.get("message") or (child.text or "")
                break
            if child.tag == "skipped":
                outcome, message = "skipped", child.get("message") or ""
        outcomes[test_id] = (outcome, _first_line(message))
    return outcomes


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return (lines[0] if lines else "")[:300]


def counts(tests: dict) -> dict:
    result = {"passed": 0, "failed": 0, "skipped": 0}
    for outcome, _ in tests.values():
        result[outcome] += 1
    return result


def node_id_of(module_path: str, test_id: str) -> str:
    """A pytest node id (absolute path) for a test id of parse_junit's."""
    cls, _, name = test_id.partition("::")
    return "::".join([module_path, *short_id(cls).split(".")[1:], name])


def short_id(test_id: str) -> str:
    """A test id from the module's own name on (test_x::name, or
    test_x.TestClass::name), whatever rootdir pytest ran with."""
    cls, sep, name = test_id.partition("::")
    parts = cls.split(".")
    starts = [i for i, part in enumerate(parts) if part.startswith("test_")]
    return ".".join(parts[starts[-1] if starts else 0:]) + sep + name


def regressions(results: dict, module: str, mode: str) -> list:
    """(test id, message) of tests failing on mode but passing on its baseline."""
    base = results.get((module, BASELINE[mode]))
    ours = results.get((module, mode))
    if base is None or ours is None:
        return []
    base_outcomes = {short_id(t): outcome for t, (outcome, _) in base["tests"].items()}
    return [(test_id, message) for test_id, (outcome, message) in sorted(ours["tests"].items())
            if outcome == "failed" and base_outcomes.get(short_id(test_id)) == "passed"]


def report(results: dict, modules: list, modes: list, version: str) -> str:
    lines = [f"Dask {version}: passed/failed/skipped per module (seconds)", ""]
    header = f"{'module':<18}" + "".join(f"{mode:>28}" for mode in modes)
    lines.append(header)
    totals = {mode: {"passed": 0, "failed": 0, "skipped": 0} for mode in modes}
    for module in modules:
        row = f"{module:<18}"
        for mode in modes:
            found = results.get((module, mode))
            if found is None:
                row += f"{'-':>28}"
                continue
            c = counts(found["tests"])
            for k in c:
                totals[mode][k] += c[k]
            row += f"{c['passed']:>8}/{c['failed']:<5}/{c['skipped']:<5} ({found['seconds']:>5.0f}s)"
        lines.append(row)
    lines.append(f"{'total':<18}" + "".join(
        f"{t['passed']:>8}/{t['failed']:<5}/{t['skipped']:<13}" for t in totals.values()))
    for mode in modes:
        if mode not in BASELINE or BASELINE[mode] not in modes:
            continue
        found = [(m, r) for m in modules for r in regressions(results, m, mode)]
        lines += ["", f"{len(found)} test(s) fail on {mode} but pass on {BASELINE[mode]}:"]
        lines += [f"  {m}: {test_id}\n      {message}" for m, (test_id, message) in found]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", default=",".join(MODULES),
                        help=f"comma-separated, from: {', '.join(MODULES)}")
    parser.add_argument("--modes", default=None,
                        help="comma-separated from lightray, processes, sync, local "
                             "(default: lightray,processes,sync; with --local-mode also local)")
    parser.add_argument("--local-mode", action="store_true",
                        help="also run lightray's local mode (compared with sync)")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter whose dask (and its tests) to run")
    parser.add_argument("--jobs", type=int, default=1, help="pytest runs at a time")
    parser.add_argument("--cpus", type=int, default=2, help="num_cpus for lightray.init")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per test")
    parser.add_argument("-k", dest="keyword", default=None, help="pytest -k expression")
    parser.add_argument("--no-dask-filters", action="store_true",
                        help="run without Dask's own warning filters and strict xfail")
    parser.add_argument("--baseline-failures-only", action="store_true",
                        help="run a baseline (processes, sync) only on the tests that failed "
                             "on the mode compared with it (much faster; its counts then "
                             "cover those tests only)")
    parser.add_argument("--reuse", action="store_true",
                        help="take a (module, mode) whose junit XML is in --out already "
                             "from there instead of running it again")
    parser.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "dask_suite"),
                        help="directory for junit XML, logs and results.json")
    args = parser.parse_args(argv)
    modules = [m for m in args.modules.split(",") if m]
    unknown = sorted(set(modules) - set(MODULES))
    if unknown:
        parser.error(f"unknown module(s) {unknown}; known: {', '.join(MODULES)}")
    modes = (args.modes.split(",") if args.modes else ["lightray", "processes", "sync"])
    if args.local_mode and "local" not in modes:
        modes.append("local")
    bad = sorted(set(modes) - {"lightray", "processes", "sync", "local"})
    if bad:
        parser.error(f"unknown mode(s) {bad}")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    dask_dir, version = dask_location(args.python)
    os.makedirs(args.out, exist_ok=True)
    results: dict = {}
    runs = [(m, mode) for m in modules for mode in modes]
    if args.reuse:
        for m, mode in list(runs):
            xml_path = os.path.join(args.out, f"{m}.{mode}.xml")
            if os.path.exists(xml_path):
                results[(m, mode)] = {"seconds": 0.0, "tests": parse_junit(xml_path)}
                runs.remove((m, mode))
    def run_all(batch, only_failures_of=None):
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            futures = {}
            for m, mode in batch:
                only = None
                if only_failures_of is not None:
                    compared = results.get((m, only_failures_of[mode]), {"tests": {}})["tests"]
                    only = [t for t, (outcome, _) in compared.items() if outcome == "failed"]
                    if not only:
                        results[(m, mode)] = {"seconds": 0.0, "tests": {}}
                        continue
                futures[pool.submit(run_module, args.python, dask_dir, m, mode, args.out,
                                    args.timeout, args.cpus, args.keyword,
                                    not args.no_dask_filters, only)] = (m, mode)
            for future in concurrent.futures.as_completed(futures):
                module, mode = futures[future]
                results[(module, mode)] = future.result()
                c = counts(results[(module, mode)]["tests"])
                print(f"done {module} on {mode}: {c} in {results[(module, mode)]['seconds']}s",
                      flush=True)

    if args.baseline_failures_only:
        compared_with = {base: mode for mode, base in BASELINE.items() if mode in modes}
        run_all([r for r in runs if r[1] not in compared_with])
        run_all([r for r in runs if r[1] in compared_with], compared_with)
    else:
        run_all(runs)
    text = report(results, modules, modes, version)
    print(text)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"dask": version, "results": {f"{m}.{mode}": r["tests"]
                                                 for (m, mode), r in results.items()}}, f)
    with open(os.path.join(args.out, "report.txt"), "w") as f:
        f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
