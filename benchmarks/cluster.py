#!/usr/bin/env python
"""Two-node cluster benchmark: lightray's cluster side by side with Ray's.

Usage::

    python benchmarks/cluster.py                    # lightray only
    python benchmarks/cluster.py --vs ray           # lightray and Ray, ratios
    python benchmarks/cluster.py --vs ray --cases transfer --quick
    python benchmarks/cluster.py --vs ray --json cluster.json
    python benchmarks/cluster.py --vs insecure --quick   # the cost of keys (CURVE)
    python benchmarks/cluster.py --recovery --vs ray     # node death (benchmarks/recovery.py)

What runs
---------
Each system gets a cluster of two nodes on this host (loopback), 1 CPU and a
4 GiB object store each:

* lightray: two ``python -m lightray.agent`` processes, as a user starts them
  (``--head --port 0``, then ``--address <head>``), with a private
  ``LIGHTRAY_TEMP_DIR``; the benchmark attaches with
  ``lightray.init(address=<head>)``. Afterwards: ``lightray.shutdown()``,
  SIGTERM to each agent, wait for them. The head makes a cluster key and the
  other agent finds it: the mesh authenticates and encrypts (CURVE).
* lightray-insecure (``--vs insecure``): the same two agents started with
  ``--insecure`` (no key, no authentication, no encryption); the ratio
  column is then keyed / insecure, and "cost" the extra time of the keyed
  cluster (the issue's targets: under 10% on tasks, under 30% on 1 GB).
* Ray: ``ray.cluster_utils.Cluster`` with a head node and one added node,
  ``ray.init(address=cluster.address)``; afterwards ``ray.shutdown()`` and
  ``cluster.shutdown()``.

Node A is the node the driver is attached to (the head), node B the other.
Tasks are pinned with ``NodeAffinity`` / ``NodeAffinitySchedulingStrategy``
(``soft=False``).

What is measured
----------------
* ``transfer_1MB``, ``transfer_100MB``, ``transfer_1GB`` (``--cases
  transfer``): one object at a time (50, 5 and 3 of them; ``--quick``: 10,
  2, 1), a task pinned to A makes a fresh NumPy ``uint8`` array of that many
  bytes (1 MB = 10**6 bytes; untimed); the same consumer task pinned to A
  (no transfer: the task's own cost) and then pinned to B gets the array as
  its argument and returns ``arr[::4096].sum()`` (one byte per page,
  checked); then the object is freed. The time of the task on B, from
  submission until ``get`` returns, is the time of one transfer; GB/s =
  bytes / time (1 GB = 10**9 bytes), the median over the objects. Every
  object is new, so B never has it cached; at most two copies exist at a
  time (on this VM memory touched for the first time beyond a couple of GiB
  is about 7x slower, which would measure the host). "transfer only" in the
  details is bytes / (cross-node time - same-node time). These are
  latencies as much as bandwidths: one object in flight at a time.
* ``transfer_1MB_pipelined``: throughput with many small objects in flight,
  the way a graph of tasks moves them: 100 objects of 1 MB made on A
  (untimed), then one consumer per object pinned to B, all submitted at once,
  and one ``get`` of all; GB/s = 100 MB / time, the median of 3 trials
  (``--quick``: 1 trial of 50).
* ``tasks_async`` (``--cases tasks``): ``N`` no-op tasks with the default
  strategy (they run on A, the driver's node), all submitted, then one
  ``get`` of all; tasks/s, the median of 3 trials of 10,000 after a warm-up
  of 500 (``--quick``: 1 trial of 2,000 after 100).
* ``spread_tasks_async`` (``--cases spread``): ``N`` no-op tasks (each
  returns its node id) with ``scheduling_strategy="SPREAD"``, all submitted,
  then one ``get`` of all; tasks/s, the median of 3 trials of 5,000 after a
  warm-up of 500 (``--quick``: 1 trial of 1,000 after 100). The details give
  how many ran on node A and on node B in each trial.

As in ``microbench.py``, each system runs in its own subprocess (this script
re-invokes itself with ``--system NAME``), one after the other, with a
per-case timeout; a case that hangs or crashes is reported as an error and a
fresh subprocess continues with the rest. Targets (from the issue, reported,
not asserted): transfer at 1 GB/s or more and faster than Ray; spread
``tasks_async`` at 3x Ray or more.
"""
import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import harness
from harness import emit, error_text, fmt, log

