"""How drivers attach to a cluster of real agents: init(address=...), "auto",
LIGHTRAY_ADDRESS; what nodes() and cluster_resources() show from there."""
import json
import os
import socket

import pytest
from cluster_utils import Cluster
from conftest import wait_for

import lightray
from lightray import NodeAffinity, exceptions
from lightray.agent.session import CURRENT_CLUSTER
from lightray.config import ADDRESS_ENV, temp_dir

pytestmark = pytest.mark.timeout(120)


@lightray.remote
def where():
    return lightray.get_runtime_context().node_id


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def by_id():
    return {n["node_id"]: n for n in lightray.nodes()}


def alive_ids():
    return {n["node_id"] for n in lightray.nodes() if n["alive"]}


def current_cluster():
    try:
        with open(os.path.join(temp_dir(), CURRENT_CLUSTER)) as f:
            return f.read().strip()
    except OSError:
        return None


@pytest.fixture
def no_address_env(monkeypatch):
    monkeypatch.delenv(ADDRESS_ENV, raising=False)



def attach(address, count=None):
    """Detach from wherever this driver is, attach at address; wait until
    that agent knows count live nodes."""
    if lightray.is_initialized():
        lightray.shutdown()
    context = lightray.init(address=address)
    if count is not None:
        assert wait_for(lambda: len(alive_ids()) >= count, timeout=15), lightray.nodes()
    return context


# ------------------------------------------------------- init(address=...)

def test_init_with_the_address_of_a_non_head_node_attaches_to_that_node(cluster):
    joiner = cluster.nodes[1]
    context = attach(joiner.address, count=3)
    assert context.node_id == joiner.node_id
    assert lightray.get_runtime_context().node_id == joiner.node_id
    assert alive_ids() == {n.node_id for n in cluster.nodes}
    for node in cluster.nodes:
        assert lightray.get(where.options(scheduling_strategy=NodeAffinity(node.node_id))
                            .remote(), timeout=30) == node.node_id
    # An idle cluster of 1-CPU nodes: a default task stays on the attached node.
    assert wait_for(lambda: lightray.available_resources().get("CPU") == 3.0, timeout=15)
    assert lightray.get(where.remote(), timeout=30) == joiner.node_id


def test_a_driver_can_attach_to_each_node_in_turn(cluster):
    for node in cluster.nodes:
        attach(node.address, count=3)
        assert lightray.get_runtime_context().node_id == node.node_id
        assert lightray.get(where.options(scheduling_strategy="SPREAD").remote(),
                            timeout=30) in {n.node_id for n in cluster.nodes}
    # Detaching never stops an agent.
    lightray.shutdown()
    assert all(n.process.poll() is None for n in cluster.nodes)


def test_init_with_localhost_attaches_to_the_agent_on_127_0_0_1(cluster):
    port = cluster.head.address.rsplit(":", 1)[1]
    attach(f"localhost:{port}")
    assert lightray.get_runtime_context().node_id == cluster.head.node_id


def test_a_driver_attached_to_a_joiner_reads_objects_made_anywhere(cluster):
    np = pytest.importorskip("numpy")

    @lightray.remote
    def make(size):
        return np.full(size, 7, dtype=np.uint8)

    attach(cluster.nodes[2].address, count=3)
    for node in cluster.nodes:
        array = lightray.get(make.options(scheduling_strategy=NodeAffinity(node.node_id))
                             .remote(2 << 20), timeout=30)
        assert array.nbytes == 2 << 20 and int(array.sum()) == 7 * (2 << 20)


def test_init_with_an_address_nobody_listens_on_raises_connection_error(no_address_env):
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionError, match=address):
        lightray.init(address=address)
    assert not lightray.is_initialized()


def test_init_with_an_unknown_address_names_it_and_the_agents_running(cluster):
    lightray.shutdown()
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionError, match=address) as error:
        lightray.init(address=address)
    assert cluster.head.address in str(error.value)
    assert not lightray.is_initialized()


@pytest.mark.parametrize("address", ["not-an-address", "127.0.0.1", "127.0.0.1:",
                                     ":6380", "127.0.0.1:port"])
