"""The agents' mesh: CURVE-encrypted clusters, keys, binding and ports, with real agents.

Agents start as a user starts them (``python -m lightray.agent ...``, through
cluster_utils.Cluster); the driver of this process attaches to the head.
"""
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
from cluster_utils import REPO, Cluster
from conftest import wait_for

import lightray
from lightray import NodeAffinity
from lightray.transport.keys import make_cluster_key, read_cluster_key

pytestmark = pytest.mark.timeout(120)

ADMISSION_WAIT_S = 3.0      # how long a rogue agent gets to (fail to) join


@lightray.remote
def where():
    return lightray.get_runtime_context().node_id


@lightray.remote
def make_array(size, seed):
    return np.random.default_rng(seed).integers(0, 255, size, dtype=np.uint8)


@lightray.remote
def checksum(array):
    return int(array.sum(dtype=np.uint64)), array.nbytes, lightray.get_runtime_context().node_id


def agent_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([REPO] + [p for p in env.get("PYTHONPATH", "").split(
        os.pathsep) if p])
    env.pop("LIGHTRAY_ADDRESS", None)
    return env


class Outcome:
    def __init__(self, started, returncode, stdout, stderr):
        self.started = started          # it printed "lightray agent ... listening"
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    def __repr__(self):
        return (f"Outcome(started={self.started}, returncode={self.returncode}, "
                f"stdout={self.stdout!r}, stderr={self.stderr!r})")


def run_agent(*args, timeout=60, env=None):
    """lightray-agent with these flags, run to its end. One that starts
    serving instead of exiting is stopped with SIGTERM (started=True)."""
    process = subprocess.Popen([sys.executable, "-m", "lightray.agent", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**agent_env(), **(env or {})}, stdin=subprocess.DEVNULL)
    try:
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        first = process.stdout.readline() if ready else ""
        started = first.startswith("lightray agent")
        if started:
            process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:      # never seen if the agent behaves
            process.kill()
            process.communicate()
    return Outcome(started, process.returncode, first + out, err)


def alive_ids():
    return {n["node_id"] for n in lightray.nodes() if n["alive"]}


def all_ids():
    return {n["node_id"] for n in lightray.nodes()}


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "cluster.key"
    result = run_agent("--make-cluster-key", str(path))
    assert result.returncode == 0, result.stderr
    return str(path)


@pytest.fixture
def nodes():
    """A Cluster this test fills; everything is stopped and reaped afterwards."""
    cluster = Cluster()
    try:
        yield cluster
    finally:
        if lightray.is_initialized():
            lightray.shutdown()
        cluster.shutdown()


# ------------------------------------------------------------ a CURVE cluster

def test_a_cluster_with_a_cluster_key_runs_tasks_and_moves_objects(nodes, key_file):
    head = nodes.add_node(head=True, args=["--cluster-key", key_file])
    joiner = nodes.add_node(args=["--cluster-key", key_file])
    lightray.init(address=head.address)
    nodes.wait_for_nodes(2)
    rows = lightray.nodes()
    assert {r["node_id"] for r in rows if r["alive"]} == {head.node_id, joiner.node_id}
    assert len(rows) == 2

    assert lightray.get(where.options(scheduling_strategy=NodeAffinity(joiner.node_id))
                        .remote(), timeout=30) == joiner.node_id
    assert lightray.get(where.options(scheduling_strategy=NodeAffinity(head.node_id))
                        .remote(), timeout=30) == head.node_id

    size = 5 << 20
    expected = np.random.default_rng(7).integers(0, 255, size, dtype=np.uint8)
    total = int(expected.sum(dtype=np.uint64))
    for maker, reader in ((head, joiner), (joiner, head)):
        array = make_array.options(scheduling_strategy=NodeAffinity(maker.node_id)).remote(
            size, 7)
        assert lightray.get(checksum.options(scheduling_strategy=NodeAffinity(reader.node_id))
                            .remote(array), timeout=60) == (total, size, reader.node_id)
        # The driver (on the head) reads it too, wherever it was made.
        np.testing.assert_array_equal(lightray.get(array, timeout=60), expected)


def test_a_put_object_crosses_an_encrypted_mesh(nodes, key_file):
    head = nodes.add_node(head=True, args=["--cluster-key", key_file])
    joiner = nodes.add_node(args=["--cluster-key", key_file])
    lightray.init(address=head.address)
    nodes.wait_for_nodes(2)
    data = np.random.default_rng(3).integers(0, 255, 5 << 20, dtype=np.uint8)
    ref = lightray.put(data)
    assert lightray.get(checksum.options(scheduling_strategy=NodeAffinity(joiner.node_id))
                        .remote(ref), timeout=60) == (int(data.sum(dtype=np.uint64)),
                                                      data.nbytes, joiner.node_id)


