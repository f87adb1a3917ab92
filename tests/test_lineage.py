"""Lineage reconstruction: objects whose only copy was on a SIGKILLed node are
made again by their owner (three real agents on 127.0.0.1, 1 CPU each)."""
import os

import numpy as np
import pytest

import lightray
from lightray import NodeAffinity, exceptions
from conftest import wait_for

pytestmark = pytest.mark.timeout(180)

SIZE = 1 << 18          # 256 KiB: results live in shared memory on the node that made them


def runs(path) -> int:
    """How many times the tasks counting into path ran."""
    return len(open(path).read().split()) if os.path.exists(path) else 0


def count(path) -> None:
    with open(path, "a") as f:
        f.write("x\n")


@lightray.remote
def source(path, value):
    count(path)
    return np.full(SIZE, value, dtype=np.uint8)


@lightray.remote
def add_one(path, array):
    count(path)
    return array + 1


@lightray.remote
def total(array):
    return int(array.sum(dtype=np.uint64))


def on(node, soft=True):
    return NodeAffinity(node.node_id, soft=soft)


def kill_and_wait(cluster, victim):
    cluster.kill(victim)
    assert wait_for(lambda: not {n["node_id"]: n for n in lightray.nodes()}[victim.node_id]
                    ["alive"], timeout=15, interval=0.05)


def test_a_pipeline_whose_intermediate_was_only_on_a_killed_node_is_rebuilt(cluster, tmp_path):
    victim = cluster.nodes[1]
    first, second = tmp_path / "first", tmp_path / "second"
    a = source.options(scheduling_strategy=on(victim)).remote(str(first), 1)
    b = add_one.options(scheduling_strategy=on(victim)).remote(str(second), a)
    lightray.wait([b], timeout=60)
    assert (runs(first), runs(second)) == (1, 1)
    kill_and_wait(cluster, victim)
    # The third stage needs b, whose only copy died; so does the driver's get of a.
    assert lightray.get(total.remote(b), timeout=60) == 2 * SIZE
    assert int(lightray.get(a, timeout=60).sum(dtype=np.uint64)) == SIZE
    assert (runs(first), runs(second)) == (2, 2)


def test_a_chain_of_45_links_all_lost_with_their_node_is_rebuilt(cluster, tmp_path):
    victim = cluster.nodes[2]
    counter = tmp_path / "links"
    ref = source.options(scheduling_strategy=on(victim)).remote(str(counter), 0)
    for _ in range(44):       # the driver keeps only the last link
        ref = add_one.options(scheduling_strategy=on(victim)).remote(str(counter), ref)
    lightray.wait([ref], timeout=120)
    assert runs(counter) == 45
    kill_and_wait(cluster, victim)
    value = lightray.get(ref, timeout=120)
    assert value[0] == 44 and int(value.sum(dtype=np.uint64)) == 44 * SIZE
    assert runs(counter) == 90


def test_an_object_whose_task_has_no_retries_left_is_lost_naming_why(cluster, tmp_path):
    victim = cluster.nodes[1]
    ref = source.options(scheduling_strategy=on(victim), max_retries=0).remote(
        str(tmp_path / "n"), 1)
    lightray.wait([ref], timeout=60)
    kill_and_wait(cluster, victim)
    with pytest.raises(exceptions.ObjectLostError) as lost:
        lightray.get(ref, timeout=5)
    message = str(lost.value)
    assert ref.hex() in message and victim.node_id in message
    assert "no retries left (max_retries=0)" in message


def test_an_object_of_a_task_pinned_to_the_killed_node_is_lost_naming_why(cluster, tmp_path):
    victim = cluster.nodes[1]
    ref = source.options(scheduling_strategy=on(victim, soft=False)).remote(
        str(tmp_path / "n"), 1)
    lightray.wait([ref], timeout=60)
    kill_and_wait(cluster, victim)
    with pytest.raises(exceptions.ObjectLostError, match=f"pinned to node {victim.node_id}"):
        lightray.get(ref, timeout=5)


@lightray.remote
def put_there(value):
    return [lightray.put(np.full(SIZE, value, dtype=np.uint8))]


def test_a_put_object_owned_by_a_killed_node_raises_owner_died_naming_it(cluster):
    victim = cluster.nodes[2]
    [inner] = lightray.get(put_there.options(scheduling_strategy=on(victim)).remote(3),
                           timeout=60)
    assert int(lightray.get(inner, timeout=60)[0]) == 3
    del inner
    [inner] = lightray.get(put_there.options(scheduling_strategy=on(victim)).remote(4),
                           timeout=60)
    kill_and_wait(cluster, victim)
    with pytest.raises(exceptions.OwnerDiedError) as lost:
        lightray.get(inner, timeout=5)
    assert isinstance(lost.value, exceptions.ObjectLostError)
    assert inner.hex() in str(lost.value) and f"owner, node {victim.node_id}" in str(lost.value)


def test_a_task_waiting_on_a_rebuilt_argument_runs_once_it_is_back(cluster, tmp_path):
    victim, other = cluster.nodes[1], cluster.nodes[2]
    counter = tmp_path / "made"
    made = source.options(scheduling_strategy=on(victim)).remote(str(counter), 5)
    lightray.wait([made], timeout=60)
    kill_and_wait(cluster, victim)
    # Sent to the third node, which must not read the argument from the dead one.
    result = total.options(scheduling_strategy=on(other)).remote(made)
    assert lightray.get(result, timeout=60) == 5 * SIZE
    assert runs(counter) == 2