def test_init_with_a_malformed_address_raises_value_error(address):
    with pytest.raises(ValueError, match="HOST:PORT"):
        lightray.init(address=address)
    assert not lightray.is_initialized()


def test_init_with_a_non_string_address_raises_type_error():
    with pytest.raises(TypeError, match="address"):
        lightray.init(address=6380)
    assert not lightray.is_initialized()


@pytest.mark.parametrize("option", [{"num_cpus": 1}, {"num_gpus": 1}, {"resources": {"disk": 1}},
                                    {"object_store_memory": 1 << 30}, {"spill_dir": "/tmp"}])
def test_resources_belong_to_the_agent_not_to_an_attaching_driver(option):
    with pytest.raises(ValueError, match="belong to the agent"):
        lightray.init(address="127.0.0.1:6380", **option)
    with pytest.raises(ValueError, match="belong to the agent"):
        lightray.init(address="auto", **option)
    assert not lightray.is_initialized()


def test_init_twice_raises_and_ignore_reinit_error_keeps_the_first(cluster):
    with pytest.raises(RuntimeError, match="twice"):
        lightray.init(address=cluster.nodes[1].address)
    context = lightray.init(address=cluster.nodes[1].address, ignore_reinit_error=True)
    assert context.node_id == cluster.head.node_id


# ---------------------------------------------------------------- "auto"

def test_auto_attaches_to_the_address_in_lightray_address(cluster, monkeypatch):
    joiner = cluster.nodes[2]
    lightray.shutdown()
    monkeypatch.setenv(ADDRESS_ENV, joiner.address)
    lightray.init(address="auto")
    assert lightray.get_runtime_context().node_id == joiner.node_id
    assert wait_for(lambda: alive_ids() == {n.node_id for n in cluster.nodes}, timeout=15)


def test_auto_with_lightray_address_of_no_agent_raises_connection_error(monkeypatch):
    address = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv(ADDRESS_ENV, address)
    with pytest.raises(ConnectionError, match=address):
        lightray.init(address="auto")
    assert not lightray.is_initialized()


def test_auto_attaches_to_the_cluster_whose_head_started_last(own_cluster, no_address_env):
    own_cluster.add_node(head=True)        # the first cluster
    first_joiner = own_cluster.add_node()
    second = Cluster()
    try:
        second_head = second.add_node(head=True)
        assert current_cluster() == second_head.address
        # A node joining the first cluster afterwards changes nothing: only heads count.
        own_cluster.add_node()
        assert current_cluster() == second_head.address
        lightray.init(address="auto")
        assert lightray.get_runtime_context().node_id == second_head.node_id
        assert {n["node_id"] for n in lightray.nodes()} == {second_head.node_id}
        lightray.shutdown()
    finally:
        if lightray.is_initialized():
            lightray.shutdown()
        second.shutdown()
    # Its head gone, the second cluster is no longer "current".
    assert current_cluster() != second_head.address
    # A head started now makes its cluster the current one.
    third = own_cluster.add_node(head=True)
    assert current_cluster() == third.address
    lightray.init(address="auto")
    assert lightray.get_runtime_context().node_id == third.node_id
    assert first_joiner.process.poll() is None


def test_auto_attaches_to_the_one_agent_running_when_no_cluster_is_current(own_cluster,
                                                                         no_address_env):
    head = own_cluster.add_node(head=True)
    os.unlink(os.path.join(temp_dir(), CURRENT_CLUSTER))
    lightray.init(address="auto")
    assert lightray.get_runtime_context().node_id == head.node_id


def test_auto_finds_the_only_cluster_left_after_the_last_started_head_stops(own_cluster,
                                                                           no_address_env):
    head = own_cluster.add_node(head=True)
    own_cluster.add_node()
    lone = own_cluster.add_node(head=True)       # another cluster, started last
    assert current_cluster() == lone.address
    assert own_cluster.stop(lone) == 0
    lightray.init(address="auto")
    assert lightray.get_runtime_context().node_id == head.node_id


def test_auto_with_no_agent_running_raises_connection_error(no_address_env):
    with pytest.raises(ConnectionError, match="no lightray agent"):
        lightray.init(address="auto")
    assert not lightray.is_initialized()


