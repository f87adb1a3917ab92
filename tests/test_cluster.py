"""A cluster of three real agents on 127.0.0.1: placement, objects across nodes, failures."""
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
def where():
    return lightray.get_runtime_context().node_id


@lightray.remote
def make_array(size):
    return np.arange(size, dtype=np.uint8)


@lightray.remote
def checksum(array):
    return int(array.sum(dtype=np.uint64)), lightray.get_runtime_context().node_id


def on(node):
    return NodeAffinity(node.node_id)


def test_nodes_lists_every_agent_with_its_resources(cluster):
    nodes = {n["node_id"]: n for n in lightray.nodes()}
    assert set(nodes) == {n.node_id for n in cluster.nodes}
    for node in cluster.nodes:
        row = nodes[node.node_id]
        assert row["alive"] is True
        assert row["address"] == node.address
        assert row["resources"]["CPU"] == 1.0
        assert set(row) >= {"node_id", "address", "alive", "resources", "available"}
    assert lightray.cluster_resources()["CPU"] == 3.0
    assert wait_for(lambda: lightray.available_resources().get("CPU") == 3.0)


def test_a_task_pinned_to_each_node_reports_that_node(cluster):
    for node in cluster.nodes:
        assert lightray.get(where.options(scheduling_strategy=on(node)).remote(),
                            timeout=30) == node.node_id


def test_spread_tasks_touch_every_node(cluster):
    refs = [where.options(scheduling_strategy="SPREAD").remote() for _ in range(30)]
    seen = lightray.get(refs, timeout=60)
    assert set(seen) == {n.node_id for n in cluster.nodes}