SCRIPT = os.path.abspath(__file__)
RESULT_TAG = "@@CLUSTER_RESULT"
START_TAG = "@@CLUSTER_START"

STORE_BYTES = 4 << 30  # object_store_memory of each node, both systems
CPUS_PER_NODE = 1
AGENT_START_TIMEOUT = 30.0
NODES_TIMEOUT = 30.0  # until both nodes are seen alive
AGENT_STOP_TIMEOUT = 20.0
GET_TIMEOUT = 300.0
PAGE = 4096  # the consumer reads one byte per page

# case -> object size in bytes, (repetitions, quick repetitions)
TRANSFERS = {
    "transfer_1MB": (10**6, (50, 10)),
    "transfer_100MB": (10**8, (5, 2)),
    "transfer_1GB": (10**9, (3, 1)),
}
# case -> object size, (objects in flight, quick), trials: all sent to B at once
PIPELINED = {"transfer_1MB_pipelined": (10**6, (100, 50), 3)}
SPREAD = {"warmup": (500, 100), "tasks": (5000, 1000), "trials": (3, 1)}
LOCAL_TASKS = {"warmup": (500, 100), "tasks": (10000, 2000), "trials": (3, 1)}

# case -> unit (all are throughputs: higher is better)
CASES = {
    "transfer_1MB": "GB/s",
    "transfer_100MB": "GB/s",
    "transfer_1GB": "GB/s",
    "transfer_1MB_pipelined": "GB/s",
    "tasks_async": "tasks/s",
    "spread_tasks_async": "tasks/s",
}
CASE_GROUPS = {"transfer": list(TRANSFERS) + list(PIPELINED), "tasks": ["tasks_async"],
               "spread": ["spread_tasks_async"]}
SYSTEMS = ["lightray", "lightray-insecure", "ray"]
# --vs X: the system compared with lightray, its column name, the ratio's name
BASELINES = {"ray": ("Ray", "lightray/Ray"), "lightray-insecure": ("insecure", "keyed/insecure")}
PACKAGES = {"Ray": "ray", "NumPy": "numpy"}


@dataclass
class Result:
    case: str
    unit: str
    value: float | None = None
    error: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class TwoNodes:
    """A running two-node cluster as the cases see it."""

    rt: object  # the lightray or ray module
    a: str  # node id of the driver's node (the head)
    b: str  # node id of the other node
    pin: Callable[[str], object]  # node id -> scheduling_strategy


# --------------------------------------------------------------------------
# Starting and stopping the clusters (inside the worker subprocess)
# --------------------------------------------------------------------------


