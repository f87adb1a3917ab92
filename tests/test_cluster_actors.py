"""Actors across the nodes of a three-agent cluster."""
import os
import signal
import time

import numpy as np
import pytest

import lightray
from lightray import NodeAffinity, exceptions
from conftest import wait_for

pytestmark = pytest.mark.timeout(120)


@lightray.remote
class Counter:
    def __init__(self, start=0):
        self.value = start

    def add(self, amount):
        self.value += amount
        return self.value

    def node(self):
        return lightray.get_runtime_context().node_id

    def pid(self):
        return os.getpid()

    def total(self, array):
        return int(array.sum(dtype=np.uint64))

    def ones(self, size):
        return np.ones(size, dtype=np.uint8)


@lightray.remote
def call_from_task(counter, amount):
    return lightray.get(counter.add.remote(amount)), lightray.get_runtime_context().node_id


def test_an_actor_pinned_to_another_node_runs_there_and_keeps_state(cluster):
    b = cluster.nodes[1]
    counter = Counter.options(scheduling_strategy=NodeAffinity(b.node_id)).remote(10)
    assert lightray.get(counter.node.remote(), timeout=30) == b.node_id
    assert lightray.get([counter.add.remote(1) for _ in range(5)], timeout=30) == [11, 12, 13, 14, 15]


def test_large_arguments_and_results_cross_nodes_to_an_actor(cluster):
    counter = Counter.options(scheduling_strategy=NodeAffinity(cluster.nodes[2].node_id)).remote()
    data = np.arange(3 << 20, dtype=np.uint8)
    assert lightray.get(counter.total.remote(data), timeout=30) == int(data.sum(dtype=np.uint64))
    ref = lightray.put(data)
    assert lightray.get(counter.total.remote(ref), timeout=30) == int(data.sum(dtype=np.uint64))
    ones = lightray.get(counter.ones.remote(2 << 20), timeout=30)
    assert ones.nbytes == 2 << 20 and int(ones.sum()) == 2 << 20


def test_a_task_on_a_third_node_calls_an_actor_through_its_handle(cluster):
    b, c = cluster.nodes[1], cluster.nodes[2]
    counter = Counter.options(scheduling_strategy=NodeAffinity(b.node_id)).remote()
    lightray.get(counter.add.remote(1), timeout=30)
    value, node = lightray.get(call_from_task.options(
        scheduling_strategy=NodeAffinity(c.node_id)).remote(counter, 5), timeout=30)
    assert (value, node) == (6, c.node_id)
    assert lightray.get(counter.add.remote(0), timeout=30) == 6


def test_a_named_actor_is_found_from_a_driver_on_another_node(cluster):
    b, c = cluster.nodes[1], cluster.nodes[2]
    counter = Counter.options(name="shared", lifetime="detached",
                              scheduling_strategy=NodeAffinity(b.node_id)).remote()
    lightray.get(counter.add.remote(7), timeout=30)
    lightray.shutdown()
    lightray.init(address=c.address)
    found = lightray.get_actor("shared")
    assert lightray.get(found.add.remote(1), timeout=30) == 8
    assert lightray.get(found.node.remote(), timeout=30) == b.node_id
    lightray.kill(found)
    assert wait_for(lambda: _name_gone("shared"), timeout=10)


def test_killing_a_remote_actor_stops_its_process(cluster):
    counter = Counter.options(scheduling_strategy=NodeAffinity(cluster.nodes[1].node_id)).remote()
    pid = lightray.get(counter.pid.remote(), timeout=30)
    lightray.kill(counter)
    with pytest.raises(exceptions.ActorDiedError):
        lightray.get(counter.add.remote(1), timeout=30)
    assert wait_for(lambda: not _alive(pid), timeout=10)


def test_dropping_the_last_handle_stops_a_remote_actor(cluster):
    counter = Counter.options(scheduling_strategy=NodeAffinity(cluster.nodes[2].node_id)).remote()
    pid = lightray.get(counter.pid.remote(), timeout=30)
    del counter
    assert wait_for(lambda: not _alive(pid), timeout=10)


def test_a_remote_actor_restarts_on_its_node_after_its_process_dies(cluster):
    b = cluster.nodes[1]
    counter = Counter.options(scheduling_strategy=NodeAffinity(b.node_id),
                              max_restarts=1).remote()
    pid = lightray.get(counter.pid.remote(), timeout=30)
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: _new_pid(counter, pid), timeout=30)
    assert lightray.get(counter.node.remote(), timeout=30) == b.node_id


