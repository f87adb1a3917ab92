"""A node SIGKILLed: its tasks run again elsewhere, its actors restart elsewhere
(three real agents on 127.0.0.1, 1 CPU each)."""
import os
import time

import pytest

import lightray
from lightray import NodeAffinity, exceptions
from conftest import wait_for

pytestmark = pytest.mark.timeout(180)


def runs(path) -> int:
    return len(open(path).read().split()) if os.path.exists(path) else 0


def count(path) -> None:
    with open(path, "a") as f:
        f.write(lightray.get_runtime_context().node_id + "\n")


def kill_and_wait(cluster, victim):
    cluster.kill(victim)
    assert wait_for(lambda: not {n["node_id"]: n for n in lightray.nodes()}[victim.node_id]
                    ["alive"], timeout=15, interval=0.05)


@lightray.remote
def slow_on(victim_id, path, index):
    count(path)
    if lightray.get_runtime_context().node_id == victim_id:
        time.sleep(120)          # killed before it ends
    return index


def test_running_and_queued_tasks_of_a_killed_node_run_elsewhere_counted(cluster, tmp_path):
    victim = cluster.nodes[1]
    path = tmp_path / "runs"
    refs = [slow_on.options(scheduling_strategy=NodeAffinity(victim.node_id, soft=True))
            .remote(victim.node_id, str(path), i) for i in range(4)]
    assert wait_for(lambda: runs(path) >= 1, timeout=60)   # one runs, three wait there
    kill_and_wait(cluster, victim)
    assert lightray.get(refs, timeout=120) == [0, 1, 2, 3]
    nodes = open(path).read().split()
    assert victim.node_id in nodes
    assert len([n for n in nodes if n != victim.node_id]) == 4   # each ran once elsewhere


def test_a_task_with_no_retries_left_on_a_killed_node_fails_naming_it(cluster, tmp_path):
    victim = cluster.nodes[1]
    path = tmp_path / "runs"
    ref = slow_on.options(scheduling_strategy=NodeAffinity(victim.node_id, soft=True),
                          max_retries=0).remote(victim.node_id, str(path), 0)
    assert wait_for(lambda: runs(path) >= 1, timeout=60)
    kill_and_wait(cluster, victim)
    with pytest.raises(exceptions.WorkerCrashedError, match=victim.node_id):
        lightray.get(ref, timeout=30)


@lightray.remote
class Recorder:
    def __init__(self, path):
        count(path)
        self.calls = 0

    def where(self):
        self.calls += 1
        return lightray.get_runtime_context().node_id


def test_an_actor_on_a_killed_node_restarts_on_another_and_answers(cluster, tmp_path):
    victim = cluster.nodes[2]
    path = tmp_path / "constructed"
    actor = Recorder.options(max_restarts=1, max_task_retries=1,
                             scheduling_strategy=NodeAffinity(victim.node_id, soft=True)
                             ).remote(str(path))
    assert lightray.get(actor.where.remote(), timeout=60) == victim.node_id
    kill_and_wait(cluster, victim)
    where = lightray.get(actor.where.remote(), timeout=60)
    assert where != victim.node_id
    assert where in {cluster.nodes[0].node_id, cluster.nodes[1].node_id}
    assert runs(path) == 2


def test_an_actor_without_restarts_on_a_killed_node_dies_naming_it(cluster, tmp_path):
    victim = cluster.nodes[2]
    actor = Recorder.options(scheduling_strategy=NodeAffinity(victim.node_id, soft=True)
                             ).remote(str(tmp_path / "constructed"))
    assert lightray.get(actor.where.remote(), timeout=60) == victim.node_id
    kill_and_wait(cluster, victim)
    with pytest.raises(exceptions.ActorDiedError, match=victim.node_id):
        lightray.get(actor.where.remote(), timeout=30)


@lightray.remote
def gated_value(gate, value):
    deadline = time.monotonic() + 60
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.02)
    import numpy as np
    return np.full(1 << 18, value, dtype=np.uint8)


@lightray.remote
def read_nested(box):
    return int(lightray.get(box[0], timeout=60).sum())


@lightray.remote
def make_nested(gate, value):
    return [gated_value.remote(gate, value)]


def test_a_ref_nested_in_an_argument_need_not_be_ready_when_its_task_is_sent(cluster, tmp_path):
    gate = tmp_path / "gate"
    pending = gated_value.options(
        scheduling_strategy=NodeAffinity(cluster.nodes[1].node_id)).remote(str(gate), 7)
    reader = read_nested.options(
        scheduling_strategy=NodeAffinity(cluster.nodes[2].node_id)).remote([pending])
    gate.touch()
    assert lightray.get(reader, timeout=60) == 7 << 18


def test_a_ref_nested_in_a_result_need_not_be_ready_when_the_result_is_sent(cluster, tmp_path):
    gate = tmp_path / "gate"
    [inner] = lightray.get(make_nested.options(
        scheduling_strategy=NodeAffinity(cluster.nodes[1].node_id)).remote(str(gate), 9),
        timeout=60)
    gate.touch()
    assert int(lightray.get(inner, timeout=60).sum()) == 9 << 18
