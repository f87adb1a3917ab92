"""A cluster without a head: losing any agent, stalls, rejoining, joining anywhere.

Real agents on 127.0.0.1, each its own process (tests/cluster_utils.py), and
real signals: SIGKILL for a crash, SIGSTOP/SIGCONT for a stall (a GC pause, a
swapped VM, a debugger). The membership authority is the control leader;
a killed agent is found by its peers' refused reconnects, a stopped one only
by silence (LIGHTRAY_NODE_DEAD_AFTER_S).
"""
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import wait_for
from mesh_attack_utils import agent_env

import lightray
from lightray import NodeAffinity, exceptions


@lightray.remote
def where():
    return lightray.get_runtime_context().node_id


@lightray.remote
def add(a, b):
    return a + b


@lightray.remote
class Counter:
    def __init__(self):
        self.count = 0

    def bump(self):
        self.count += 1
        return self.count

    def node(self):
        return lightray.get_runtime_context().node_id


def rows() -> dict:
    return {n["node_id"]: n for n in lightray.nodes()}


def leader():
    return next((i for i, n in rows().items() if n["alive"] and n.get("control") == "leader"),
                None)


def start(cluster, count: int, env=None, attach: int = 0) -> list:
    """count agents, the head first, each a control replica (up to 3) once
    the leader added it; this driver attached to the attach-th."""
    cluster.add_node(head=True, env=env)
    for _ in range(count - 1):
        cluster.add_node(env=env)
    lightray.init(address=cluster.nodes[attach].address)
    cluster.wait_for_nodes(count)
    wanted = ["leader"] + ["replica"] * (min(count, 3) - 1)
    assert wait_for(lambda: sorted(str(n.get("control")) for n in lightray.nodes()
                                   if n["alive"] and n.get("control")) == wanted,
                    timeout=30), lightray.nodes()
    return cluster.nodes


def works() -> bool:
    """One task runs through this driver's agent (a driver whose agent died
    gets one clear RuntimeNotRunningError, then is attached again)."""
    try:
        return lightray.get(add.remote(1, 2), timeout=30) == 3
    except exceptions.RuntimeNotRunningError:
        return False


def status(address: str) -> str:
    return subprocess.run([sys.executable, "-m", "lightray.cli", "status", "--address", address],
                          capture_output=True, text=True, env=agent_env(), timeout=60).stdout


def test_sigkill_of_the_first_agent_leaves_a_working_cluster(own_cluster):
    head, first, second = start(own_cluster, 3, attach=1)
    assert wait_for(lambda: leader() == head.node_id, timeout=20)
    svc = Counter.options(name="svc", lifetime="detached",
                          scheduling_strategy=NodeAffinity(second.node_id)).remote()
    assert lightray.get(svc.bump.remote(), timeout=30) == 1
    own_cluster.kill(head)
    assert wait_for(lambda: not rows()[head.node_id]["alive"], timeout=20)
    assert wait_for(lambda: leader() in (first.node_id, second.node_id), timeout=20), [
        (n["node_id"], n["alive"], n["control"]) for n in lightray.nodes()]
    seen = set(lightray.get([where.options(scheduling_strategy="SPREAD").remote()
                             for _ in range(8)], timeout=60))
    assert seen <= {first.node_id, second.node_id} and seen
    found = lightray.get_actor("svc")
    assert lightray.get(found.bump.remote(), timeout=30) == 2
    assert lightray.get(found.node.remote(), timeout=30) == second.node_id
    text = status(first.address)
    new_leader = leader()
    line = next(line for line in text.splitlines() if line.startswith(new_leader))
    assert "leader" in line and "alive" in line, text
    dead = next(line for line in text.splitlines() if line.startswith(head.node_id))
    assert "dead" in dead, text


def test_a_driver_attached_through_the_killed_agent_reattaches_through_another(own_cluster):
    head, first, second = start(own_cluster, 3, attach=0)
    assert works()
    own_cluster.kill(head)
    # One clear error at most, then new work runs through a surviving agent.
    assert wait_for(works, timeout=30)
    assert lightray.get_runtime_context().node_id in (first.node_id, second.node_id)
    seen = set(lightray.get([where.options(scheduling_strategy="SPREAD").remote()
                             for _ in range(6)], timeout=60))
    assert seen <= {first.node_id, second.node_id}


def test_init_auto_finds_a_live_agent_when_the_first_one_is_gone(own_cluster, monkeypatch):
    head, first, _ = start(own_cluster, 3)
    lightray.shutdown()
    own_cluster.kill(head)
    monkeypatch.delenv("LIGHTRAY_ADDRESS", raising=False)
    lightray.init(address="auto")
    assert works()
    assert lightray.get_runtime_context().node_id != head.node_id


