"""Attacks on the mesh port of real agents on 127.0.0.1: without the cluster's
key nothing reaches lightray, the agent keeps serving, and the bind rules hold."""
import os
import pickle
import stat
import time

import pytest
import zmq
from test_cluster_transport import nodes, run_agent  # noqa: F401  (fixture and helper)

import lightray
from lightray.transport.keys import cluster_key_path, new_cluster_key

pytestmark = pytest.mark.timeout(120)


class MakesMarker:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@lightray.remote
def add(a, b):
    return a + b


def _dealer(address, key=None):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if key is not None:
        head_public, own = key
        sock.curve_serverkey = head_public
        sock.curve_publickey, sock.curve_secretkey = own.public, own.secret
    sock.connect(f"tcp://{address}")
    return sock


@pytest.mark.parametrize("client", ["keyless", "wrong curve key"])
def test_a_pickle_sent_to_the_mesh_without_the_key_is_never_unpickled(nodes, tmp_path,  # noqa: F811
                                                                     client):
    head = nodes.add_node(head=True)
    marker = str(tmp_path / "marker")
    with open(cluster_key_path(head.address)) as f:
        head_public = f.readline().strip().encode()
    key = None if client == "keyless" else (head_public, new_cluster_key())
    sock = _dealer(head.address, key)
    for _ in range(5):
        sock.send(pickle.dumps([MakesMarker(marker)]), zmq.NOBLOCK)
    time.sleep(1.0)       # time for a (wrongly) admitted frame to be unpickled
    sock.close()
    assert not os.path.exists(marker)
    lightray.init(address=head.address)
    assert lightray.get(add.remote(2, 3), timeout=30) == 5


def test_a_heads_key_file_is_0600_in_a_0700_directory(nodes):  # noqa: F811
    head = nodes.add_node(head=True)
    path = cluster_key_path(head.address)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700


def test_insecure_with_a_non_loopback_bind_is_refused():
    result = run_agent("--head", "--port", "0", "--bind", "0.0.0.0", "--insecure")
    assert not result.started and result.returncode == 2, result
    assert "--insecure is refused" in result.stderr


def test_a_wildcard_bind_prints_the_exposed_address(nodes):  # noqa: F811
    nodes.add_node(head=True, args=["--bind", "0.0.0.0"])
    process = nodes.head.process
    lines = [process.stdout.readline() for _ in range(3)]
    assert any("exposed on 0.0.0.0:" in line for line in lines), lines