class Agent:
    """One ``python -m lightray.agent`` process; its output goes to a file."""

    def __init__(self, args: list, log_path: str):
        self.log_path = log_path
        with open(log_path, "w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lightray.agent", "--num-cpus", str(CPUS_PER_NODE),
                 "--object-store-memory", str(STORE_BYTES)] + args,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=harness.child_env())
        self.node_id, self.address = self._wait_until_listening()

    def _wait_until_listening(self) -> tuple:
        """(node id, address) from ``lightray agent <id> listening on <addr>``."""
        deadline = time.monotonic() + AGENT_START_TIMEOUT
        while time.monotonic() < deadline:
            with open(self.log_path) as f:
                for line in f:
                    words = line.split()
                    if words[:2] == ["lightray", "agent"] and "listening" in words:
                        return words[2], words[-1]
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        with open(self.log_path) as f:
            raise RuntimeError(f"lightray agent did not start: {harness.tail(f.read())}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=AGENT_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log(f"  warning: agent {self.process.pid} ignored SIGTERM; killing it")
            self.process.kill()
            self.process.wait()


def wait_for_nodes(list_alive: Callable[[], list], count: int = 2) -> list:
    deadline = time.monotonic() + NODES_TIMEOUT
    while time.monotonic() < deadline:
        alive = list_alive()
        if len(alive) >= count:
            return alive
        time.sleep(0.05)
    raise TimeoutError(f"only {list_alive()} alive after {NODES_TIMEOUT:.0f}s")


@contextmanager
def lightray_cluster(insecure: bool = False):
    import lightray

    log_dir = os.environ["LIGHTRAY_TEMP_DIR"]  # set by the parent (see run_lightray)
    security = ["--insecure"] if insecure else []   # else: the head's key, found by node 2
    agents = []
    try:
        head = Agent(["--head", "--port", "0", *security], os.path.join(log_dir, "head.log"))
        agents.append(head)
        other = Agent(["--address", head.address, *security],
                      os.path.join(log_dir, "node2.log"))
        agents.append(other)
        lightray.init(address=head.address)
        try:
            wait_for_nodes(lambda: [n["node_id"] for n in lightray.nodes() if n["alive"]])
            yield TwoNodes(lightray, head.node_id, other.node_id, lightray.NodeAffinity)
        finally:
            lightray.shutdown()
    finally:
        for agent in reversed(agents):
            agent.stop()


@contextmanager
def ray_cluster():
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node_args = {"num_cpus": CPUS_PER_NODE, "object_store_memory": STORE_BYTES}
    cluster = Cluster(initialize_head=True,
                      head_node_args={**node_args, "include_dashboard": False})
    try:
        cluster.add_node(**node_args)
        ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
        try:
            alive = wait_for_nodes(lambda: [n["NodeID"] for n in ray.nodes() if n["Alive"]])
            a = ray.get_runtime_context().get_node_id()
            b = next(n for n in alive if n != a)
            yield TwoNodes(ray, a, b,
                           lambda node: NodeAffinitySchedulingStrategy(node, soft=False))
        finally:
            ray.shutdown()
    finally:
        cluster.shutdown()


CLUSTERS = {"lightray": lightray_cluster, "ray": ray_cluster,
            "lightray-insecure": lambda: lightray_cluster(insecure=True)}


# --------------------------------------------------------------------------
# Task bodies
# --------------------------------------------------------------------------


def _produce(nbytes: int, fill: int):
    import numpy as np

    return np.full(nbytes, fill, dtype=np.uint8)


def _consume(arr) -> int:
    import numpy as np

    return int(arr[::PAGE].sum(dtype=np.uint64))


def _expected_sum(nbytes: int, fill: int) -> int:
    return fill * len(range(0, nbytes, PAGE))


def _where_task(module: str):
    """A no-op task that returns the id of the node it ran on."""
    def where():
        import importlib

        return importlib.import_module(module).get_runtime_context().get_node_id()
    return where


# --------------------------------------------------------------------------
# Cases: each takes (TwoNodes, quick) and returns (value, extra dict)
# --------------------------------------------------------------------------


def warm_up(cl: TwoNodes) -> None:
    """Untimed: start a worker on each node and move one object each way."""
    rt = cl.rt
    produce, consume = rt.remote(_produce), rt.remote(_consume)
    for src, dst in ((cl.a, cl.b), (cl.b, cl.a)):
        ref = produce.options(scheduling_strategy=cl.pin(src)).remote(10**6, 1)
        got = rt.get(consume.options(scheduling_strategy=cl.pin(dst)).remote(ref),
                     timeout=GET_TIMEOUT)
        assert got == _expected_sum(10**6, 1), got


def timed_consume(cl: TwoNodes, consume, ref, node: str, expected: int) -> float:
    """Seconds from submitting the consumer on ``node`` until its result."""
    t0 = time.perf_counter()
    got = cl.rt.get(consume.options(scheduling_strategy=cl.pin(node)).remote(ref),
                    timeout=GET_TIMEOUT)
    elapsed = time.perf_counter() - t0
    if got != expected:
        raise AssertionError(f"consumer returned {got}, expected {expected}")
    return elapsed


def case_transfer(cl: TwoNodes, nbytes: int, reps: int) -> tuple:
    """One object at a time: make it on A (untimed), read it on A (the task's
    own cost), then on B (the transfer), then free it. At most two copies
    exist at once: on this VM, memory touched for the first time beyond a
    couple of GiB comes about 7x slower than memory used before, which would
    measure the host rather than the transfer."""
    rt = cl.rt
    produce = rt.remote(_produce).options(scheduling_strategy=cl.pin(cl.a))
    consume = rt.remote(_consume)
    same, cross, produce_s = [], [], 0.0
    for i in range(reps):
        fill = 1 + i % 250
        t0 = time.perf_counter()
        ref = produce.remote(nbytes, fill)
        rt.wait([ref], timeout=GET_TIMEOUT, fetch_local=False)
        produce_s += time.perf_counter() - t0
        same.append(timed_consume(cl, consume, ref, cl.a, _expected_sum(nbytes, fill)))
        cross.append(timed_consume(cl, consume, ref, cl.b, _expected_sum(nbytes, fill)))
        del ref  # frees it, and B's copy, before the next one
    rates = [nbytes / s / 1e9 for s in cross]
    extra_s = statistics.median(cross) - statistics.median(same)
    return statistics.median(rates), {
        "bytes": nbytes, "objects": reps, "gbps": rates,
        "cross_node_s": cross, "same_node_s": same, "produce_all_s": produce_s,
        "transfer_only_gbps": nbytes / extra_s / 1e9 if extra_s > 0 else None,
    }


def case_transfer_pipelined(cl: TwoNodes, nbytes: int, count: int, trials: int) -> tuple:
    """Throughput with many objects in flight: ``count`` objects made on A
    (untimed), then one consumer per object, all pinned to B and submitted at
    once, and one ``get`` of all their results. GB/s = count x bytes / time,
    the median of the trials; each trial's objects are new and freed after."""
    rt = cl.rt
    produce = rt.remote(_produce).options(scheduling_strategy=cl.pin(cl.a))
    consume = rt.remote(_consume).options(scheduling_strategy=cl.pin(cl.b))
    rates, seconds = [], []
    for trial in range(trials):
        fills = [1 + (trial * count + i) % 250 for i in range(count)]
        refs = [produce.remote(nbytes, fill) for fill in fills]
        rt.wait(refs, num_returns=count, timeout=GET_TIMEOUT, fetch_local=False)
        t0 = time.perf_counter()
        got = rt.get([consume.remote(ref) for ref in refs], timeout=GET_TIMEOUT)
        elapsed = time.perf_counter() - t0
        expected = [_expected_sum(nbytes, fill) for fill in fills]
        if got != expected:
            raise AssertionError("a consumer on B returned a wrong sum")
        del refs
        seconds.append(elapsed)
        rates.append(count * nbytes / elapsed / 1e9)
    return statistics.median(rates), {"bytes": nbytes, "objects": count,
                                      "trial_gbps": rates, "trial_s": seconds}


def case_spread(cl: TwoNodes, quick: bool) -> tuple:
    rt = cl.rt
    where = rt.remote(_where_task(rt.__name__)).options(scheduling_strategy="SPREAD")
    pick = 1 if quick else 0
    rt.get([where.remote() for _ in range(SPREAD["warmup"][pick])], timeout=GET_TIMEOUT)
    n = SPREAD["tasks"][pick]
    rates, splits = [], []  # splits: tasks run on A and on B, per trial
    for _ in range(SPREAD["trials"][pick]):
        t0 = time.perf_counter()
        nodes = rt.get([where.remote() for _ in range(n)], timeout=GET_TIMEOUT)
        rates.append(n / (time.perf_counter() - t0))
        splits.append([nodes.count(cl.a), nodes.count(cl.b)])
    return statistics.median(rates), {"tasks": n, "trial_rates": rates, "splits": splits}


def case_local_tasks(cl: TwoNodes, quick: bool) -> tuple:
    """No-op tasks with the default strategy: they stay on A, the driver's node."""
    rt = cl.rt
    noop = rt.remote(_noop)
    pick = 1 if quick else 0
    rt.get([noop.remote() for _ in range(LOCAL_TASKS["warmup"][pick])], timeout=GET_TIMEOUT)
    n = LOCAL_TASKS["tasks"][pick]
    rates = []
    for _ in range(LOCAL_TASKS["trials"][pick]):
        t0 = time.perf_counter()
        rt.get([noop.remote() for _ in range(n)], timeout=GET_TIMEOUT)
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates), {"tasks": n, "trial_rates": rates}