def test_a_1gib_array_made_on_one_node_is_summed_correctly_on_another(cluster):
    a, b = cluster.nodes[0], cluster.nodes[1]
    size = 1 << 30
    array = make_array.options(scheduling_strategy=on(a)).remote(size)
    total, node = lightray.get(checksum.options(scheduling_strategy=on(b)).remote(array),
                               timeout=90)
    expected = int(np.arange(256, dtype=np.uint64).sum()) * (size // 256)
    assert (total, node) == (expected, b.node_id)


def test_an_unpinned_task_runs_where_its_large_argument_lives(cluster):
    c = cluster.nodes[2]
    array = make_array.options(scheduling_strategy=on(c)).remote(400 * 1000 * 1000)
    lightray.wait([array], timeout=60)
    _, node = lightray.get(checksum.remote(array), timeout=60)
    assert node == c.node_id


def test_the_driver_gets_objects_living_on_any_node(cluster):
    for node in cluster.nodes:
        array = make_array.options(scheduling_strategy=on(node)).remote(3 << 20)
        value = lightray.get(array, timeout=30)
        assert value.nbytes == 3 << 20 and value[:256].tolist() == list(range(256))


def test_a_put_object_is_read_by_tasks_on_other_nodes(cluster):
    data = np.random.default_rng(1).integers(0, 255, 20 << 20, dtype=np.uint8)
    ref = lightray.put(data)
    results = lightray.get([checksum.options(scheduling_strategy=on(n)).remote(ref)
                            for n in cluster.nodes], timeout=60)
    assert [r[0] for r in results] == [int(data.sum(dtype=np.uint64))] * 3
    assert [r[1] for r in results] == [n.node_id for n in cluster.nodes]


def test_a_pinned_task_to_an_unknown_node_fails_clearly(cluster):
    ref = where.options(scheduling_strategy=NodeAffinity("0123456789abcdef")).remote()
    with pytest.raises(exceptions.TaskUnschedulableError, match="0123456789abcdef"):
        lightray.get(ref, timeout=30)


def test_soft_affinity_to_an_unknown_node_runs_elsewhere(cluster):
    ref = where.options(scheduling_strategy=NodeAffinity("0123456789abcdef", soft=True)).remote()
    assert lightray.get(ref, timeout=30) in {n.node_id for n in cluster.nodes}


def test_a_request_no_node_can_fit_fails_at_once(cluster):
    with pytest.raises(exceptions.TaskUnschedulableError, match="CPU"):
        lightray.get(where.options(num_cpus=2).remote(), timeout=30)


def test_errors_raised_on_another_node_reach_the_driver(cluster):
    @lightray.remote
    def fails():
        raise ValueError("raised far away")

    ref = fails.options(scheduling_strategy=on(cluster.nodes[1]), max_retries=0).remote()
    with pytest.raises(ValueError, match="raised far away"):
        lightray.get(ref, timeout=30)


def test_results_on_other_nodes_are_freed_when_the_driver_drops_them(cluster):
    b = cluster.nodes[1]
    refs = [make_array.options(scheduling_strategy=on(b)).remote(1 << 20) for _ in range(5)]
    lightray.wait(refs, num_returns=5, timeout=30)

    def store_used_on_b():
        return {n["node_id"]: n for n in lightray.nodes()}[b.node_id]["store_used"]

    assert wait_for(lambda: store_used_on_b() >= 5 << 20, timeout=10)
    del refs
    assert wait_for(lambda: store_used_on_b() == 0, timeout=10)


def test_a_hot_node_gets_no_new_default_tasks(cluster):
    hot = cluster.add_node(env={"LIGHTRAY_HOT_NODE_THRESHOLD": "0.0"})
    cluster.wait_for_nodes(4)
    assert wait_for(lambda: {n["node_id"]: n for n in lightray.nodes()}[hot.node_id]["hot"],
                    timeout=5)

    @lightray.remote
    def slow_where():
        time.sleep(0.3)
        return lightray.get_runtime_context().node_id

    seen = lightray.get([slow_where.remote() for _ in range(12)], timeout=60)
    assert hot.node_id not in seen
    assert len(set(seen)) >= 2
    # Pinned work still goes there.
    assert lightray.get(where.options(scheduling_strategy=on(hot)).remote(),
                        timeout=30) == hot.node_id


def test_a_killed_agent_is_shown_dead_within_5_s_and_new_work_completes(cluster):
    victim = cluster.nodes[2]
    cluster.kill(victim)
    started = time.monotonic()
    assert wait_for(lambda: not {n["node_id"]: n for n in lightray.nodes()}[victim.node_id]
                    ["alive"], timeout=5.0, interval=0.05)
    assert time.monotonic() - started <= 5.0
    seen = lightray.get([where.options(scheduling_strategy="SPREAD").remote()
                         for _ in range(10)], timeout=60)
    assert victim.node_id not in seen
    assert set(seen) == {cluster.nodes[0].node_id, cluster.nodes[1].node_id}
    assert lightray.cluster_resources()["CPU"] == 2.0


def test_a_task_running_on_a_killed_node_is_retried_elsewhere(cluster, tmp_path):
    victim = cluster.nodes[1]
    started = tmp_path / "started"

    @lightray.remote
    def slow(path):
        if lightray.get_runtime_context().node_id == victim_id:
            open(path, "w").close()
            time.sleep(60)
        return lightray.get_runtime_context().node_id

    victim_id = victim.node_id
    ref = slow.options(scheduling_strategy=NodeAffinity(victim.node_id, soft=True)).remote(
        str(started))
    assert wait_for(started.exists, timeout=30)
    cluster.kill(victim)
    assert lightray.get(ref, timeout=60) != victim.node_id


def test_an_object_on_a_killed_node_is_reported_lost(cluster):
    victim = cluster.nodes[2]
    array = make_array.options(scheduling_strategy=on(victim), max_retries=0).remote(1 << 20)
    lightray.wait([array], timeout=30)
    cluster.kill(victim)
    assert wait_for(lambda: not {n["node_id"]: n for n in lightray.nodes()}[victim.node_id]
                    ["alive"], timeout=10)
    with pytest.raises(exceptions.ObjectLostError, match=victim.node_id):
        lightray.get(array, timeout=30)


def test_sigterm_stops_an_agent_cleanly_and_its_peers_are_told(cluster):
    leaving = cluster.nodes[2]
    assert cluster.stop(leaving) == 0

    def row():
        return {n["node_id"]: n for n in lightray.nodes()}[leaving.node_id]

    assert wait_for(lambda: not row()["alive"], timeout=5)
    assert row()["died"] == "it stopped"       # told, not found silent
    assert lightray.get(where.remote(), timeout=30) != leaving.node_id


def test_a_dask_graph_runs_across_all_three_nodes(cluster):
    dask = pytest.importorskip("dask")
    import dask.array as da

    @dask.delayed
    def node_of(i):
        time.sleep(0.2)
        return lightray.get_runtime_context().node_id

    nodes = dask.compute(*[node_of(i) for i in range(24)], scheduler=lightray.get)
    assert set(nodes) == {n.node_id for n in cluster.nodes}
    x = da.ones((2000, 2000), chunks=(250, 250))
    assert float((x + x.T).sum().compute(scheduler=lightray.get)) == 8_000_000.0


def test_tasks_started_on_another_node_submit_tasks_of_their_own(cluster):
    @lightray.remote
    def parent(n):
        children = [where.options(scheduling_strategy="SPREAD").remote() for _ in range(n)]
        return lightray.get_runtime_context().node_id, lightray.get(children)

    b = cluster.nodes[1]
    node, children = lightray.get(parent.options(scheduling_strategy=on(b)).remote(9),
                                  timeout=60)
    assert node == b.node_id
    assert set(children) <= {n.node_id for n in cluster.nodes} and len(children) == 9


def test_the_head_records_nodes_and_deaths_in_its_control_store(cluster):
    from lightray.cli import running_agent_records
    from lightray.store.control import ControlStore

    head = [r for r in running_agent_records() if r["node_id"] == cluster.head.node_id][0]
    path = os.path.join(head["session_dir"], "control", "control.db")

    def recorded():
        with ControlStore(path) as store:
            return {record.node_id: record for record in store.nodes()}

    assert wait_for(lambda: set(recorded()) == {n.node_id for n in cluster.nodes}, timeout=10)
    assert all(record.alive and record.resources == {"CPU": 1.0}
               for record in recorded().values())
    victim = cluster.nodes[2]
    cluster.kill(victim)
    assert wait_for(lambda: not recorded()[victim.node_id].alive, timeout=10)
    assert recorded()[cluster.nodes[1].node_id].load["store_capacity"] > 0


def test_refs_inside_a_result_from_another_node_can_be_read(cluster):
    @lightray.remote
    def make_refs():
        return [lightray.put(np.full(1 << 20, 7, dtype=np.uint8)), lightray.put("small")]

    b = cluster.nodes[1]
    big, small = lightray.get(make_refs.options(scheduling_strategy=on(b)).remote(), timeout=30)
    assert lightray.get(small, timeout=30) == "small"
    assert int(lightray.get(big, timeout=30).sum()) == 7 << 20
    total, node = lightray.get(checksum.options(scheduling_strategy=on(cluster.nodes[2]))
                               .remote(big), timeout=30)
    assert (total, node) == (7 << 20, cluster.nodes[2].node_id)


def test_small_arguments_pushed_with_their_task_arrive_intact_every_time(cluster):
    data = np.random.default_rng(7).integers(0, 255, 1 << 20, dtype=np.uint8)  # pushed
    ref = lightray.put(data)
    expected = int(data.sum(dtype=np.uint64))
    for _ in range(3):    # the first sends the bytes along; later ones find them there
        results = lightray.get([checksum.options(scheduling_strategy=on(n)).remote(ref)
                                for n in cluster.nodes], timeout=60)
        assert [r[0] for r in results] == [expected] * 3
    inner = lightray.get(make_array.options(scheduling_strategy=on(cluster.nodes[1]))
                         .remote(1 << 20), timeout=30)
    assert int(inner.sum(dtype=np.uint64)) == int(np.arange(256).sum()) * 4096


def _row(node):
    return {n["node_id"]: n for n in lightray.nodes()}[node.node_id]


def test_concurrent_readers_on_one_node_share_one_pull(cluster):
    a, b = cluster.nodes[0], cluster.nodes[1]
    size = 50 << 20                                   # pulled, not pushed
    array = make_array.options(scheduling_strategy=on(a)).remote(size)
    lightray.wait([array], timeout=30)
    served_before = _row(a)["served"]

    @lightray.remote(num_cpus=0)
    def total(x):
        return int(x.sum(dtype=np.uint64))

    results = lightray.get([total.options(scheduling_strategy=on(b)).remote(array)
                            for _ in range(4)], timeout=60)
    assert len(set(results)) == 1
    # A sent the object's segment (its bytes and a pickle header) once,
    # whatever the number of readers on B.
    assert wait_for(lambda: _row(a)["served"] - served_before >= size, timeout=5)
    assert _row(a)["served"] - served_before < size + 4096


@lightray.remote
def filled(size, value):
    return np.full(size, value, dtype=np.uint8)


@lightray.remote
class ViewHolder:
    """Keeps a NumPy view of an object after the object itself is freed."""

    def keep(self, size, value, node_id):
        ref = filled.options(scheduling_strategy=NodeAffinity(node_id)).remote(size, value)
        self.view = lightray.get(ref, timeout=30)   # pulled to this node
        del ref                                     # freed: only the view is left
        return int(self.view[0])

    def values(self):
        return sorted(set(np.unique(self.view).tolist()))


def test_freed_pulled_copies_are_reused_only_once_nobody_reads_them(cluster):
    a, b = cluster.nodes[0], cluster.nodes[1]
    size = 8 << 20
    holder = ViewHolder.options(scheduling_strategy=on(b)).remote()
    # The actor on B makes an object on A, reads it (B pulls a copy), drops
    # it and keeps only a NumPy view: B's copy is freed but still mapped.
    assert lightray.get(holder.keep.remote(size, 7, a.node_id), timeout=60) == 7
    for value in (9, 11, 13):
        fresh = filled.options(scheduling_strategy=on(a)).remote(size, value)
        total, node = lightray.get(checksum.options(scheduling_strategy=on(b)).remote(fresh),
                                   timeout=60)
        assert (total, node) == (value * size, b.node_id)
        del fresh     # nobody maps this copy: B keeps it warm for the next pull
        assert wait_for(lambda: _row(b)["warm"] >= size, timeout=5)
    # Three pulls went through B's warm segments; none wrote over the kept view.
    assert lightray.get(holder.values.remote(), timeout=30) == [7]


def test_sigint_stops_an_agent_cleanly_and_its_peers_are_told(cluster):
    leaving = cluster.nodes[1]
    assert cluster.stop(leaving, sig=signal.SIGINT) == 0
    assert wait_for(lambda: not _row(leaving)["alive"], timeout=5)
    assert _row(leaving)["died"] == "it stopped"


def test_a_pulled_copy_is_dropped_not_spilled_when_its_node_needs_room(own_cluster):
    own_cluster.object_store_memory = 200 << 20
    a = own_cluster.add_node(head=True)
    b = own_cluster.add_node()
    lightray.init(address=a.address)
    own_cluster.wait_for_nodes(2)
    array = make_array.options(scheduling_strategy=on(a)).remote(60 << 20)
    first = lightray.get(checksum.options(scheduling_strategy=on(b)).remote(array),
                         timeout=60)
    # B now holds a copy; filling B's store must drop it rather than spill it.
    fillers = [make_array.options(scheduling_strategy=on(b)).remote(50 << 20)
               for _ in range(3)]
    lightray.wait(fillers, num_returns=3, timeout=60)
    # (A peer's counters come with its heartbeats: wait for the first pull's.)
    assert wait_for(lambda: _row(b)["pulled"] >= 60 << 20, timeout=5)
    pulled_before = _row(b)["pulled"]
    assert wait_for(lambda: _row(b)["store_used"] <= 160 << 20, timeout=10)
    assert _row(b)["spilled"] == 0
    # Read again on B: pulled again from A, same result.
    assert lightray.get(checksum.options(scheduling_strategy=on(b)).remote(array),
                        timeout=60) == first
    assert wait_for(lambda: _row(b)["pulled"] - pulled_before >= 60 << 20, timeout=5)
    assert _row(b)["pulled"] - pulled_before < (60 << 20) + 4096