def test_an_agent_without_any_key_stops_at_once_saying_it_needs_the_key(
        nodes, key_file, tmp_path):
    head = nodes.add_node(head=True, args=["--cluster-key", key_file])
    # Its own LIGHTRAY_HOME: the run's is shared, and a head of an earlier test
    # on the same port may have left the key it made there (keys are kept).
    result = run_agent("--address", head.address, "--num-cpus", "1",
                       env={"LIGHTRAY_HOME": str(tmp_path / "home")})
    assert not result.started and result.returncode == 2, result
    assert "needs the cluster's key" in result.stderr and "--cluster-key" in result.stderr


def test_an_agent_with_another_clusters_key_is_never_admitted(nodes, key_file, tmp_path):
    head = nodes.add_node(head=True, args=["--cluster-key", key_file])
    joiner = nodes.add_node(args=["--cluster-key", key_file])
    lightray.init(address=head.address)
    nodes.wait_for_nodes(2)
    other = str(tmp_path / "other.key")
    make_cluster_key(other)
    rogue = nodes.add_node(args=["--cluster-key", other])
    keyed = {head.node_id, joiner.node_id}
    # Give it every chance to join (heartbeats are every 0.5 s).
    deadline = time.monotonic() + ADMISSION_WAIT_S
    while time.monotonic() < deadline:
        assert all_ids() == keyed, lightray.nodes()
        time.sleep(0.1)
    assert alive_ids() == keyed
    assert rogue.node_id not in all_ids()
    assert lightray.cluster_resources()["CPU"] == 2.0
    # The cluster still works.
    assert lightray.get(where.options(scheduling_strategy="SPREAD").remote(), timeout=30) \
        in keyed
    # The rogue gives up by itself: the head refused its key in the handshake.
    assert rogue.process.wait(timeout=15) == 1
    assert alive_ids() == keyed


def test_a_keyed_agent_is_not_admitted_to_an_insecure_cluster(nodes, key_file):
    head = nodes.add_node(head=True, args=["--insecure"])
    plain = nodes.add_node(args=["--insecure"])
    lightray.init(address=head.address)
    nodes.wait_for_nodes(2)
    keyed = nodes.add_node(args=["--cluster-key", key_file])
    deadline = time.monotonic() + ADMISSION_WAIT_S
    while time.monotonic() < deadline:
        assert all_ids() == {head.node_id, plain.node_id}, lightray.nodes()
        time.sleep(0.1)
    assert keyed.process.wait(timeout=15) == 1     # it gave up: the head has no key


# -------------------------------------------------------------- key files

def test_make_cluster_key_writes_a_private_file_of_a_key_pair_and_a_secret(tmp_path):
    path = tmp_path / "made.key"
    result = run_agent("--make-cluster-key", str(path))
    assert result.returncode == 0, result.stderr
    assert str(path) in result.stdout
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    lines = text.splitlines()
    assert len(lines) == 3 and all(len(line) == 40 for line in lines[:2]), text
    assert lines[0] != lines[1] and len(bytes.fromhex(lines[2])) == 32
    public, secret, _ = read_cluster_key(str(path))
    assert (public, secret) == (lines[0].encode(), lines[1].encode())
    import zmq
    assert zmq.curve_public(secret) == public      # a real key pair


def test_two_made_keys_differ(tmp_path):
    make_cluster_key(str(tmp_path / "a"))
    make_cluster_key(str(tmp_path / "b"))
    assert (tmp_path / "a").read_text() != (tmp_path / "b").read_text()
    assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o600


def test_make_cluster_key_never_overwrites_an_existing_file(tmp_path):
    path = tmp_path / "existing.key"
    path.write_text("precious\n")
    result = run_agent("--make-cluster-key", str(path))
    assert result.returncode != 0
    assert path.read_text() == "precious\n"


@pytest.mark.parametrize("content", [
    "",
    "not a key\n",
    "A" * 40 + "\n",                                   # one line
    "A" * 40 + "\n" + "B" * 39 + "\n",                 # second line too short
    "A" * 40 + "\n" + "B" * 40 + "\n" + "C" * 40 + "\n",   # three lines
], ids=["empty", "text", "one-line", "short-line", "three-lines"])
def test_a_malformed_cluster_key_file_stops_the_agent_with_code_2(tmp_path, content):
    path = tmp_path / "bad.key"
    path.write_text(content)
    result = run_agent("--head", "--port", "0", "--cluster-key", str(path))
    assert result.returncode == 2, result
    assert str(path) in result.stderr
    with pytest.raises(ValueError, match="bad.key"):
        read_cluster_key(str(path))