def _noop():
    return None


def run_case(cl: TwoNodes, case: str, quick: bool) -> tuple:
    if case in TRANSFERS:
        nbytes, reps = TRANSFERS[case]
        return case_transfer(cl, nbytes, reps[1 if quick else 0])
    if case in PIPELINED:
        nbytes, counts, trials = PIPELINED[case]
        return case_transfer_pipelined(cl, nbytes, counts[1 if quick else 0],
                                       1 if quick else trials)
    if case == "tasks_async":
        return case_local_tasks(cl, quick)
    return case_spread(cl, quick)


# --------------------------------------------------------------------------
# Worker: ``--system NAME`` starts that system's cluster and runs the cases
# --------------------------------------------------------------------------


def worker_main(system: str, cases: list, quick: bool) -> None:
    emit(START_TAG, "__init__")
    with CLUSTERS[system]() as cl:
        warm_up(cl)
        for case in cases:
            emit(START_TAG, case)
            result = Result(case, CASES[case])
            try:
                result.value, result.extra = run_case(cl, case, quick)
            except Exception as exc:  # one case failing must not stop the others
                result.error = error_text(exc)
            emit(RESULT_TAG, asdict(result))


# --------------------------------------------------------------------------
# Parent: one worker per system, then the report
# --------------------------------------------------------------------------


