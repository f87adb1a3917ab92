"""The replicated control store inside real agents (phase 1 of the control plane).

Agents on 127.0.0.1, each its own process (tests/cluster_utils.py); failures are
real SIGKILL and SIGSTOP. Each replica's store is read from its own
<session>/control/control.db while the cluster runs.
"""
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import wait_for
from mesh_attack_utils import (FakePeer, agent_env, curve_keys, logged_node, make_key,
                               read_log)

import lightray
from lightray.cli import running_agent_records
from lightray.store.control import ControlStore
from lightray.transport import messages as m


def roles() -> dict:
    return {n["node_id"]: n.get("control") for n in lightray.nodes() if n["alive"]}


def role_counts() -> list:
    return sorted(str(role) for role in roles().values())


def control_db(node) -> str:
    record = next(r for r in running_agent_records() if r["node_id"] == node.node_id)
    return os.path.join(record["session_dir"], "control", "control.db")


def stored(node) -> tuple:
    """(node id -> alive, last applied index) in node's replica of the store."""
    with ControlStore(control_db(node)) as store:
        return ({r.node_id: r.alive for r in store.nodes()}, store.last_applied_index())


def start(cluster, count: int, args=(), attach: int = 0) -> list:
    """count agents (the head first); the test attaches to the attach-th."""
    cluster.add_node(head=True, args=args)
    for _ in range(count - 1):
        cluster.add_node(args=args)
    lightray.init(address=cluster.nodes[attach].address)
    cluster.wait_for_nodes(count)
    return cluster.nodes


def jobs(node) -> list:
    with ControlStore(control_db(node)) as store:
        return store.jobs()


def test_three_agents_make_three_replicas_with_one_leader_and_each_holds_the_nodes(
        own_cluster):
    nodes = start(own_cluster, 3, attach=1)    # this driver's writes start at a follower
    ids = {n.node_id for n in nodes}
    assert wait_for(lambda: role_counts() == ["leader", "replica", "replica"])
    assert roles()[own_cluster.head.node_id] == "leader"
    for node in nodes:
        assert wait_for(lambda: stored(node)[0] == dict.fromkeys(ids, True)), node
        assert wait_for(lambda: any(job.running for job in jobs(node)))


def test_a_killed_replica_is_replaced_by_a_live_agent_that_catches_up(own_cluster):
    head, *others = start(own_cluster, 4, ["--control-replicas", "3"])
    assert wait_for(lambda: role_counts() == ["None", "leader", "replica", "replica"])
    assert roles()[head.node_id] == "leader"
    # (agents become voters in join order once their heartbeats come in)
    spare = next(n for n in others if roles()[n.node_id] is None)
    first, second = [n for n in others if n is not spare]
    own_cluster.kill(first)
    assert wait_for(lambda: roles().get(spare.node_id) == "replica", timeout=20), roles()
    assert role_counts() == ["leader", "replica", "replica"]
    expected = {head.node_id: True, first.node_id: False, second.node_id: True,
                spare.node_id: True}
    assert wait_for(lambda: stored(spare)[0] == expected), stored(spare)
    assert wait_for(lambda: stored(second)[0] == expected)


def test_a_replica_stopped_for_a_while_catches_up_when_it_resumes(own_cluster):
    head, _, stalled = start(own_cluster, 3)
    assert wait_for(lambda: roles().get(stalled.node_id) == "replica")
    before = stored(stalled)[1]
    os.kill(stalled.pid, signal.SIGSTOP)
    try:
        # Heartbeats keep the leader writing while the replica is stopped. The
        # stop stays well under the 3 s after which the head drops a silent
        # agent for good (it would then stop, not catch up).
        time.sleep(1.2)
        missed = stored(head)[1]
    finally:
        os.kill(stalled.pid, signal.SIGCONT)
    assert missed > before
    assert wait_for(lambda: stored(stalled)[1] >= missed)
    assert roles().get(stalled.node_id) == "replica"
    assert stalled.process.poll() is None


