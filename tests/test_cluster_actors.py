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
    from lightray.control import ControlStore

    b = cluster.nodes[1]
    counter = Counter.options(name="recorded", scheduling_strategy=NodeAffinity(b.node_id)).remote()
    lightray.get(counter.add.remote(1), timeout=30)
    head = [r for r in running_agent_records() if r["node_id"] == cluster.head.node_id][0]
    path = os.path.join(head["session_dir"], "control.db")

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
def slow_value(value):
    import time
    time.sleep(0.5)
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
