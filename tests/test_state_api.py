"""lightray.state and `lightray list` / `lightray summary` against real agents.

Task rows come from every node's ring of task events; a worker reports its
runs within about half a second, so tests wait (with a timeout) until the
workload's tasks all show an end state before they compare.
"""
import json
import os
import signal
import subprocess
import sys
import warnings

import pytest
from conftest import wait_for

import lightray
import lightray.state as state

pytestmark = pytest.mark.timeout(120)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENDED = {"FINISHED", "FAILED", "CANCELLED"}


def run_cli(*args):
    env = dict(os.environ)
    env.pop("LIGHTRAY_ADDRESS", None)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "lightray.cli", *args], check=False,
                          capture_output=True, text=True, env=env, timeout=90, cwd=REPO_ROOT)


@lightray.remote
def succeed(i):
    return i


@lightray.remote
def fail(i):
    raise ValueError(f"failure {i}")


def on(node):
    return lightray.NodeAffinity(node.node_id)


def ended(task_ids):
    """The rows of these tasks once every one of them shows an end state, else None."""
    rows = {r["task_id"]: r for r in state.list_tasks(limit=100_000)}
    if all(t in rows and rows[t]["state"] in ENDED for t in task_ids):
        return rows
    return None


def run_mixed_workload(cluster):
    """On each of the 3 nodes: 2 tasks that succeed, 1 that fails.
    (task id -> node id) of the succeeding and of the failing ones."""
    good, bad = {}, {}
    refs = []
    for index, node in enumerate(cluster.nodes):
        for _ in range(2):
            ref = succeed.options(scheduling_strategy=on(node)).remote(index)
            good[ref.task_id()] = node.node_id
            refs.append(ref)
        ref = fail.options(scheduling_strategy=on(node)).remote(index)
        bad[ref.task_id()] = node.node_id
        refs.append(ref)
    ready, _ = lightray.wait(refs, num_returns=len(refs), timeout=60)
    assert len(ready) == len(refs)
    assert wait_for(lambda: ended(list(good) + list(bad)) is not None, timeout=30)
    return good, bad


def test_list_tasks_filtered_by_failed_is_exactly_the_failed_tasks_on_every_node(cluster):
    good, bad = run_mixed_workload(cluster)
    failed = state.list_tasks(filters=[("state", "=", "FAILED")])
    assert {row["task_id"]: row["node_id"] for row in failed} == bad
    for row in failed:
        assert row["name"] == "fail" and row["type"] == "NORMAL_TASK"
        assert "ValueError: failure" in row["error"]
        assert row["worker_pid"] > 0
        assert row["started_at"] <= row["finished_at"]
    others = state.list_tasks(filters=[("state", "!=", "failed")])   # any case for state
    assert {row["task_id"]: row["node_id"] for row in others} == good
    assert all(row["state"] == "FINISHED" and row["error"] is None for row in others)
    assert state.summarize_tasks() == {"succeed": {"FINISHED": 6}, "fail": {"FAILED": 3}}
    assert len(state.list_tasks(limit=4)) == 4


def test_lightray_list_json_agrees_with_the_python_api(cluster):
    _, bad = run_mixed_workload(cluster)
    result = run_cli("list", "tasks", "--filter", "state=FAILED", "--json",
                     "--address", cluster.head.address)
    assert result.returncode == 0, result.stderr
    from_cli = json.loads(result.stdout)
    assert from_cli == state.list_tasks(filters=[("state", "=", "FAILED")])
    assert {row["task_id"] for row in from_cli} == set(bad)
    table = run_cli("list", "tasks", "--filter", "state=FAILED",
                    "--address", cluster.head.address)
    assert table.returncode == 0, table.stderr
    assert sum(task_id in table.stdout for task_id in bad) == 3
    assert "3 tasks" in table.stdout
    summary = run_cli("summary", "tasks", "--json", "--address", cluster.head.address)
    assert json.loads(summary.stdout) == state.summarize_tasks()


def test_list_nodes_agrees_with_lightray_status_json(cluster):
    assert wait_for(lambda: all(n["store_capacity"] for n in lightray.nodes()))
    result = run_cli("status", "--json", "--address", cluster.head.address)
    assert result.returncode == 0, result.stderr
    status = {n["node_id"]: n for n in json.loads(result.stdout)}
    nodes = {n["node_id"]: n for n in state.list_nodes()}
    assert set(nodes) == set(status) == {n.node_id for n in cluster.nodes}
    for node_id, row in nodes.items():
        seen = status[node_id]
        assert row["address"] == seen["address"]
        assert row["is_head"] == seen["is_head"]
        assert row["state"] == "ALIVE" and seen["alive"]
        assert row["control_role"] == seen["control"]
        assert row["resources_total"] == seen["resources"] == {"CPU": 1.0}
        assert row["store_capacity"] == seen["store_capacity"]
        assert row["spilled_bytes"] == seen["spilled"]
        assert 0 < row["memory_used"] < row["memory_total"]
    result = run_cli("list", "nodes", "--json", "--filter", "is_head=True",
                     "--address", cluster.head.address)
    assert [n["node_id"] for n in json.loads(result.stdout)] == [cluster.head.node_id]


@lightray.remote
class Counter:
    def __init__(self):
        self.count = 0

    def add(self):
        self.count += 1
        return os.getpid()