def test_when_another_replica_leads_the_head_s_writes_still_reach_every_store(own_cluster):
    head, first, second = start(own_cluster, 3)
    assert wait_for(lambda: role_counts() == ["leader", "replica", "replica"])
    for _ in range(5):
        # A short stall of the head (under the 3 s drop deadline): the others,
        # hearing no leader, elect one of themselves.
        os.kill(head.pid, signal.SIGSTOP)
        time.sleep(1.2)
        os.kill(head.pid, signal.SIGCONT)
        if wait_for(lambda: roles()[head.node_id] == "replica", timeout=3):
            break
    assert roles()[head.node_id] == "replica"
    # (the peers' roles come with their heartbeats: the new leader's may lag)
    assert wait_for(lambda: role_counts() == ["leader", "replica", "replica"]), roles()
    own_cluster.add_node()         # the head registers it, through the new leader
    expected = {n.node_id: True for n in own_cluster.nodes}
    for node in (head, first, second):
        assert wait_for(lambda: stored(node)[0] == expected), (node, stored(node))


def test_one_control_replica_is_the_head_alone(own_cluster):
    head, *others = start(own_cluster, 3, ["--control-replicas", "1"], attach=2)
    assert wait_for(lambda: roles()[head.node_id] == "leader")
    assert wait_for(lambda: stored(head)[0] == {n.node_id: True for n in own_cluster.nodes})
    assert wait_for(lambda: any(job.running for job in jobs(head)))   # sent by others[1]
    assert all(roles()[n.node_id] is None for n in others)
    for node in others:
        assert not os.path.exists(control_db(node))


def test_lightray_status_shows_each_node_s_control_role(own_cluster):
    start(own_cluster, 2)
    assert wait_for(lambda: role_counts() == ["leader", "replica"])
    text = subprocess.run([sys.executable, "-m", "lightray.cli", "status",
                           "--address", own_cluster.head.address], capture_output=True,
                          text=True, env=agent_env(), timeout=30).stdout
    assert "CONTROL" in text and "leader" in text and "replica" in text, text


@pytest.mark.parametrize("args", [["--head", "--port", "0", "--control-replicas", "0"],
                                  ["--head", "--port", "0", "--control-replicas", "three"],
                                  ["--head", "--port", "0", "--control-replicas", "2.5"],
                                  ["--control-replicas", "3"]])
def test_a_bad_control_replicas_value_is_refused_with_a_clear_error(args):
    done = subprocess.run([sys.executable, "-m", "lightray.agent", *args], capture_output=True,
                          text=True, env=agent_env(), timeout=30)
    assert done.returncode == 2
    if "--head" in args:
        assert f"--control-replicas must be a whole number >= 1, got {args[-1]!r}" in done.stderr
    else:
        assert "--control-replicas need --head or --address" in done.stderr


def test_raft_garbage_and_node_writes_from_a_member_are_dropped_and_logged_once(
        own_cluster, tmp_path):
    key_file = make_key(str(tmp_path / "cluster.key"))
    log = str(tmp_path / "head.log")
    head = logged_node(own_cluster, log, head=True,
                       args=["--cluster-key", key_file, "--control-replicas", "1"])
    lightray.init(address=head.address)
    peer = FakePeer(head.address, curve_keys(key_file))
    try:
        peer.wait_for_members()
        for n in range(200):
            peer.send([(m.RAFT, os.urandom(n % 50))])
            peer.heartbeat_if_due()
        peer.send([(m.CONTROL, [("node_dead", head.node_id, None)])])
        peer.send([(m.RAFT, b"x" * 100)])
        assert wait_for(lambda: "other than the head may not send" in read_log(log))
        assert wait_for(lambda: stored(head)[0].get(peer.node_id) is True)
        assert stored(head)[0][head.node_id] is True
        text = read_log(log)
        assert text.count(f"dropped a RAFT message from peer {peer.node_id}") == 1, text
        assert "Traceback" not in text and head.process.poll() is None
        assert lightray.get(lightray.remote(lambda: 7).remote(), timeout=30) == 7
    finally:
        peer.close()