def test_an_actor_on_a_killed_node_is_dead_for_its_callers(cluster):
    victim = cluster.nodes[2]
    counter = Counter.options(scheduling_strategy=NodeAffinity(victim.node_id)).remote()
    lightray.get(counter.add.remote(1), timeout=30)
    cluster.kill(victim)
    with pytest.raises(exceptions.ActorDiedError):
        for _ in range(100):
            lightray.get(counter.add.remote(1), timeout=30)


def _name_gone(name):
    try:
        lightray.get_actor(name)
    except ValueError:
        return True
    return False


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _new_pid(counter, old):
    try:
        return lightray.get(counter.pid.remote(), timeout=5) != old
    except (exceptions.ActorDiedError, exceptions.GetTimeoutError):
        return False


def test_the_head_control_store_records_actors_functions_and_jobs(cluster):
    from lightray.cli import running_agent_records
    from lightray.store.control import ControlStore

    b = cluster.nodes[1]
    counter = Counter.options(name="recorded", scheduling_strategy=NodeAffinity(b.node_id)).remote()
    lightray.get(counter.add.remote(1), timeout=30)
    head = [r for r in running_agent_records() if r["node_id"] == cluster.head.node_id][0]
    path = os.path.join(head["session_dir"], "control", "control.db")

    def record():
        with ControlStore(path) as store:
            return store.named_actor("default", "recorded")

    assert wait_for(lambda: record() is not None and record().state == "alive", timeout=10)
    assert record().node_id == b.node_id and record().class_name == "Counter"
    with ControlStore(path) as store:
        assert any(job.running for job in store.jobs())
    lightray.kill(counter)
    assert wait_for(lambda: record() is None, timeout=10)   # dead: the name is free


def test_an_actor_needing_a_resource_only_a_peer_has_is_placed_there(cluster):
    import json
    disk = cluster.add_node(args=["--resources", json.dumps({"disk": 1})])
    cluster.wait_for_nodes(4)
    counter = Counter.options(resources={"disk": 1}).remote()
    assert lightray.get(counter.node.remote(), timeout=30) == disk.node_id


# ----------------------------------------------- refs nested in calls' arguments


@lightray.remote
class Reader:
    def read(self, refs):
        return lightray.get(refs[0], timeout=10)

    def total(self, refs):
        array = lightray.get(refs[0], timeout=30)
        return int(array.sum(dtype=np.uint64)), lightray.get_runtime_context().node_id

    def keep(self, refs):
        self.kept = refs
        return len(refs)

    def total_of_kept(self):
        return int(lightray.get(self.kept[0], timeout=30).sum(dtype=np.uint64))

    def drop_kept(self):
        del self.kept
        return True


@lightray.remote
class AsyncReader:
    async def read(self, refs):
        return await refs[0]


@lightray.remote
def made_on_its_node(size):
    return np.arange(size, dtype=np.uint8)


@lightray.remote
def slow_value(value, seconds=0.5):
    import time
    time.sleep(seconds)
    return value


@lightray.remote
def read_through_actor(reader, value):
    return lightray.get(reader.read.remote([lightray.put(value)]), timeout=30)


def _on(node):
    return NodeAffinity(node.node_id)


def _store_used(node):
    return {n["node_id"]: n for n in lightray.nodes()}[node.node_id]["store_used"]


def _known_here(ref):
    return any(row["object_id"] == ref.hex() for row in lightray.memory_summary()["objects"])


def test_an_actor_on_another_node_reads_a_ref_nested_in_its_arguments(cluster):
    reader = Reader.options(scheduling_strategy=_on(cluster.nodes[1])).remote()
    ref = lightray.put(5)
    assert lightray.get(reader.read.remote([ref]), timeout=30) == 5
    assert lightray.get(reader.read.remote([lightray.put("again")]), timeout=30) == "again"
    # In shared memory, small enough to be pushed along with the answer.
    ones = lightray.put(np.ones(1 << 20, dtype=np.uint8))
    assert lightray.get(reader.total.remote([ones]), timeout=30) == (1 << 20,
                                                                     cluster.nodes[1].node_id)