def test_list_actors_shows_a_named_actor_on_its_node_and_its_calls(cluster):
    node = cluster.nodes[2]
    counter = Counter.options(name="counter", scheduling_strategy=on(node)).remote()
    pid = lightray.get(counter.add.remote(), timeout=60)
    call = counter.add.remote()
    assert lightray.get(call, timeout=60) == pid

    def actor_row():
        rows = state.list_actors(filters=[("name", "=", "counter")])
        return rows if rows and rows[0]["state"] == "ALIVE" else None
    assert wait_for(actor_row, timeout=30)
    [row] = actor_row()
    assert row["class_name"] == "Counter" and row["node_id"] == node.node_id
    assert row["pid"] == pid and row["namespace"] and row["restarts"] == 0
    assert wait_for(lambda: ended([call.task_id()]), timeout=30)
    [method] = [r for r in state.list_tasks(filters=[("type", "=", "ACTOR_TASK")])
                if r["task_id"] == call.task_id()]
    assert method["name"] == "Counter.add" and method["actor_id"] == row["actor_id"]
    assert method["node_id"] == node.node_id and method["worker_pid"] == pid
    lightray.kill(counter)
    assert wait_for(lambda: state.list_actors(filters=[("state", "=", "DEAD")]), timeout=30)
    [dead] = state.list_actors(filters=[("state", "=", "DEAD")])
    assert dead["actor_id"] == row["actor_id"] and dead["death_cause"]


def test_a_stopped_node_is_left_out_with_a_warning_not_waited_for(cluster):
    run_mixed_workload(cluster)
    stopped = cluster.nodes[1]
    os.kill(stopped.pid, signal.SIGSTOP)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rows = state.list_tasks()
        assert any(issubclass(w.category, state.StateWarning) and stopped.node_id in
                   str(w.message) for w in caught), [str(w.message) for w in caught]
        answered = {cluster.nodes[0].node_id, cluster.nodes[2].node_id}
        ran = [row for row in rows if row["node_id"] in answered and row["state"] in ENDED]
        assert len(ran) == 6    # 3 tasks on each node that answered
    finally:
        os.kill(stopped.pid, signal.SIGCONT)


def test_the_ring_keeps_only_the_newest_events(monkeypatch):
    monkeypatch.setenv("LIGHTRAY_TASK_EVENTS", "6")
    lightray.init(num_cpus=1)
    refs = []
    for i in range(12):
        refs.append(succeed.remote(i))
        assert lightray.get(refs[-1], timeout=30) == i
    last = refs[-1].task_id()
    assert wait_for(lambda: any(r["task_id"] == last and r["state"] == "FINISHED"
                                for r in state.list_tasks()), timeout=30)
    task_ids = [row["task_id"] for row in state.list_tasks()]
    assert refs[0].task_id() not in task_ids
    assert 1 <= len(task_ids) <= 6


def test_task_events_zero_records_nothing(monkeypatch):
    monkeypatch.setenv("LIGHTRAY_TASK_EVENTS", "0")
    lightray.init(num_cpus=1)
    assert lightray.get([succeed.remote(i) for i in range(5)], timeout=30) == list(range(5))
    lightray.get(succeed.remote(0), timeout=30)
    assert state.list_tasks() == []


def test_local_mode_says_the_state_api_needs_an_agent():
    lightray.init(local_mode=True)
    with pytest.raises(state.StateQueryError, match="local-mode"):
        state.list_tasks()


@pytest.mark.parametrize("call, problem", [
    (lambda: state.list_tasks(filters=[("colour", "=", "red")]), "unknown filter key 'colour'"),
    (lambda: state.list_tasks(filters=[("state", "<", "FAILED")]), "unknown filter operator '<'"),
    (lambda: state.list_actors(filters=[("state", "=")]), "a filter must be a"),
    (lambda: state.list_tasks(filters="state=FAILED"), "filters must be a list"),
    (lambda: state.list_objects(limit=0), "limit must be between 1"),
    (lambda: state.list_nodes(limit="10"), "limit must be an int"),
])
def test_bad_filters_and_limits_raise_value_error_naming_the_problem(call, problem):
    with pytest.raises(ValueError, match=problem):
        call()


def test_lightray_list_with_a_bad_filter_fails_with_one_line_not_a_traceback():
    for args, problem in [(("--filter", "colour=red"), "colour"),
                          (("--filter", "state"), "not KEY=VALUE"),
                          (("--limit", "0"), "limit")]:
        result = run_cli("list", "tasks", *args)
        assert result.returncode == 1
        assert problem in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_an_agent_keeps_only_well_formed_worker_events_and_peers_send_plain_rows():
    from lightray.observe.events import TaskEvents
    from lightray.observe.queries import check_reply
    from lightray.transport import messages as m
    events = TaskEvents("n1", 10)
    good = (1.0, "RUNNING", b"t" * 14, "f", "NORMAL_TASK", None, 123, None, [b"o" * 16])
    events.from_worker([good, (1.0, "RUNNING", "not bytes", None, None, None, 1, None, None),
                        (2.0, "EXPLODED", b"t" * 14, None, None, None, 1, None, None),
                        (3.0, "FINISHED", b"t" * 14, None, None, None, 1, object(), None),
                        ("x",), [1, 2]])
    assert events.recorded() == [good]
    [row] = events.task_rows()
    assert row[:6] == [(b"t" * 14).hex(), "f", "NORMAL_TASK", "RUNNING", "n1", 123]
    assert check_reply((m.STATE_REPLY, 1, [["a", 1, 2.5, None, True, ["x"]]])) is None
    assert "holds a bytes" in check_reply((m.STATE_REPLY, 1, [[b"pickled?"]]))
    assert "not a list" in check_reply((m.STATE_REPLY, 1, [("a",)]))
