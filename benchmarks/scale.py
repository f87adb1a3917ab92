#!/usr/bin/env python
"""Scale benchmarks: a big Dask graph, many agents in one cluster, the placement policy.

Usage::

    python benchmarks/scale.py                          # all three parts, default sizes (a few min)
    python benchmarks/scale.py --parts graph --graph-width 1000000     # graph_1M
    python benchmarks/scale.py --parts agents --agents 4,8,16,32 --cpu-window 20
    python benchmarks/scale.py --parts placement --sim-nodes 1000 --sim-tasks 1000000
    python benchmarks/scale.py --json scale.json

Parts
-----
* ``graph``: the shape of ``dask_bench.py``'s ``graph_10k`` made wider:
  ``--graph-width`` independent ``(operator.add, i, 1)`` tasks, one ``sum``
  task per 100 of them and one ``sum`` of those (``graph_1M`` is width
  1,000,000: 1,010,001 tasks). It runs in a fresh driver process with
  ``lightray.init(num_cpus=2)``: first ``graph_10k`` (warm-up, then the
  median of 3), then the wide graph once. Printed: both times, the ratio of
  the wide graph's time to ``graph_10k``'s scaled by the width (1.0 =
  linear), and the peak resident memory (``VmHWM``) of the driver, the
  agent and the largest worker.
* ``agents``: for each count in ``--agents``, a cluster on loopback: a head
  agent (``--head --port 0``, 2 CPUs), one more agent with 2 CPUs and the
  rest with ``--num-cpus 0``, all started at once after the head. "join s"
  is the time from starting them until ``lightray.nodes()`` (from a driver
  attached to the head) lists every agent alive. Then the driver leaves and,
  after ``--settle`` seconds, each agent's CPU time (user + system, the agent
  process alone: membership, heartbeats and the control store live there) is
  read over ``--cpu-window`` seconds of idle cluster. Printed per count:
  join time, mean and max % of one core per agent (the head apart: it leads
  the control store), and the growth factor against the smallest count.
* ``placement``: ``lightray.scheduling.choose_node`` (pure) over
  ``--sim-nodes`` simulated nodes of 4 CPUs and ``--sim-tasks`` tasks of
  1 CPU, DEFAULT and SPREAD. Each task is submitted at a random node, which
  decides from its view (itself and its peers); the chosen node's CPU is
  taken until the task ends, after a random number of further decisions
  chosen so that about 75% of the cluster's CPUs are busy. Printed:
  decisions per second (the policy's cost alone; bookkeeping excluded) and
  the spread of load (the busy CPUs of each node, sampled every 1,000
  decisions: mean, standard deviation, max). The same is run over 10 and
  100 nodes to show how the cost grows with the cluster.

Timing is done here, in the benchmark; the tests time nothing.
"""
import argparse
import heapq
import json
import operator
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import harness
from harness import log

SCRIPT = os.path.abspath(__file__)
FANOUT = 100
GRAPH_10K = 10_000
AGENT_START_TIMEOUT = 60.0
JOIN_TIMEOUT = 180.0
STOP_TIMEOUT = 20.0
SIM_CPUS = 4
SIM_BUSY = 0.75
SAMPLE_EVERY = 1000


# --------------------------------------------------------------- graph part

