"""Recursive cancel: a task and everything it submitted stop, on every node,
and give their resources back; cancelled tasks are never retried."""
import os
import time

import pytest

import lightray
from lightray import NodeAffinity, exceptions
from conftest import wait_for

pytestmark = pytest.mark.timeout(180)


def started(path) -> int:
    return len(os.listdir(path))


@lightray.remote
def leaf(path, name):
    open(os.path.join(path, name), "w").close()
    time.sleep(120)


@lightray.remote
def spread_tree(path, node_ids):
    refs = [leaf.options(scheduling_strategy=NodeAffinity(node, soft=False)).remote(
        path, f"{node}-{i}") for node in node_ids for i in range(2)]
    lightray.get(refs)


@lightray.remote
def local_tree(path):
    lightray.get([leaf.remote(path, f"leaf-{i}") for i in range(3)])


@lightray.remote
def noop():
    return 1


def all_cpus_free():
    return lightray.available_resources().get("CPU") == lightray.cluster_resources()["CPU"]


def test_cancelling_a_tree_over_two_nodes_leaves_no_task_running(cluster, tmp_path):
    first, second = cluster.nodes[1], cluster.nodes[2]
    root = spread_tree.options(scheduling_strategy=NodeAffinity(first.node_id)).remote(
        str(tmp_path), [first.node_id, second.node_id])
    # One leaf runs on each node (1 CPU each); the other waits there.
    assert wait_for(lambda: started(tmp_path) == 2, timeout=60)
    lightray.cancel(root)
    with pytest.raises(exceptions.TaskCancelledError):
        lightray.get(root, timeout=60)
    assert wait_for(all_cpus_free, timeout=60)
    assert started(tmp_path) == 2      # the queued leaves never ran, none ran again
    assert sorted(n.split("-")[0] for n in os.listdir(tmp_path)) == sorted(
        [first.node_id, second.node_id])


@lightray.remote
def gated_leaf(path, name, gate):
    deadline = time.monotonic() + 60
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.02)
    open(os.path.join(path, name), "w").close()


@lightray.remote
def gated_tree(path, gate, node_id):
    refs = [gated_leaf.options(scheduling_strategy=NodeAffinity(node_id)).remote(
        path, f"done-{i}", gate) for i in range(2)]
    open(os.path.join(path, "submitted"), "w").close()
    lightray.get(refs)


def test_a_non_recursive_cancel_leaves_the_children_running(cluster, tmp_path):
    first, second = cluster.nodes[1], cluster.nodes[2]
    done, gate = tmp_path / "done", tmp_path / "gate"
    done.mkdir()
    root = gated_tree.options(scheduling_strategy=NodeAffinity(first.node_id)).remote(
        str(done), str(gate), second.node_id)
    assert wait_for(lambda: (done / "submitted").exists(), timeout=60)
    lightray.cancel(root, recursive=False)
    with pytest.raises(exceptions.TaskCancelledError):
        lightray.get(root, timeout=60)
    gate.touch()
    assert wait_for(lambda: started(done) == 3, timeout=60)   # both children finished
    assert wait_for(all_cpus_free, timeout=60)


def test_cancelling_a_tree_started_on_a_leased_worker_cancels_its_children(runtime, tmp_path):
    # No refs in the arguments and a lease held from the tasks before: the
    # driver sends the root straight to the worker, whose task the agent never sees.
    for _ in range(3):
        assert lightray.get(noop.remote(), timeout=60) == 1
    root = local_tree.remote(str(tmp_path))
    assert wait_for(lambda: started(tmp_path) >= 1, timeout=60)
    lightray.cancel(root, force=True)
    with pytest.raises((exceptions.TaskCancelledError, exceptions.WorkerCrashedError)):
        lightray.get(root, timeout=60)
    assert wait_for(all_cpus_free, timeout=60)
    assert started(tmp_path) <= 2        # the third leaf never ran


def test_cancel_rejects_a_force_that_is_not_a_bool(runtime):
    ref = lightray.put(1)
    with pytest.raises(TypeError, match="bools"):
        lightray.cancel(ref, force="yes")
