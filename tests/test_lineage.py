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


# ------------------- a rerun forwarded to a node that knew the lost result (state, no sockets)

DRIVER = b"driver01"
ORIGIN = "origin00"     # the owner's node, which sends the rerun here


def _agent_with_a_worker():
    from lightray.agent.state import AgentState
    from lightray.scheduling import NodeView
    agent = AgentState(node_id="node0000", session="s", resources={"CPU": 1.0},
                       pipeline_depth=1, max_workers=1, store_capacity=1 << 30)
    agent.on_hello(DRIVER, "driver", 1, "")
    agent.initial_workers(1)
    (worker_id,) = agent.effects.spawn
    agent.on_spawned(worker_id, 100)
    agent.on_hello(worker_id.encode(), "worker", 100, worker_id)
    agent.take_instructions()
    # The owner's node, as a live peer (with no room: nothing is sent to it to run).
    agent.forwarding.peers[ORIGIN] = NodeView(ORIGIN, "127.0.0.1:1", {})
    return agent, worker_id.encode()


def _forward_spec(index):
    from lightray import task_spec as ts
    return ts.new_task_spec(index.to_bytes(14, "big"), b"f" * 16, "make", None, [], [],
                            num_returns=1, resources={"CPU": 1.0}, max_retries=3,
                            retry_exceptions=False)


def _results_sent(agent, node_id):
    from lightray.transport import messages as m
    return [op for op in agent.effects.peer_outbox.get(node_id, []) if op[0] == m.RESULT]


def _knew_it_remote(entry):
    from lightray.serialization import SHARED
    from lightray.states import REMOTE
    entry.payload = (SHARED, ("lr_s_" + "ab" * 16, 1 << 20, 10, ()))
    entry.spill = REMOTE
    entry.location = "deadnode"
    entry.remote_name = "lr_s_" + "ab" * 16


def _knew_it_lost(entry):
    from lightray import exceptions, serialization
    from lightray.serialization import ERROR
    lost = exceptions.ObjectLostError("its only copy was on node deadnode, which died")
    entry.payload = (ERROR, serialization.dumps_exception(lost))


@pytest.mark.parametrize("knew", [_knew_it_remote, _knew_it_lost],
                         ids=["its REMOTE descriptor", "the ObjectLostError it failed with"])
def test_a_rerun_forwarded_to_a_node_that_knew_the_lost_result_makes_it_again_there(knew):
    from lightray.agent.records import ObjectEntry
    from lightray.serialization import INLINE
    from lightray.transport import messages as m
    agent, worker = _agent_with_a_worker()
    spec = _forward_spec(7)
    result = _result(7)
    entry = agent.objects[result] = ObjectEntry(1)   # what this node knew of the lost result
    entry.pending = False
    knew(entry)

    agent.forwarding.on_forward(ORIGIN, spec, b"pickled function", [])
    agent.turn()
    assert agent.objects[result].pending, "the stale entry was kept instead of made again"
    assert _results_sent(agent, ORIGIN) == [], "the stale entry was reported to the owner"
    execs = [op for ops in agent.effects.outbox.values() for op in ops if op[0] == m.EXEC]
    assert [op[1][0] for op in execs] == [spec[0]], "the rerun did not run here"
    agent.take_instructions()

    agent.handle(worker, [(m.DONE, spec[0], [(INLINE, b"made again")], [[]], False)])
    agent.turn()
    (sent,) = _results_sent(agent, ORIGIN)
    assert (INLINE, b"made again") in [item for item in _flatten(sent)], sent


def _flatten(value):
    if isinstance(value, (list, tuple)):
        yield value
        for inner in value:
            yield from _flatten(inner)


def test_set_ready_does_not_free_twice_an_entry_that_waking_its_waiting_task_freed():
    """A fails; B, the only thing still holding A's result, is failed by it and
    lets go of it: the entry is freed once (a second free raised KeyError,
    and for a segment gave its bytes back twice)."""
    from lightray import serialization
    from lightray import task_spec as ts
    from lightray.serialization import ERROR
    from lightray.transport import messages as m
    agent, worker = _agent_with_a_worker()
    a = ts.new_task_spec(b"a" * 14, b"f" * 16, "a", None, [], [], num_returns=1,
                         resources={"CPU": 1.0}, max_retries=0, retry_exceptions=False)
    b = ts.new_task_spec(b"b" * 14, b"f" * 16, "b", None, [b"a" * 14 + b"\0\0"], [],
                         num_returns=1, resources={"CPU": 1.0}, max_retries=0,
                         retry_exceptions=False)
    agent.handle(DRIVER, [(m.EXPORT, b"f" * 16, b"pickled function"),
                          (m.SUBMIT, a), (m.SUBMIT, b)])
    agent.turn()
    a_result = b"a" * 14 + b"\0\0"
    agent.handle(DRIVER, [(m.DEC, [a_result])])        # only B holds it now
    agent.turn()
    assert agent.objects[a_result].refs == 1 and agent.objects[a_result].waiting_tasks
    error = (ERROR, serialization.dumps_exception(ValueError("a failed")))
    agent.handle(worker, [(m.DONE, a[0], [error], [[]], False)])
    agent.turn()
    assert a_result not in agent.objects
    b_entry = agent.objects[b"b" * 14 + b"\0\0"]
    assert b_entry.payload[0] == ERROR and b"a failed" in b_entry.payload[1]