def test_auto_ignores_a_stale_current_cluster_file(no_address_env, monkeypatch, tmp_path):
    # A private temp dir: the current_cluster file of the others is left alone.
    root = tmp_path / "lightray"
    root.mkdir()
    (root / CURRENT_CLUSTER).write_text(f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("LIGHTRAY_TEMP_DIR", str(root))
    with pytest.raises(ConnectionError, match="no lightray agent"):
        lightray.init(address="auto")
    assert not lightray.is_initialized()


# ------------------------------------------------- what an attached driver sees

def test_cluster_resources_sum_every_live_node(cluster):
    assert lightray.cluster_resources() == {"CPU": 3.0}
    assert wait_for(lambda: lightray.available_resources() == {"CPU": 3.0}, timeout=15)
    cluster.stop(cluster.nodes[2])
    assert wait_for(lambda: lightray.cluster_resources() == {"CPU": 2.0}, timeout=10)


@lightray.remote(resources={"disk": 1})
def on_disk():
    return lightray.get_runtime_context().node_id


def test_a_custom_resource_of_one_node_shows_in_cluster_resources(cluster):
    disk = cluster.add_node(args=["--resources", json.dumps({"disk": 2})])
    cluster.wait_for_nodes(4)
    assert lightray.cluster_resources() == {"CPU": 4.0, "disk": 2.0}
    assert by_id()[disk.node_id]["resources"] == {"CPU": 1.0, "disk": 2.0}
    assert wait_for(lambda: lightray.available_resources() == {"CPU": 4.0, "disk": 2.0},
                    timeout=15), lightray.nodes()
    # Every node knows it, not only the head.
    for node in cluster.nodes:
        attach(node.address, count=4)
        assert wait_for(lambda: lightray.cluster_resources() == {"CPU": 4.0, "disk": 2.0},
                        timeout=15), lightray.nodes()


def test_a_task_needing_a_custom_resource_runs_on_the_node_having_it_when_submitted_there(
        cluster):
    disk = cluster.add_node(args=["--resources", json.dumps({"disk": 2})])
    attach(disk.address, count=4)
    assert lightray.get([on_disk.remote() for _ in range(4)], timeout=60) == \
        [disk.node_id] * 4
    with pytest.raises(exceptions.TaskUnschedulableError, match="disk"):
        lightray.get(on_disk.options(resources={"disk": 3}).remote(), timeout=30)


def test_a_task_needing_a_custom_resource_no_node_has_fails_naming_it(cluster):
    with pytest.raises(exceptions.TaskUnschedulableError, match="disk"):
        lightray.get(on_disk.remote(), timeout=30)


@pytest.mark.parametrize("how", ["default", "spread", "affinity"])
def test_a_task_needing_a_custom_resource_only_a_peer_has_runs_on_that_peer(cluster, how):
    disk = cluster.add_node(args=["--resources", json.dumps({"disk": 2})])
    cluster.wait_for_nodes(4)
    assert lightray.cluster_resources()["disk"] == 2.0       # the head knows it is there
    strategy = {"default": None, "spread": "SPREAD",
                "affinity": NodeAffinity(disk.node_id)}[how]
    ref = on_disk.options(scheduling_strategy=strategy).remote()
    assert lightray.get(ref, timeout=30) == disk.node_id


def test_a_task_needing_more_cpus_than_the_submitting_node_has_runs_on_a_bigger_peer(cluster):
    big = cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes(4)
    assert lightray.get(where.options(num_cpus=2).remote(), timeout=30) == big.node_id


def test_nodes_rows_have_their_keys_and_exactly_one_head(cluster):
    for node in cluster.nodes:
        attach(node.address, count=3)
        rows = lightray.nodes()
        assert len(rows) == 3
        for row in rows:
            assert {"node_id", "address", "alive", "resources", "available",
                    "is_head"} <= set(row), row
            assert row["alive"] is True
            assert row["resources"] == {"CPU": 1.0}
        heads = [row for row in rows if row["is_head"] is True]
        assert len(heads) == 1, rows
        assert heads[0]["node_id"] == cluster.head.node_id
        assert heads[0]["address"] == cluster.head.address
        assert {row["address"] for row in rows} == {n.address for n in cluster.nodes}