def test_a_malformed_cluster_key_file_stops_a_joining_agent_too(tmp_path):
    path = tmp_path / "bad.key"
    path.write_text("garbage\n")
    result = run_agent("--address", "127.0.0.1:1", "--cluster-key", str(path))
    assert result.returncode == 2, result
    assert str(path) in result.stderr


def test_a_missing_cluster_key_file_stops_the_agent_with_code_2(tmp_path):
    path = tmp_path / "missing.key"
    result = run_agent("--head", "--port", "0", "--cluster-key", str(path))
    assert result.returncode == 2, result
    assert "missing.key" in result.stderr


def test_a_key_file_of_40_character_lines_that_are_not_z85_stops_the_agent_with_code_2(
        tmp_path):
    path = tmp_path / "notz85.key"
    path.write_text("~" * 40 + "\n" + "~" * 40 + "\n")
    result = run_agent("--head", "--port", "0", "--cluster-key", str(path))
    assert result.returncode == 2, result
    assert str(path) in result.stderr


def test_a_key_file_whose_lines_are_not_one_key_pair_stops_the_agent_with_code_2(tmp_path):
    import zmq
    public, _ = zmq.curve_keypair()
    _, secret = zmq.curve_keypair()
    path = tmp_path / "mismatched.key"
    path.write_text(public.decode() + "\n" + secret.decode() + "\n" + "ab" * 32 + "\n")
    # Its own temp dir: a head that does start must not leave a stale
    # current_cluster behind for the tests of address="auto".
    result = run_agent("--head", "--port", "0", "--num-cpus", "1",
                       "--object-store-memory", str(64 << 20), "--cluster-key", str(path),
                       env={"LIGHTRAY_TEMP_DIR": str(tmp_path / "lightray")})
    assert not result.started and result.returncode == 2, result
    assert str(path) in result.stderr


def test_a_cluster_key_needs_head_or_address(key_file):
    result = run_agent("--cluster-key", key_file)
    assert result.returncode == 2
    assert "--cluster-key" in result.stderr


# ------------------------------------------------------------ bind and port

def test_the_mesh_binds_loopback_by_default(nodes):
    head = nodes.add_node(head=True)
    joiner = nodes.add_node()
    for node in (head, joiner):
        assert node.address.startswith("127.0.0.1:"), node.address
        port = int(node.address.rsplit(":", 1)[1])
        listening = [c for c in psutil.Process(node.pid).net_connections(kind="tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
        assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening), listening


def test_a_head_listens_on_the_port_it_is_given(nodes):
    port = free_port()
    head = nodes.add_node(head=True, args=["--port", str(port)])
    assert head.address == f"127.0.0.1:{port}"
    joiner = nodes.add_node()
    lightray.init(address=head.address)
    nodes.wait_for_nodes(2)
    assert alive_ids() == {head.node_id, joiner.node_id}


def test_a_second_head_cannot_bind_a_port_in_use(nodes):
    port = free_port()
    first = nodes.add_node(head=True, args=["--port", str(port)])
    assert first.address == f"127.0.0.1:{port}"
    result = run_agent("--head", "--port", str(port), "--num-cpus", "1",
                       "--object-store-memory", str(64 << 20))
    assert not result.started and result.returncode != 0, result
    assert str(port) in result.stderr, result
    # The first head is unharmed.
    assert first.process.poll() is None
    lightray.init(address=first.address)
    assert {n["node_id"] for n in lightray.nodes()} == {first.node_id}
    assert lightray.get(where.remote(), timeout=30) == first.node_id


def test_an_agent_cannot_bind_a_port_held_by_another_program(nodes):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        result = run_agent("--head", "--port", str(port), "--num-cpus", "1",
                           "--object-store-memory", str(64 << 20))
    assert not result.started and result.returncode != 0, result
    assert str(port) in result.stderr, result


def test_sigterm_stops_a_keyed_head_and_joiner_cleanly(nodes, key_file):
    head = nodes.add_node(head=True, args=["--cluster-key", key_file])
    joiner = nodes.add_node(args=["--cluster-key", key_file])
    lightray.init(address=head.address)
    nodes.wait_for_nodes(2)
    # A round trip: the joiner has the head's membership answer (it knows
    # whom to say goodbye to) once it sends back a result.
    assert lightray.get(where.options(scheduling_strategy=NodeAffinity(joiner.node_id))
                        .remote(), timeout=30) == joiner.node_id
    assert nodes.stop(joiner, signal.SIGTERM) == 0

    def joiner_row():
        return {n["node_id"]: n for n in lightray.nodes()}[joiner.node_id]

    assert wait_for(lambda: not joiner_row()["alive"], timeout=10)
    assert joiner_row()["died"] == "it stopped", joiner_row()
    lightray.shutdown()
    assert nodes.stop(head, signal.SIGTERM) == 0
