"""Finding the agents running on this host, for drivers and the command line.

    agent_at("127.0.0.1:6380")   the agent whose mesh listens there
    agent_at("ipc://<session>/agent.sock")
    auto_agent()                 init(address="auto"), `lightray status`: LIGHTRAY_ADDRESS,
                                 else the cluster whose head started last here,
                                 else the one cluster (one head, or one agent) running here

Every agent writes ``<session dir>/agent.json`` (node id, pid, ipc address,
mesh address or None, head or not) when it starts; a record counts while its
pid lives. Errors: ValueError for a malformed address, ConnectionError when
no agent answers to it.
"""
from __future__ import annotations

import json
import os

from . import config
from .agent.session import AGENT_RECORD, CURRENT_CLUSTER, pid_alive, temp_root

LOCAL_HOSTS = ("127.0.0.1", "localhost", "0.0.0.0", "")


class NoClusterError(ConnectionError):
    """No agent of a cluster runs on this host."""


def running_agent_records() -> list:
    """The agent.json records (plus session_dir) of the agents running on this host."""
    root = temp_root(create=False)   # refuses one another user could have planted records in
    if root is None:
        return []
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        session_dir = os.path.join(root, name)
        try:
            with open(os.path.join(session_dir, AGENT_RECORD)) as f:
                record = json.load(f)
        except (OSError, ValueError):
            continue
        if pid_alive(record.get("pid", 0)):
            record["session_dir"] = session_dir
            found.append(record)
    return found


def describe(record: dict) -> str:
    where = record.get("address") or record.get("ipc")
    role = ("head" if record.get("head") else
            "cluster agent" if record.get("address") else "runtime without a cluster")
    return f"{where}  (node {record.get('node_id')}, pid {record.get('pid')}, {role})"


def agent_at(address: str) -> dict:
    """The record of the running agent at HOST:PORT (its mesh) or ipc://..."""
    if not isinstance(address, str):
        raise TypeError(f"address must be a str, got {type(address).__name__}")
    if address.startswith("ipc://"):
        session_dir = os.path.dirname(address[len("ipc://"):])
        try:
            with open(os.path.join(session_dir, "agent.pid")) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            pid = 0
        if not pid or not pid_alive(pid):
            raise ConnectionError(f"no lightray agent is running at {address!r}")
        return {"ipc": address, "pid": pid, "session_dir": session_dir, "address": None}
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"cannot connect to {address!r}: give \"HOST:PORT\" of an agent on "
                         "this host (lightray-agent prints it), \"auto\", or no address to "
                         "start an embedded runtime")
    records = running_agent_records()
    for record in records:
        if record.get("address") == address:
            return record
    # 127.0.0.1:P, localhost:P and 0.0.0.0:P name the same agent.
    same_port = [r for r in records if r.get("address")
                 and r["address"].rpartition(":")[2] == port
                 and (host in LOCAL_HOSTS or r["address"].rpartition(":")[0] in LOCAL_HOSTS)]
    if len(same_port) == 1:
        return same_port[0]
    listening = ", ".join(r["address"] for r in records if r.get("address")) or "none"
    raise ConnectionError(f"no lightray agent listening on {address} runs on this host "
                          f"(agents here: {listening}); start one with "
                          f"lightray-agent --head --port {port}")


def auto_agent() -> dict:
    """The agent init(address="auto") attaches to."""
    from_env = os.environ.get(config.ADDRESS_ENV, "")
    if from_env and from_env != "auto":
        return agent_at(from_env)
    cluster = [r for r in running_agent_records() if r.get("address")]
    try:
        with open(os.path.join(config.temp_dir(), CURRENT_CLUSTER)) as f:
            current = f.read().strip()
    except OSError:
        current = ""
    for record in cluster:
        if current and record["address"] == current:
            return record
    heads = [r for r in cluster if r.get("head")]
    if len(cluster) == 1:
        return cluster[0]
    if len(heads) == 1:
        return heads[0]
    if cluster:
        raise ConnectionError(
            "several lightray agents run on this host and none is the cluster last started "
            "here; pick one (init(address=...), --address, or LIGHTRAY_ADDRESS):\n  "
            + "\n  ".join(describe(r) for r in cluster))
    raise NoClusterError("no lightray cluster is running on this host (no lightray agent was "
                         "started with --head or --address here)")
