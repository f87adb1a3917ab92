"""Several real agents on 127.0.0.1, started as a user starts them.

    cluster = Cluster()
    head = cluster.add_node(head=True, num_cpus=1)      # lightray-agent --head --port 0
    other = cluster.add_node(num_cpus=1)                # lightray-agent --address <head>
    cluster.wait_for_nodes(2)
    lightray.init(address=head.address)
    ...
    cluster.kill(other)                                 # SIGKILL, as a crash
    cluster.shutdown()                                  # SIGTERM the rest, reclaim the dead

Each agent is its own process with its own port, session directory and
segment namespace (its session id), exactly as on separate hosts.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_TIMEOUT = 20.0


class Node:
    def __init__(self, process: subprocess.Popen, node_id: str, address: str):
        self.process = process
        self.node_id = node_id
        self.address = address

    @property
    def pid(self) -> int:
        return self.process.pid

    def __repr__(self):
        return f"Node({self.node_id} at {self.address}, pid {self.pid})"


class Cluster:
    def __init__(self, object_store_memory: int = 2 << 30):
        self.nodes: list = []
        self.head = None
        self.object_store_memory = object_store_memory

    def add_node(self, head: bool = False, num_cpus: float = 1, env: dict | None = None,
                 args=()) -> Node:
        command = [sys.executable, "-m", "lightray.agent", "--num-cpus", str(num_cpus),
                   "--object-store-memory", str(self.object_store_memory)]
        if head:
            command += ["--head", "--port", "0"]
        else:
            command += ["--address", self.head.address]
        command += list(args)
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            [REPO, os.path.dirname(os.path.abspath(__file__))]
            + [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p])
        environment.update(env or {})
        return self.start(command, environment, head)

    def start(self, command: list, env: dict, head: bool, stderr=None) -> Node:
        """Run an agent command; its Node once it printed its listening line."""
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                   stderr=stderr, env=env, text=True)
        line = _read_line(process, START_TIMEOUT)
        words = line.split()
        if len(words) < 6 or words[:2] != ["lightray", "agent"]:
            process.kill()
            process.wait()
            raise RuntimeError(f"lightray-agent did not start: {line!r}")
        node = Node(process, words[2], words[-1])
        self.nodes.append(node)
        if head:
            self.head = node
        return node

    def wait_for_nodes(self, count: int, timeout: float = 15.0) -> None:
        """Until the agent this driver talks to knows count live nodes (itself
        included). The others may learn of each other a moment later; what they
        hear from a peer before the authority announces it is held, not lost
        (lightray.agent.cluster.early_ops)."""
        import lightray
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive = [n for n in lightray.nodes() if n["alive"]]
            if len(alive) >= count:
                return
            time.sleep(0.05)
        raise TimeoutError(f"only {lightray.nodes()} after {timeout} s")

    def kill(self, node: Node) -> None:
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(timeout=10)

    def stop(self, node: Node, sig=signal.SIGTERM, timeout: float = 15.0) -> int:
        node.process.send_signal(sig)
        return node.process.wait(timeout=timeout)

    def shutdown(self) -> None:
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            try:
                node.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
            if node.process.stdout is not None:
                node.process.stdout.close()
        # What a SIGKILLed agent left (segments, session directory), as the
        # next agent starting on a host would reclaim it.
        from lightray.agent.session import reclaim_dead_sessions
        reclaim_dead_sessions()


def _read_line(process: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        process.kill()
        process.wait()
        raise TimeoutError(f"lightray-agent printed nothing in {timeout} s")
    return process.stdout.readline()