def make_graph(width: int) -> tuple:
    dsk = {("x", i): (operator.add, i, 1) for i in range(width)}
    for j in range(width // FANOUT):
        dsk[("s", j)] = (sum, [("x", i) for i in range(j * FANOUT, (j + 1) * FANOUT)])
    dsk["total"] = (sum, [("s", j) for j in range(width // FANOUT)])
    return dsk, sum(range(1, width + 1))


def vm_hwm(pid: int) -> int:
    """Peak resident bytes of a live process (VmHWM), 0 if unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def graph_child(width: int) -> None:
    """Runs in a fresh driver process (``--graph-child``); prints one JSON line."""
    import psutil

    import lightray

    lightray.init(num_cpus=2)
    try:
        small, small_expected = make_graph(GRAPH_10K)
        assert lightray.get(small, "total") == small_expected
        times_10k = []
        for _ in range(3):
            t0 = time.perf_counter()
            result = lightray.get(small, "total")
            times_10k.append(time.perf_counter() - t0)
            assert result == small_expected
        del small
        t0 = time.perf_counter()
        dsk, expected = make_graph(width)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = lightray.get(dsk, "total")
        wide_s = time.perf_counter() - t0
        assert result == expected, (result, expected)
        agents, workers = [], []
        for child in psutil.Process().children(recursive=True):
            try:
                parent_is_agent = "lightray.agent" in " ".join(child.parent().cmdline())
            except psutil.Error:
                continue
            (workers if parent_is_agent else agents).append(vm_hwm(child.pid))
        out = {"width": width, "tasks": width + width // FANOUT + 1, "build_s": build_s,
               "graph_10k_s": statistics.median(times_10k), "graph_10k_runs": times_10k,
               "wide_s": wide_s,
               "driver_peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
               "agent_peak_rss": max(agents, default=0),
               "worker_peak_rss": max(workers, default=0)}
    finally:
        lightray.shutdown()
    print("@@SCALE_GRAPH " + json.dumps(out), flush=True)


def run_graph(width: int, timeout: float) -> dict:
    log(f"graph: width {width:,} (fresh driver) ...")
    proc = subprocess.run([sys.executable, SCRIPT, "--graph-child", str(width)],
                          capture_output=True, text=True, env=harness.child_env(),
                          timeout=timeout, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("@@SCALE_GRAPH "):
            res = json.loads(line.split(" ", 1)[1])
            res["linearity"] = res["wide_s"] / (res["graph_10k_s"] * width / GRAPH_10K)
            return res
    return {"error": harness.tail(proc.stderr or proc.stdout)}


def render_graph(res: dict) -> str:
    if "error" in res:
        return f"graph: error: {res['error']}"
    gib = 2 ** 30
    rows = [["graph_10k s (median of 3)", f"{res['graph_10k_s']:.3f}"],
            [f"graph of {res['tasks']:,} tasks s", f"{res['wide_s']:.2f}"],
            ["time / (graph_10k x width/10k)", f"{res['linearity']:.2f}"],
            ["building the dict s (untimed above)", f"{res['build_s']:.2f}"],
            ["driver peak RSS GiB", f"{res['driver_peak_rss'] / gib:.2f}"],
            ["agent peak RSS GiB", f"{res['agent_peak_rss'] / gib:.2f}"],
            ["largest worker peak RSS GiB", f"{res['worker_peak_rss'] / gib:.2f}"]]
    return harness.markdown_table([["graph", "value"]] + rows, [1])


# --------------------------------------------------------------- agents part

class Agent:
    """One ``python -m lightray.agent`` process, its output in a file."""

    def __init__(self, args: list, num_cpus: int, log_path: str):
        self.log_path = log_path
        with open(log_path, "w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lightray.agent", "--num-cpus", str(num_cpus),
                 "--object-store-memory", str(256 * 2**20)] + args,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=harness.child_env())
        self.address = None

    def wait_listening(self) -> str:
        deadline = time.monotonic() + AGENT_START_TIMEOUT
        while time.monotonic() < deadline:
            with open(self.log_path) as f:
                for line in f:
                    words = line.split()
                    if words[:2] == ["lightray", "agent"] and "listening" in words:
                        self.address = words[-1]
                        return self.address
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        with open(self.log_path) as f:
            raise RuntimeError(f"lightray agent did not start: {harness.tail(f.read())}")

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def run_agents(count: int, settle: float, window: float) -> dict:
    import lightray

    log(f"agents: {count} ...")
    temp_dir = tempfile.mkdtemp(prefix="lightray-scale-bench-")
    os.environ["LIGHTRAY_TEMP_DIR"] = temp_dir
    agents = []
    try:
        head = Agent(["--head", "--port", "0"], 2, os.path.join(temp_dir, "head.log"))
        agents.append(head)
        head.wait_listening()
        t0 = time.perf_counter()
        for k in range(1, count):
            agents.append(Agent(["--address", head.address], 2 if k == 1 else 0,
                                os.path.join(temp_dir, f"agent{k}.log")))
        lightray.init(address=head.address)
        try:
            deadline = time.monotonic() + JOIN_TIMEOUT
            while True:
                alive = sum(1 for n in lightray.nodes() if n["alive"])
                if alive >= count:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{alive} of {count} agents joined in {JOIN_TIMEOUT:.0f} s")
                time.sleep(0.02)
            join_s = time.perf_counter() - t0
        finally:
            lightray.shutdown()
        time.sleep(settle)
        before = [a.cpu_seconds() for a in agents]
        t1 = time.perf_counter()
        time.sleep(window)
        elapsed = time.perf_counter() - t1
        shares = [100.0 * (a.cpu_seconds() - b) / elapsed for a, b in zip(agents, before)]
        return {"agents": count, "join_s": join_s, "head_pct": shares[0],
                "mean_pct": statistics.mean(shares[1:]), "max_pct": max(shares[1:]),
                "pcts": shares}
    finally:
        for agent in reversed(agents):
            agent.stop()
        subprocess.run([sys.executable, "-c",
                        "from lightray.agent.session import reclaim_dead_sessions as r; r()"],
                       env=harness.child_env(), check=False)
        del os.environ["LIGHTRAY_TEMP_DIR"]
        shutil.rmtree(temp_dir, ignore_errors=True)


def render_agents(results: list) -> str:
    ok = [r for r in results if "error" not in r]
    base = ok[0] if ok else None
    rows = []
    for r in results:
        if "error" in r:
            rows.append([str(r["agents"]), "error: " + r["error"][:60], "", "", "", "", ""])
            continue
        growth = base["agents"]
        rows.append([str(r["agents"]), f"{r['join_s']:.2f}",
                     f"{r['join_s'] / base['join_s']:.2f}x", f"{r['mean_pct']:.2f}",
                     f"{r['max_pct']:.2f}", f"{r['head_pct']:.2f}",
                     f"{r['mean_pct'] / base['mean_pct']:.2f}x (agents {r['agents'] / growth:g}x)"
                     if base["mean_pct"] else "-"])
    return harness.markdown_table(
        [["agents", "join s", "join growth", "% core/agent (mean)", "max", "head",
          "cpu growth"]] + rows, range(7))


# ------------------------------------------------------------ placement part

def simulate(nodes: int, tasks: int, strategy, seed: int = 0) -> dict:
    from lightray.resources import CPU
    from lightray.scheduling import NodeView, choose_node, to_units

    rng = random.Random(seed)
    units = to_units({CPU: 1})
    total = to_units({CPU: SIM_CPUS})
    views = [NodeView(f"node-{i:05d}", "", dict(total)) for i in range(nodes)]
    by_id = {v.node_id: v for v in views}
    peers = [[v for v in views if v is not local] for local in views]
    mean_length = SIM_BUSY * nodes * SIM_CPUS   # decisions a task lasts, on average
    ends = []                                   # (decision number, node)
    busy_samples = []
    placed = dict.fromkeys(by_id, 0)
    spent = 0.0
    clock = time.perf_counter
    for k in range(tasks):
        while ends and ends[0][0] <= k:
            view = by_id[heapq.heappop(ends)[1]]
            view.available[CPU] += units[CPU]
        origin = rng.randrange(nodes)
        t0 = clock()
        node_id, _ = choose_node(units, strategy, views[origin], peers[origin], {}, k)
        spent += clock() - t0
        view = by_id[node_id]
        if view.fits(units):
            view.available[CPU] -= units[CPU]
            heapq.heappush(ends, (k + 1 + int(rng.expovariate(1.0) * mean_length), node_id))
        placed[node_id] += 1
        if k % SAMPLE_EVERY == SAMPLE_EVERY - 1:
            busy_samples.extend((total[CPU] - v.available[CPU]) / units[CPU] for v in views)
    counts = list(placed.values())
    return {"nodes": nodes, "tasks": tasks, "strategy": strategy or "DEFAULT",
            "decisions_per_s": tasks / spent, "us_per_decision": 1e6 * spent / tasks,
            "busy_mean": statistics.mean(busy_samples) if busy_samples else 0.0,
            "busy_stdev": statistics.pstdev(busy_samples) if busy_samples else 0.0,
            "busy_max": max(busy_samples, default=0.0),
            "placed_min": min(counts), "placed_max": max(counts),
            "placed_stdev": statistics.pstdev(counts)}


def render_placement(results: list) -> str:
    rows = [[r["strategy"], f"{r['nodes']:,}", f"{r['tasks']:,}",
             f"{r['decisions_per_s']:,.0f}", f"{r['us_per_decision']:.1f}",
             f"{r['busy_mean']:.2f} / {SIM_CPUS}", f"{r['busy_stdev']:.2f}",
             f"{r['busy_max']:.0f}", f"{r['placed_min']:,}-{r['placed_max']:,}"]
            for r in results]
    return harness.markdown_table(
        [["strategy", "nodes", "tasks", "decisions/s", "us/decision", "busy CPUs/node (mean)",
          "stdev", "max", "tasks per node min-max"]] + rows, range(1, 9))


# ---------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--parts", default="graph,agents,placement",
                   help="comma-separated subset of graph, agents, placement")
    p.add_argument("--graph-width", type=int, default=100_000,
                   help="independent tasks of the wide graph (default 100,000; "
                        "graph_1M: 1000000)")
    p.add_argument("--agents", default="4,8,16,32", help="agent counts (default 4,8,16,32)")
    p.add_argument("--settle", type=float, default=3.0,
                   help="seconds between joining and measuring CPU (default 3)")
    p.add_argument("--cpu-window", type=float, default=5.0,
                   help="seconds of idle CPU measured per count (default 5)")
    p.add_argument("--sim-nodes", type=int, default=1000, help="simulated nodes (default 1,000)")
    p.add_argument("--sim-tasks", type=int, default=20_000,
                   help="simulated tasks (default 20,000; the issue's size: 1000000)")
    p.add_argument("--timeout", type=float, default=1800.0,
                   help="seconds for the graph part's driver (default 1800)")
    p.add_argument("--json", metavar="PATH", help="write results as JSON")
    p.add_argument("--graph-child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("graph_width", "sim_nodes", "sim_tasks"):
        if getattr(args, name) < FANOUT:
            p.error(f"--{name.replace('_', '-')} must be at least {FANOUT}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.graph_child is not None:
        graph_child(args.graph_child)
        return 0
    parts = harness.parse_list(args.parts, ["graph", "agents", "placement"], "part")
    try:
        counts = [int(c) for c in args.agents.split(",") if c.strip()]
    except ValueError:
        sys.exit(f"--agents: a comma-separated list of counts, got {args.agents!r}")
    if any(c < 2 for c in counts):
        sys.exit("--agents: each count must be at least 2")
    out = {"machine": harness.machine_info([]), "load_before": os.getloadavg()}
    print(harness.describe_machine(out["machine"], {}))
    if "graph" in parts:
        out["graph"] = run_graph(args.graph_width, args.timeout)
        print(render_graph(out["graph"]))
        print()
    if "agents" in parts:
        out["agents"] = []
        for count in counts:
            try:
                out["agents"].append(run_agents(count, args.settle, args.cpu_window))
            except (RuntimeError, TimeoutError, OSError) as error:
                out["agents"].append({"agents": count, "error": str(error)})
        print(render_agents(out["agents"]))
        print()
    if "placement" in parts:
        out["placement"] = []
        sizes = sorted({10, 100, args.sim_nodes})
        for strategy in (None, "SPREAD"):
            for nodes in sizes:
                tasks = args.sim_tasks if nodes == args.sim_nodes else min(args.sim_tasks, 100_000)
                log(f"placement: {strategy or 'DEFAULT'} over {nodes} nodes, {tasks:,} tasks ...")
                out["placement"].append(simulate(nodes, tasks, strategy))
        print(render_placement(out["placement"]))
    out["load_after"] = os.getloadavg()
    print(f"load average before {out['load_before'][0]:.2f}, after {out['load_after'][0]:.2f}")
    if args.json:
        harness.write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