def test_an_actor_on_another_node_reads_a_large_object_behind_a_nested_ref(cluster):
    a, b = cluster.nodes[0], cluster.nodes[1]
    reader = Reader.options(scheduling_strategy=_on(b)).remote()
    size = 5 << 20
    array = made_on_its_node.options(scheduling_strategy=_on(a)).remote(size)
    expected = int(np.arange(256, dtype=np.uint64).sum()) * (size // 256)
    assert lightray.get(reader.total.remote([array]), timeout=60) == (expected, b.node_id)
    # B's copy is freed once nobody there reads it any more.
    assert wait_for(lambda: _store_used(b) == 0, timeout=10)


def test_a_nested_ref_still_being_computed_resolves_for_an_actor_on_another_node(cluster):
    reader = Reader.options(scheduling_strategy=_on(cluster.nodes[1])).remote()
    lightray.get(reader.keep.remote([]), timeout=30)   # the actor is up
    pending = slow_value.options(scheduling_strategy=_on(cluster.nodes[0])).remote(42)
    assert lightray.get(reader.read.remote([pending]), timeout=30) == 42
    large = made_on_its_node.options(scheduling_strategy=_on(cluster.nodes[2])).remote(3 << 20)
    total, _ = lightray.get(reader.total.remote([large]), timeout=60)
    assert total == int(np.arange(3 << 20, dtype=np.uint8).sum(dtype=np.uint64))


def test_an_actor_on_the_same_node_reads_a_ref_nested_in_its_arguments(cluster):
    reader = Reader.options(scheduling_strategy=_on(cluster.nodes[0])).remote()
    assert lightray.get(reader.read.remote([lightray.put(7)]), timeout=30) == 7
    array = made_on_its_node.options(scheduling_strategy=_on(cluster.nodes[1])).remote(3 << 20)
    total, node = lightray.get(reader.total.remote([array]), timeout=60)
    assert node == cluster.nodes[0].node_id
    assert total == int(np.arange(3 << 20, dtype=np.uint8).sum(dtype=np.uint64))


def test_an_async_actor_on_another_node_awaits_a_nested_ref(cluster):
    reader = AsyncReader.options(scheduling_strategy=_on(cluster.nodes[2])).remote()
    assert lightray.get(reader.read.remote([lightray.put({"k": 1})]), timeout=30) == {"k": 1}


def test_a_task_on_a_third_node_passes_a_nested_ref_to_an_actor(cluster):
    reader = Reader.options(scheduling_strategy=_on(cluster.nodes[1])).remote()
    task = read_through_actor.options(scheduling_strategy=_on(cluster.nodes[2]))
    assert lightray.get(task.remote(reader, 9), timeout=30) == 9


def test_a_nested_ref_kept_by_a_remote_actor_outlives_the_caller_and_is_freed_after(cluster):
    a, b = cluster.nodes[0], cluster.nodes[1]
    reader = Reader.options(scheduling_strategy=_on(b)).remote()
    data = np.ones(3 << 20, dtype=np.uint8)
    ref = lightray.put(data)
    ref_id = ref.hex()
    assert lightray.get(reader.keep.remote([ref]), timeout=30) == 1
    del ref                                   # only the actor holds it now
    time.sleep(0.3)
    assert lightray.get(reader.total_of_kept.remote(), timeout=30) == 3 << 20
    assert lightray.get(reader.drop_kept.remote(), timeout=30) is True
    # Its agent lets go at the caller's node: the object is freed there...
    assert wait_for(lambda: not any(row["object_id"] == ref_id for row in
                                    lightray.memory_summary()["objects"]), timeout=10)
    # ... and B's pulled copy too.
    assert wait_for(lambda: _store_used(b) == 0 and _store_used(a) == 0, timeout=10)


# ----------------------------------------------- refs inside results, and inside argument values


@lightray.remote
class Maker:
    def put_in_list(self, value):
        return [lightray.put(value)]

    def task_in_list(self, value):
        return [slow_value.remote(value)]

    def zeros_in_list(self, size):
        return [lightray.put(np.zeros(size, dtype=np.uint8))]

    def echo(self, refs):
        return refs

    def sleeping_in_list(self, seconds):
        here = NodeAffinity(lightray.get_runtime_context().node_id)
        return [slow_value.options(scheduling_strategy=here).remote(seconds, seconds)]

    def read_inside(self, outer):
        return [lightray.get(ref, timeout=30) for ref in outer]

    def total_inside(self, outer):
        return int(lightray.get(outer[0], timeout=30).sum(dtype=np.uint64))


@lightray.remote
class AsyncMaker:
    async def put_in_list(self, value):
        return [lightray.put(value)]

    async def read_inside(self, outer):
        return [await ref for ref in outer]


def test_the_driver_reads_refs_inside_a_result_of_an_actor_on_another_node(cluster):
    maker = Maker.options(scheduling_strategy=_on(cluster.nodes[1])).remote()
    [small] = lightray.get(maker.put_in_list.remote("x"), timeout=30)
    assert lightray.get(small, timeout=30) == "x"
    [zeros] = lightray.get(maker.put_in_list.remote(np.zeros(10)), timeout=30)
    assert lightray.get(zeros, timeout=30).tolist() == [0.0] * 10
    [computed] = lightray.get(maker.task_in_list.remote(41), timeout=30)
    assert lightray.get(computed, timeout=30) == 41
    # Known here already (the driver's own ref, passed and returned).
    mine = lightray.put("mine")
    [back] = lightray.get(maker.echo.remote([mine]), timeout=30)
    assert back == mine and lightray.get(back, timeout=30) == "mine"


def test_a_large_object_behind_a_ref_a_remote_actor_returns_is_read_then_freed_there(cluster):
    b = cluster.nodes[1]
    maker = Maker.options(scheduling_strategy=_on(b)).remote()
    [ref] = lightray.get(maker.zeros_in_list.remote(5 << 20), timeout=30)
    array = lightray.get(ref, timeout=60)
    assert array.nbytes == 5 << 20 and not array.any()
    assert wait_for(lambda: _store_used(b) >= 5 << 20, timeout=10)   # (heartbeat figures)
    del array, ref
    # The driver let go: its agent FREEs B's pin, and B frees the object.
    assert wait_for(lambda: _store_used(b) == 0 and _store_used(cluster.nodes[0]) == 0,
                    timeout=10)


def test_a_ref_inside_a_dropped_result_of_a_remote_actor_is_freed_there(cluster):
    b = cluster.nodes[1]
    maker = Maker.options(scheduling_strategy=_on(b)).remote()
    refs = [maker.zeros_in_list.remote(1 << 20) for _ in range(3)]
    lightray.wait(refs, num_returns=3, timeout=30)
    assert wait_for(lambda: _store_used(b) >= 3 << 20, timeout=10)
    del refs                                   # never read
    assert wait_for(lambda: _store_used(b) == 0, timeout=10)


def test_an_async_actor_on_another_node_returns_a_ref_the_driver_reads(cluster):
    maker = AsyncMaker.options(scheduling_strategy=_on(cluster.nodes[2])).remote()
    [ref] = lightray.get(maker.put_in_list.remote({"k": 2}), timeout=30)
    assert lightray.get(ref, timeout=30) == {"k": 2}


def test_an_actor_on_another_node_reads_refs_inside_the_value_of_a_ref_argument(cluster):
    maker = Maker.options(scheduling_strategy=_on(cluster.nodes[1])).remote()
    inner = lightray.put(5)
    outer = lightray.put([inner])
    assert lightray.get(maker.read_inside.remote(outer), timeout=30) == [5]
    # The outer value in shared memory, the inner one too.
    big_inner = lightray.put(np.ones(1 << 20, dtype=np.uint8))
    big_outer = lightray.put([big_inner, np.zeros(1 << 20, dtype=np.uint8)])
    assert lightray.get(maker.total_inside.remote(big_outer), timeout=30) == 1 << 20
    del inner, big_inner                       # the outer values keep them
    assert lightray.get(maker.read_inside.remote(outer), timeout=30) == [5]


def test_an_async_actor_on_another_node_awaits_refs_inside_a_ref_argument(cluster):
    maker = AsyncMaker.options(scheduling_strategy=_on(cluster.nodes[2])).remote()
    outer = lightray.put([lightray.put("a"), lightray.put("b")])
    assert lightray.get(maker.read_inside.remote(outer), timeout=30) == ["a", "b"]


def test_a_large_ref_passed_to_a_remote_actor_and_returned_is_freed_on_both_nodes_after(cluster):
    a, b = cluster.nodes[0], cluster.nodes[1]
    maker = Maker.options(scheduling_strategy=_on(b)).remote()
    ref = lightray.put(np.ones(3 << 20, dtype=np.uint8))
    [back] = lightray.get(maker.echo.remote([ref]), timeout=30)
    assert back == ref
    del ref
    assert int(lightray.get(back, timeout=30).sum(dtype=np.uint64)) == 3 << 20
    del back
    assert wait_for(lambda: _store_used(a) == 0 and _store_used(b) == 0, timeout=10)


def test_a_ref_returned_by_a_remote_actor_is_lost_naming_its_node_when_that_node_dies(cluster):
    victim = cluster.nodes[2]
    maker = Maker.options(scheduling_strategy=_on(victim)).remote()
    [ref] = lightray.get(maker.sleeping_in_list.remote(60), timeout=30)
    cluster.kill(victim)
    with pytest.raises(exceptions.ObjectLostError, match=victim.node_id):
        lightray.get(ref, timeout=30)
