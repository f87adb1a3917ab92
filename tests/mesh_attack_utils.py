"""Talking to an agent's mesh port as an outsider would: a plain ZeroMQ DEALER.

    agents = logged_node(cluster, log, head=True, args=key_args)   # stderr kept in log
    stranger = dealer(head.address, b"nobody", key)                 # never joined
    peer = FakePeer(head.address, key)                              # joins properly
    rows = control_rows(head)                                       # control.db, read-only
    raw = zmtp_client(head.address, "CURVE")                        # a raw TCP socket after
                                                                    # a ZMTP greeting, no key
"""
from __future__ import annotations

import glob
import os
import socket
import sqlite3
import subprocess
import sys
import time

import zmq
from cluster_utils import REPO, Node

from lightray import config
from lightray.transport import messages as m

CONTEXT = zmq.Context.instance()


def make_key(path: str) -> str:
    subprocess.run([sys.executable, "-m", "lightray.agent", "--make-cluster-key", path],
                   check=True, capture_output=True, env=agent_env())
    return path


def curve_keys(path: str) -> tuple:
    """(public, secret) z85 of a cluster key file, whichever module reads it."""
    try:
        from lightray.transport.keys import read_cluster_key
    except ImportError:
        from lightray.transport.mesh import read_cluster_key
    key = read_cluster_key(path)
    if isinstance(key, tuple):
        return key[0], key[1]
    return key.public, key.secret


class MakesMarker:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def agent_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [REPO, os.path.dirname(os.path.abspath(__file__))]
        + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.pop("LIGHTRAY_ADDRESS", None)
    env.update(extra or {})
    return env


def logged_node(cluster, log_path: str, head: bool = False, args=(), command=None,
                env: dict | None = None) -> Node:
    """cluster.add_node, with the agent's stderr written to log_path (and env
    added to its environment)."""
    command = list(command or [sys.executable, "-m", "lightray.agent"])
    command += ["--num-cpus", "1", "--object-store-memory", str(cluster.object_store_memory)]
    command += ["--head", "--port", "0"] if head else ["--address", cluster.head.address]
    command += list(args)
    with open(log_path, "w") as log:
        return cluster.start(command, agent_env(env), head, stderr=log)


def dealer(address: str, identity: bytes, key: tuple | None) -> zmq.Socket:
    sock = CONTEXT.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, identity)
    sock.setsockopt(zmq.LINGER, 0)
    if key is not None:
        sock.curve_serverkey = key[0]
        sock.curve_publickey = key[0]
        sock.curve_secretkey = key[1]
    sock.connect(f"tcp://{address}")
    return sock


def session_dir_of(node: Node) -> str:
    found = glob.glob(os.path.join(config.temp_dir(), f"session_*_{node.pid}_*"))
    assert len(found) == 1, found
    return found[0]


def control_rows(head: Node) -> str:
    """Every row of the head's control store, as one text to search."""
    path = os.path.join(session_dir_of(head), "control", "control.db")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = []
        for table in ("nodes", "actors", "functions", "jobs", "kv"):
            rows += [repr((table,) + row) for row in db.execute(f"SELECT * FROM {table}")]
        return "\n".join(rows)
    finally:
        db.close()


def read_log(path: str) -> str:
    with open(path, errors="replace") as f:
        return f.read()


class FakePeer:
    """A node that joins the head properly (JOIN, then MEMBERS back on its own
    ROUTER), has no CPU, and heartbeats when asked."""

    def __init__(self, head_address: str, key: tuple | None, node_id: str = "fakepeer0001"):
        self.node_id = node_id
        self.router = CONTEXT.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        if key is not None:
            self.router.curve_server = True
            self.router.curve_publickey = key[0]
            self.router.curve_secretkey = key[1]
        port = self.router.bind_to_random_port("tcp://127.0.0.1")
        self.sock = dealer(head_address, node_id.encode(), key)
        self.last_heartbeat = 0.0
        self.send([(m.JOIN, {"node_id": node_id, "address": f"127.0.0.1:{port}",
                             "resources": {"CPU": 0.0}, "is_head": False,
                             "load": {"store_capacity": 0, "store_used": 0, "spilled": 0,
                                      "is_head": False},
                             "protocol": m.PROTOCOL_VERSION})])

    def send(self, ops: list) -> None:
        self.sock.send(m.encode(ops))

    def wait_for_members(self, timeout: float = 15.0) -> list:
        if not self.router.poll(int(timeout * 1000)):
            raise TimeoutError("the head did not answer the JOIN")
        return m.decode(self.router.recv_multipart()[1])

    def heartbeat_if_due(self) -> None:
        now = time.monotonic()
        if now - self.last_heartbeat > 0.25:
            self.last_heartbeat = now
            self.send([(m.HEARTBEAT, {"available": {"CPU": 0}, "hot": False, "queued": 0,
                                      "store_used": 0, "store_capacity": 0})])
            while self.router.poll(0):        # what the head sends us: read and forget
                self.router.recv_multipart()

    def close(self) -> None:
        self.send([(m.LEAVING,)])
        self.sock.close(linger=200)
        self.router.close(linger=0)


# ------------------------------------------------------------ raw ZMTP

def zmtp_greeting(mechanism: str, major: int = 3, minor: int = 0, as_server: bool = False) -> bytes:
    """The 64-byte greeting a ZeroMQ 3.x peer opens a TCP connection with."""
    name = mechanism.encode()[:20]
    return (b"\xff" + b"\x00" * 8 + b"\x7f" + bytes((major, minor)) + name
            + b"\x00" * (20 - len(name)) + bytes((int(as_server),)) + b"\x00" * 31)


def zmtp_client(address: str, mechanism: str | None, timeout: float = 5.0) -> socket.socket:
    """A plain TCP connection to address that sent a ZMTP greeting of mechanism
    (None: nothing yet); whatever follows is the caller's."""
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout)
    if mechanism is not None:
        sock.sendall(zmtp_greeting(mechanism))
    return sock


def log_lines(path: str) -> list:
    return read_log(path).splitlines()
