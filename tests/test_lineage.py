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
    # Larger than a pull chunk: a ref to it inside a result is not pushed along.
    return [lightray.put(np.full(4 << 20, value, dtype=np.uint8))]


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


def test_an_object_whose_lineage_was_evicted_is_lost_naming_why(own_cluster, tmp_path):
    # A limit below one record's size: every record is evicted at once.
    own_cluster.add_node(head=True, env={"LIGHTRAY_LINEAGE_BYTES": "1"})
    victim = own_cluster.add_node()
    lightray.init(address=own_cluster.head.address)
    own_cluster.wait_for_nodes(2)
    ref = source.options(scheduling_strategy=on(victim)).remote(str(tmp_path / "n"), 1)
    lightray.wait([ref], timeout=60)
    kill_and_wait(own_cluster, victim)
    with pytest.raises(exceptions.ObjectLostError, match="lineage was evicted"):
        lightray.get(ref, timeout=5)


# ------------------------------------------------ the bookkeeping, without sockets


def _book(limit):
    from lightray.agent.lineage import LineageBook
    from lightray.states import Transitions
    return LineageBook(Transitions(), objects={}, tasks={}, directory=None, limit=limit,
                       submit=None, await_deps=None, end_pull=None, hand_back=None)


def _task(index, deps=(), args=b""):
    from lightray import task_spec as ts
    from lightray.agent.records import Task
    task_id = index.to_bytes(14, "big")
    return Task(ts.new_task_spec(task_id, b"f", "f", args, list(deps), [], num_returns=1,
                                 resources={}, max_retries=3, retry_exceptions=False), b"")


def _result(index):
    return index.to_bytes(14, "big") + b"\x00\x00"


def test_a_record_lives_while_its_result_or_a_dependent_record_does():
    book = _book(1 << 20)
    book.record(_task(1))
    book.record(_task(2, deps=[_result(1)]))
    book.released(_result(1))               # 1's result freed: 2's record still needs it
    assert set(book.records) == {_task(1).task_id, _task(2).task_id}
    book.released(_result(2))               # nothing left that could need either
    assert not book.records and book.bytes == 0


def test_dropping_a_100000_link_chain_does_not_recurse():
    book = _book(1 << 40)
    book.record(_task(1))
    for i in range(2, 100_001):
        book.record(_task(i, deps=[_result(i - 1)]))
        book.released(_result(i - 1))
    book.released(_result(100_000))
    assert not book.records and book.bytes == 0


def test_past_the_limit_the_oldest_records_go_first_and_are_remembered():
    from lightray.agent.lineage import RECORD_BYTES
    book = _book(3 * (RECORD_BYTES + 100))
    for i in range(1, 6):
        book.record(_task(i, args=b"x" * 100))
    assert [int.from_bytes(t, "big") for t in book.records] == [3, 4, 5]
    assert set(book.evicted) == {_task(1).task_id, _task(2).task_id}
    assert "evicted" in book._why_not(_result(1), None, "node")


def test_lineage_off_keeps_no_records():
    book = _book(0)
    book.record(_task(1))
    assert not book.records
    assert "LIGHTRAY_LINEAGE_BYTES=0" in book._why_not(_result(1), None, "node")


def test_a_bad_lineage_limit_is_refused(monkeypatch):
    from lightray import config
    monkeypatch.setenv("LIGHTRAY_LINEAGE_BYTES", "-1")
    with pytest.raises(ValueError, match="LIGHTRAY_LINEAGE_BYTES"):
        config.lineage_bytes()
