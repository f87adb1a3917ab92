"""lightray.timeline and `lightray timeline`: a Chrome trace of a known workload on 3 agents."""
import json
import os
import subprocess
import sys

import pytest
from conftest import wait_for

import lightray
import lightray.state as state

pytestmark = pytest.mark.timeout(120)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@lightray.remote
def make(i):
    return i


@lightray.remote
def double(x):
    return 2 * x


def run_workload(cluster):
    """On each node: one make(); then double() of each on the next node.
    The task ids, and (producer, consumer) task id pairs."""
    nodes = cluster.nodes
    made = [make.options(scheduling_strategy=lightray.NodeAffinity(n.node_id)).remote(i)
            for i, n in enumerate(nodes)]
    doubled = [double.options(scheduling_strategy=lightray.NodeAffinity(
        nodes[(i + 1) % len(nodes)].node_id)).remote(ref) for i, ref in enumerate(made)]
    assert lightray.get(doubled, timeout=60) == [0, 2, 4]
    task_ids = [r.task_id() for r in made + doubled]

    def all_finished():
        rows = {r["task_id"]: r["state"] for r in state.list_tasks()}
        return all(rows.get(t) == "FINISHED" for t in task_ids)
    assert wait_for(all_finished, timeout=30)
    return task_ids, [(m.task_id(), d.task_id()) for m, d in zip(made, doubled)]


def check_trace(trace: dict, task_ids: list, cluster) -> list:
    """The X slices of a valid trace holding one slice per task of the workload."""
    events = trace["traceEvents"]
    slices = [e for e in events if e["ph"] == "X"]
    assert sorted(s["args"]["task_id"] for s in slices) == sorted(task_ids)
    processes = {e["pid"]: e["args"]["name"] for e in events
                 if e["ph"] == "M" and e["name"] == "process_name"}
    threads = {(e["pid"], e["tid"]) for e in events
               if e["ph"] == "M" and e["name"] == "thread_name"}
    assert sorted(processes.values()) == sorted(
        f"node {n.node_id}" + (" (head)" if n is cluster.head else "") for n in cluster.nodes)
    for piece in slices:
        assert piece["name"] in ("make", "double")
        assert piece["dur"] >= 0 and piece["ts"] > 0
        assert (piece["pid"], piece["tid"]) in threads
        assert processes[piece["pid"]] .startswith(f"node {piece['args']['node_id']}")
        assert piece["tid"] == piece["args"]["worker_pid"] > 0
    return slices


def test_timeline_is_a_chrome_trace_with_one_slice_per_task_and_dependency_arrows(
        cluster, tmp_path):
    task_ids, pairs = run_workload(cluster)
    path = tmp_path / "trace.json"
    returned = lightray.timeline(str(path))
    trace = json.loads(path.read_text())
    assert trace["traceEvents"] == returned
    slices = check_trace(trace, task_ids, cluster)
    by_task = {s["args"]["task_id"]: s for s in slices}
    # Each double() ran on the node after its make()'s, one track per node.
    for producer, consumer in pairs:
        assert by_task[producer]["pid"] != by_task[consumer]["pid"]
    starts = {e["id"]: e for e in returned if e["ph"] == "s"}
    ends = {e["id"]: e for e in returned if e["ph"] == "f"}
    assert set(starts) == set(ends) and len(starts) == len(pairs)
    arrows = set()
    for flow_id, start in starts.items():
        end = ends[flow_id]
        source = next(s for s in slices if (s["pid"], s["tid"]) == (start["pid"], start["tid"])
                      and s["ts"] <= start["ts"] <= s["ts"] + s["dur"])
        target = next(s for s in slices if (s["pid"], s["tid"]) == (end["pid"], end["tid"])
                      and s["ts"] == end["ts"])
        arrows.add((source["args"]["task_id"], target["args"]["task_id"]))
    assert arrows == set(pairs)


def test_lightray_timeline_writes_the_same_trace_from_the_shell(cluster, tmp_path):
    task_ids, _ = run_workload(cluster)
    path = tmp_path / "cli-trace.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-m", "lightray.cli", "timeline", "-o", str(path),
                             "--address", cluster.head.address], capture_output=True,
                            text=True, env=env, timeout=90, check=False)
    assert result.returncode == 0, result.stderr
    assert f"wrote {len(task_ids)} slice(s)" in result.stdout
    check_trace(json.loads(path.read_text()), task_ids, cluster)


def test_timeline_without_a_runtime_or_cluster_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTRAY_ADDRESS", "127.0.0.1:1")
    with pytest.raises(state.StateQueryError):
        lightray.timeline(str(tmp_path / "none.json"))
    assert not (tmp_path / "none.json").exists()
