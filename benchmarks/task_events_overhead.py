#!/usr/bin/env python
"""What recording task events (LIGHTRAY_TASK_EVENTS) costs, in CPU time per task.

Usage::

    python benchmarks/task_events_overhead.py              # 3 runs each, on and off
    python benchmarks/task_events_overhead.py --runs 5 --calls 40000

Each run is a fresh interpreter that starts ``lightray.init(num_cpus=2)``
with recording on (the default 100,000) or off (0), warms up, then submits
``--calls`` no-op tasks (``tasks_async``'s shape: batches of 1,000, then get)
and as many calls of one actor's method (``actor_calls_async``'s shape). It
reports the CPU seconds (user + system) the driver, the agent and every
worker spent per task, and the wall rate. Runs with recording on and off
alternate, so a machine's load drifts over both alike. CPU time per task is
the steadier measure on a shared machine: wall rates there swing by tens of
per cent from one run to the next; both are printed, with their medians.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

BATCH = 1000
CHILD_TIMEOUT = 180.0      # seconds for one run; a run that takes longer is left out


def _tree_cpu(psutil) -> float:
    me = psutil.Process()
    total = 0.0
    for process in [me] + me.children(recursive=True):
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def child(case: str, calls: int) -> dict:
    import psutil

    import lightray

    lightray.init(num_cpus=2)

    @lightray.remote
    def noop():
        return 0

    @lightray.remote(num_cpus=0)
    class Target:
        def small_value(self):
            return b"ok"

    if case == "tasks":
        def batch():
            lightray.get([noop.remote() for _ in range(BATCH)])
    else:
        target = Target.remote()

        def batch():
            lightray.get([target.small_value.remote() for _ in range(BATCH)])
    for _ in range(3):
        batch()
    time.sleep(0.7)   # the warm-up's events sent on (workers flush when idle)
    cpu, wall = _tree_cpu(psutil), time.perf_counter()
    for _ in range(calls // BATCH):
        batch()
    wall = time.perf_counter() - wall
    time.sleep(0.7)   # and the measured calls' (their cost counts)
    cpu = _tree_cpu(psutil) - cpu
    lightray.shutdown()
    done = calls // BATCH * BATCH
    return {"cpu_us_per_call": cpu / done * 1e6, "calls_per_s": done / wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--child", nargs=2, metavar=("CASE", "CALLS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return 0
    results: dict = {}
    for run in range(args.runs):
        for case in ("tasks", "actor_calls"):
            for setting in ("100000", "0"):
                env = dict(os.environ, LIGHTRAY_TASK_EVENTS=setting)
                try:
                    out = subprocess.run([sys.executable, __file__, "--child", case,
                                          str(args.calls)], env=env, capture_output=True,
                                         text=True, timeout=CHILD_TIMEOUT, check=True)
                except subprocess.TimeoutExpired:
                    print(f"run {run + 1} {case:11} events={setting:>6}: no result in "
                          f"{CHILD_TIMEOUT:g} s (left out)", flush=True)
                    continue
                row = json.loads(out.stdout.strip().splitlines()[-1])
                results.setdefault((case, setting), []).append(row)
                print(f"run {run + 1} {case:11} events={setting:>6}: "
                      f"{row['cpu_us_per_call']:7.1f} CPU us/call, "
                      f"{row['calls_per_s']:8,.0f} calls/s", flush=True)
    print()
    for case in ("tasks", "actor_calls"):
        on, off = results[(case, "100000")], results[(case, "0")]
        cpu_on = statistics.median(r["cpu_us_per_call"] for r in on)
        cpu_off = statistics.median(r["cpu_us_per_call"] for r in off)
        rate_on = statistics.median(r["calls_per_s"] for r in on)
        rate_off = statistics.median(r["calls_per_s"] for r in off)
        print(f"{case:11}  CPU us/call median on {cpu_on:.1f} off {cpu_off:.1f} "
              f"({(cpu_on / cpu_off - 1) * 100:+.1f}%);  calls/s median on {rate_on:,.0f} "
              f"off {rate_off:,.0f} ({(rate_on / rate_off - 1) * 100:+.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