def error_result(case: str, message: str) -> dict:
    return asdict(Result(case, CASES[case], error=message))


def log_result(system: str, res: dict) -> None:
    if res["error"]:
        log(f"  {system:9s} {res['case']:19s} ERROR {res['error']}")
    else:
        log(f"  {system:9s} {res['case']:19s} {fmt(res['value'])} {res['unit']}")


WORKER = harness.WorkerSpec(SCRIPT, START_TAG, RESULT_TAG, error_result, log_result,
                            startup="cluster start-up")


def run_lightray(system: str, cases: list, quick: bool, timeout: float) -> dict:
    """lightray's worker with a private temp dir, reclaimed and removed after.

    A worker killed after a timeout takes its agents with it (same process
    group); reclaiming then unlinks the segments and session folders they left.
    """
    temp_dir = tempfile.mkdtemp(prefix="lightray-cluster-bench-")
    os.environ["LIGHTRAY_TEMP_DIR"] = temp_dir
    try:
        return harness.run_system(WORKER, system, cases, quick, timeout)
    finally:
        subprocess.run([sys.executable, "-c",
                        "from lightray.agent.session import reclaim_dead_sessions as r; r()"],
                       env=harness.child_env(), check=False)
        del os.environ["LIGHTRAY_TEMP_DIR"]
        shutil.rmtree(temp_dir, ignore_errors=True)


def run_system(system: str, cases: list, quick: bool, timeout: float) -> dict:
    if system.startswith("lightray"):
        return run_lightray(system, cases, quick, timeout)
    return harness.run_system(WORKER, system, cases, quick, timeout)


def target(case: str, lr: float | None, ray: float | None, baseline: str | None) -> tuple:
    """(target text, whether lightray meets it: yes / no / -)."""
    if baseline == "lightray-insecure":
        # The cost of keys: the keyed cluster's extra time over the insecure one's.
        limit = 0.30 if case in ("transfer_1GB", "transfer_100MB") else 0.10
        text = f"cost < {limit:.0%}"
        if lr is None or ray is None:
            return text, "-"
        cost = ray / lr - 1
        return f"{text} (is {cost:+.0%})", "yes" if cost < limit else "no"
    if case in TRANSFERS or case in PIPELINED:
        text = "≥ 1 GB/s, > Ray"
        if lr is None:
            return text, "-"
        ok = lr >= 1.0 and (ray is None or lr > ray)
        return text, ("yes" if ok else "no") + ("" if ray is not None else " (no Ray)")
    text = "≥ 3x Ray" if case == "spread_tasks_async" else "-"
    if lr is None or ray is None or text == "-":
        return text, "-"
    return text, "yes" if lr >= 3 * ray else "no"


def cell(res: dict) -> str:
    return "ERROR" if res.get("error") else fmt(res.get("value"))


def render_table(cases: list, results: dict) -> str:
    baseline = next((s for s in results if s != "lightray"), None)
    header = ["case", "unit", "lightray"] + (list(BASELINES[baseline]) if baseline else [])
    rows = [header + ["target", "met"]]
    for case in cases:
        a = results["lightray"].get(case, {})
        b = results.get(baseline, {}).get(case, {})
        row = [case, CASES[case] + " ↑", cell(a)]
        if baseline:
            ratio = "-"
            if a.get("value") and b.get("value"):
                ratio = f"{a['value'] / b['value']:.2f}x"
            row += [cell(b), ratio]
        rows.append(row + list(target(case, a.get("value"), b.get("value"), baseline)))
    return harness.markdown_table(rows, right_aligned={2, 3, 4} if baseline else {2})