def test_a_sigstop_of_ten_seconds_is_survived_and_its_driver_works(own_cluster):
    head, other = start(own_cluster, 2, attach=1)
    assert works()
    os.kill(other.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        # The head shows it suspect, never dead (NODE_DEAD_AFTER is 30 s).
        suspect_seen = wait_for(lambda: "suspect (silent" in _status_line(head.address,
                                                                          other.node_id),
                                timeout=9)
        time.sleep(max(0.0, 10.0 - (time.monotonic() - stopped)))     # a 10 s stall
        assert "dead" not in _status_line(head.address, other.node_id)
    finally:
        os.kill(other.pid, signal.SIGCONT)
    assert suspect_seen
    assert works()
    assert all(n["alive"] for n in lightray.nodes())
    assert lightray.get(where.options(scheduling_strategy=NodeAffinity(head.node_id)).remote(),
                        timeout=30) == head.node_id
    assert other.process.poll() is None


def test_a_stall_past_the_deadline_rejoins_as_a_new_incarnation_and_its_driver_works(
        own_cluster):
    env = {"LIGHTRAY_NODE_DEAD_AFTER_S": "3"}
    head, first, stalled = start(own_cluster, 3, env=env, attach=2)
    assert works()
    os.kill(stalled.pid, signal.SIGSTOP)
    try:
        # Seen from the head (through its status): declared dead once silent 3 s.
        assert wait_for(lambda: f"{stalled.node_id}" in status(head.address)
                        and "dead" in _status_line(head.address, stalled.node_id), timeout=20)
    finally:
        os.kill(stalled.pid, signal.SIGCONT)
    # Back, it is told it was declared dead and joins again as incarnation 1:
    # every agent sees it alive again, and its driver never lost its runtime.
    assert wait_for(lambda: rows()[stalled.node_id]["incarnation"] == 1, timeout=30), [
        (n["node_id"], n["alive"], n["incarnation"], n.get("died")) for n in lightray.nodes()]
    assert wait_for(lambda: "alive" in _status_line(head.address, stalled.node_id),
                    timeout=30)
    assert wait_for(lambda: all(n["alive"] for n in lightray.nodes()), timeout=30), rows()
    assert works()
    for node in (head, first, stalled):
        assert lightray.get(where.options(scheduling_strategy=NodeAffinity(node.node_id))
                            .remote(), timeout=60) == node.node_id
    assert stalled.process.poll() is None


def test_a_stalled_leader_is_replaced_and_rejoins_when_it_resumes(own_cluster):
    env = {"LIGHTRAY_NODE_DEAD_AFTER_S": "3"}
    head, first, second = start(own_cluster, 3, env=env, attach=1)
    assert wait_for(lambda: leader() == head.node_id, timeout=20)
    os.kill(head.pid, signal.SIGSTOP)
    try:
        assert wait_for(lambda: not rows()[head.node_id]["alive"], timeout=20)
        assert wait_for(lambda: leader() in (first.node_id, second.node_id), timeout=20)
        assert works()                  # the cluster runs on without its head meanwhile
    finally:
        os.kill(head.pid, signal.SIGCONT)
    assert wait_for(lambda: rows()[head.node_id]["alive"]
                    and rows()[head.node_id]["incarnation"] == 1, timeout=30), rows()
    assert leader() in (first.node_id, second.node_id)
    assert lightray.get(where.options(scheduling_strategy=NodeAffinity(head.node_id)).remote(),
                        timeout=60) == head.node_id
    assert head.process.poll() is None


def _status_line(address: str, node_id: str) -> str:
    return next((line for line in status(address).splitlines() if line.startswith(node_id)), "")


def test_an_agent_joins_through_a_member_that_is_not_the_leader(own_cluster):
    head, other = start(own_cluster, 2)
    assert wait_for(lambda: leader() == head.node_id, timeout=20)
    third = own_cluster.start(
        [sys.executable, "-m", "lightray.agent", "--num-cpus", "1", "--address", other.address],
        agent_env(), head=False)
    own_cluster.wait_for_nodes(3)
    assert rows()[third.node_id]["alive"]
    assert lightray.get(where.options(scheduling_strategy=NodeAffinity(third.node_id)).remote(),
                        timeout=60) == third.node_id


def test_an_address_list_whose_first_agent_is_dead_joins_through_the_next(own_cluster):
    head, gone = start(own_cluster, 2)
    own_cluster.kill(gone)
    assert wait_for(lambda: not rows()[gone.node_id]["alive"], timeout=20)
    joined = own_cluster.start(
        [sys.executable, "-m", "lightray.agent", "--num-cpus", "1",
         "--address", f"{gone.address},{head.address}"], agent_env(), head=False)
    assert wait_for(lambda: rows().get(joined.node_id, {}).get("alive"), timeout=30)
    assert lightray.get(where.options(scheduling_strategy=NodeAffinity(joined.node_id))
                        .remote(), timeout=60) == joined.node_id
    lightray.shutdown()                  # a driver given a list takes the first that runs
    lightray.init(address=f"{gone.address},{joined.address}")
    assert lightray.get_runtime_context().node_id == joined.node_id


@pytest.mark.parametrize("text", ["", "a:1,", "a:1,b", "a:1,a:1", "a:99999"])
def test_a_bad_address_list_is_refused_naming_the_bad_part(text):
    with pytest.raises(ValueError, match="HOST:PORT|twice"):
        lightray.init(address=text)


@pytest.mark.parametrize("value", ["0", "soon", "100000"])
def test_a_bad_node_dead_after_is_refused_at_start(value):
    env = dict(agent_env(), LIGHTRAY_NODE_DEAD_AFTER_S=value)
    done = subprocess.run([sys.executable, "-m", "lightray.agent", "--head", "--port", "0",
                           "--insecure"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2
    assert "LIGHTRAY_NODE_DEAD_AFTER_S" in done.stderr and "from 1 to 86400" in done.stderr
