"""Finding the agents running on this host, for drivers and the command line.

    agent_at("127.0.0.1:6380")   the agent whose mesh listens there
    agent_at("ipc://<session>/agent.sock")
    auto_agent()                 init(address="auto"), `lightray status`: LIGHTRAY_ADDRESS,
                                 else the cluster whose head started last here,
                                 else the one cluster (one head, one agent, or agents
                                 sharing one key: the head may be gone) running here
    first_agent_at([a, b, ...])  the first of several HOST:PORT that runs here
    cluster_agent(key, addrs)    another live agent of a driver's cluster (re-attaching)

Every agent writes ``<session dir>/agent.json`` (node id, pid, ipc address,
mesh address or None, head or not, its cluster's public key and where that
key is kept) when it starts; a record counts while its pid lives. Errors:
ValueError for a malformed address or a wrong key, ConnectionError when no
agent answers to it.

Keys: a driver on the agent's host, of the agent's user, needs no key (the
agent's socket admits only its own user; the agent's key is in its record).
A key it is given anyway (``init(cluster_key=...)``, ``lightray status
--cluster-key``, ``LIGHTRAY_CLUSTER_KEY``) must be the cluster's:
``check_cluster_key`` says at once when it is not, and where the right one is.
"""
from __future__ import annotations

import json
import os

from . import config
from .agent.session import AGENT_RECORD, CURRENT_CLUSTER, pid_alive, temp_root
from .transport.keys import KEY_ENV, read_cluster_key

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


def parse_addresses(text: str, what: str = "address") -> list:
    """"HOST:PORT" or "HOST:PORT,HOST:PORT,...": the addresses, in order;
    ValueError naming the bad part."""
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, got {type(text).__name__}")
    addresses = [part.strip() for part in text.split(",")]
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{what} must be HOST:PORT or a comma-separated list of them, "
                             f"got {address!r} in {text!r}")
    if len(set(addresses)) != len(addresses):
        raise ValueError(f"{what} names an address twice: {text!r}")
    return addresses


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
        record = {"address": None}
        try:
            with open(os.path.join(session_dir, AGENT_RECORD)) as f:
                record = json.load(f)    # (its key: check_cluster_key)
        except (OSError, ValueError):
            pass
        return {**record, "ipc": address, "pid": pid, "session_dir": session_dir}
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


def first_agent_at(addresses: list) -> dict:
    """The record of the first of these agents (HOST:PORT each) that runs here."""
    problems = []
    for address in addresses:
        try:
            return agent_at(address)
        except ConnectionError as error:
            problems.append(str(error))
    raise ConnectionError(problems[0] if len(problems) == 1 else
                          "none of these agents runs on this host: " + "; ".join(problems))


def cluster_agent(cluster_public, addresses, exclude: str | None = None):
    """A live agent of the same cluster, for a driver whose agent is gone:
    one holding the same cluster key, or (a cluster without a key) one whose
    mesh address was a member's; None if none runs here. exclude: the
    session directory of the agent that is gone."""
    for record in running_agent_records():
        if not record.get("address") or record["session_dir"] == exclude:
            continue
        same_key = cluster_public is not None and record.get("cluster_public") == cluster_public
        if same_key or record["address"] in addresses:
            return record
    return None


def auto_agent() -> dict:
    """The agent init(address="auto") attaches to."""
    from_env = os.environ.get(config.ADDRESS_ENV, "")
    if from_env.startswith("ipc://"):    # (a job's driver on an agent without a cluster)
        return agent_at(from_env)
    if from_env and from_env != "auto":
        return first_agent_at(parse_addresses(from_env, config.ADDRESS_ENV))
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
    # The head is gone (SIGKILL), the rest of its cluster lives on: any of them.
    # (A cluster is told by its key; agents without one count one by one.)
    keys = {r.get("cluster_public") or r["address"] for r in cluster}
    if len(keys) == 1:
        return cluster[0]
    if cluster:
        raise ConnectionError(
            "several lightray agents run on this host and none is the cluster last started "
            "here; pick one (init(address=...), --address, or LIGHTRAY_ADDRESS):\n  "
            + "\n  ".join(describe(r) for r in cluster))
    raise NoClusterError("no lightray cluster is running on this host (no lightray agent was "
                         "started with --head or --address here)")


def check_cluster_key(record: dict, given: str | None = None) -> None:
    """The key file given (else the one LIGHTRAY_CLUSTER_KEY names, if any)
    must hold the key of the agent whose record this is: ValueError naming
    the file, what is wrong and where the right key is otherwise. No key given
    at all: nothing to check (see the module's docstring)."""
    source = "given" if given else f"named by {KEY_ENV}"
    path = given or os.environ.get(KEY_ENV) or None
    if path is None:
        return
    try:
        key = read_cluster_key(path)
    except ValueError as error:
        raise ValueError(f"{error} (the cluster key file {source})") from None
    where = record.get("address") or record.get("ipc")
    public = record.get("cluster_public")
    if public is None:
        if record.get("address"):
            raise ValueError(f"the cluster at {where} runs --insecure (no key), but a cluster "
                             f"key was {source}: {path}")
        return    # a record of an older lightray, without its key: nothing to compare
    if key.public.decode() != public:
        right = record.get("cluster_key_file") or "the key file its agents were started with"
        raise ValueError(f"the cluster key {path} ({source}) is not the key of the agent at "
                         f"{where}: its key is {right} (give that file, or no key: on this "
                         "host the agent's own key is used)")