def detail_rows(case: str, system: str, res: dict) -> list | None:
    x = res.get("extra") or {}
    if res.get("error") or not x:
        return None
    if case in TRANSFERS:
        rates = x["gbps"]
        return [case, system, str(x["objects"]),
                f"{statistics.median(x['cross_node_s']) * 1e3:.2f}",
                f"{statistics.median(x['same_node_s']) * 1e3:.2f}",
                f"{fmt(min(rates))}-{fmt(max(rates))}", fmt(x["transfer_only_gbps"])]
    if case in PIPELINED:
        rates = x["trial_gbps"]
        return [case, system, f"{len(rates)} x {x['objects']} in flight",
                f"{statistics.median(x['trial_s']) * 1e3 / x['objects']:.2f} (per object)",
                "-", f"{fmt(min(rates))}-{fmt(max(rates))}", "-"]
    rates = x["trial_rates"]
    return [case, system, f"{len(rates)} x {x['tasks']}", "-", "-",
            f"{fmt(min(rates))}-{fmt(max(rates))}",
            ", ".join(f"{a}/{b}" for a, b in x.get("splits", [])) or "-"]


def render_details(cases: list, results: dict) -> str:
    rows = [["case", "system", "samples", "A->B ms (median)", "on A ms (median)",
             "min-max", "transfer only GB/s; spread: tasks on A/B"]]
    for case in cases:
        for system, by_case in results.items():
            row = detail_rows(case, system, by_case.get(case, {}))
            if row:
                rows.append(row)
    if len(rows) == 1:
        return ""
    return harness.markdown_table(rows, right_aligned={3, 4, 5, 6})


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Two-node cluster benchmark of lightray (optionally vs Ray).",
        epilog="cases: " + ", ".join(CASES) + "; groups: "
               + ", ".join(f"{g} ({', '.join(cs)})" for g, cs in CASE_GROUPS.items()))
    p.add_argument("--vs", choices=["ray", "insecure"],
                   help="also run Ray's local multi-node cluster, or the same lightray "
                        "cluster started --insecure (the cost of keys and encryption)")
    p.add_argument("--cases", help="comma-separated cases or groups, e.g. transfer,spread")
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--json", metavar="PATH", help="also write every result as JSON")
    p.add_argument("--timeout", type=float, default=180.0,
                   help="per-case timeout in seconds (default: 180)")
    p.add_argument("--recovery", action="store_true",
                   help="instead: time from a node's SIGKILL until its tasks ran elsewhere, "
                        "and the cost of lineage bookkeeping (benchmarks/recovery.py)")
    p.add_argument("--system", choices=SYSTEMS,
                   help="internal: run one system's cases in this process, print JSON lines")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.recovery:
        import recovery
        return recovery.main((["--vs", "ray"] if args.vs == "ray" else [])
                             + (["--json", args.json] if args.json else []))
    cases = harness.parse_list(args.cases, list(CASES), "case", CASE_GROUPS)
    if args.system:
        worker_main(args.system, cases, args.quick)
        return 0

    if args.vs == "insecure":
        systems = ["lightray", "lightray-insecure"]
    else:
        systems = harness.with_ray_if_asked(["lightray"], args.vs)
    info = harness.machine_info(PACKAGES.values())
    log(f"machine: {harness.describe_machine(info, PACKAGES)}")
    started = time.perf_counter()
    results = {}
    for system in systems:
        log(f"running {system} ({'quick' if args.quick else 'full'}) ...")
        t0 = time.perf_counter()
        results[system] = run_system(system, cases, args.quick, args.timeout)
        log(f"  {system} done in {time.perf_counter() - t0:.1f}s")

    print()
    print(render_table(cases, results))
    details = render_details(cases, results)
    if details:
        print("\n" + details)
    harness.print_errors(results)
    print(f"\n2 nodes x {CPUS_PER_NODE} CPU, {STORE_BYTES >> 30} GiB store each; "
          f"GB = 10^9 bytes; total {time.perf_counter() - started:.0f}s; "
          f"machine: {harness.describe_machine(info, PACKAGES)}")
    if args.json:
        harness.write_json(args.json, {"machine": info, "quick": args.quick, "cases": cases,
                                       "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
