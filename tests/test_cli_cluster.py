"""``lightray status`` and ``lightray stop`` against real agents on 127.0.0.1.

The command line runs as a subprocess with this run's environment (its
LIGHTRAY_TEMP_DIR and LIGHTRAY_SEGMENT_PREFIX), as a user would run it, or
in-process through lightray.cli.main where a test polls it.
"""
import json
import os
import signal
import subprocess
import sys

import pytest
from cluster_utils import Cluster
from conftest import available_cpus, pid_alive, wait_for

import lightray
from lightray import cli
from lightray.agent.session import CURRENT_CLUSTER
from lightray.config import temp_dir

pytestmark = pytest.mark.timeout(120)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli_env(**extra):
    env = dict(os.environ)
    env.pop("LIGHTRAY_ADDRESS", None)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def run_cli(*args, **env):
    return subprocess.run([sys.executable, "-m", "lightray.cli", *args], check=False,
                          capture_output=True, text=True, env=cli_env(**env), timeout=90,
                          cwd=REPO_ROOT)


def line_of(output, node):
    found = [line for line in output.splitlines() if line.startswith(node.node_id)]
    assert len(found) == 1, (node, output)
    return found[0]


def status_json(capsys, *args):
    """`lightray status --json` run in this process: the nodes by id."""
    capsys.readouterr()
    assert cli.main(["status", "--json", *args]) == 0
    return {n["node_id"]: n for n in json.loads(capsys.readouterr().out)}


def session_dir_of(node):
    return next(r["session_dir"] for r in cli.running_agent_records()
                if r["node_id"] == node.node_id)


@pytest.fixture
def no_address_env(monkeypatch):
    monkeypatch.delenv("LIGHTRAY_ADDRESS", raising=False)



# ------------------------------------------------------------------ status

def heartbeats_seen():
    """True once every node's store use is known (a peer reports it in its
    heartbeats, the first one up to half a second after it joined)."""
    return all(n["store_capacity"] for n in lightray.nodes())


def test_status_lists_every_node_with_its_address_usage_and_state(cluster):
    assert wait_for(lambda: available_cpus() == 3.0 and heartbeats_seen())
    result = run_cli("status")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"lightray cluster at {cluster.head.address}: 3 node(s), 3 alive, 0 dead" in out
    for node in cluster.nodes:
        line = line_of(out, node)
        words = line.split()
        assert words[1] == node.address and words[2] == "alive"
        assert "CPU 0.0/1.0" in line
        assert ("head" in words) == (node is cluster.head)
        assert "0.0/2,048.0" in line          # store MiB used/capacity


def test_status_shows_used_resources_while_a_task_runs(cluster, tmp_path):
    started = tmp_path / "started"

    @lightray.remote
    def hold(path):
        import time
        open(path, "w").close()
        time.sleep(600)

    ref = hold.options(scheduling_strategy=lightray.NodeAffinity(cluster.nodes[1].node_id)
                       ).remote(str(started))
    assert wait_for(started.exists, timeout=30)
    result = run_cli("status")
    assert result.returncode == 0, result.stderr
    assert "CPU 1.0/1.0" in line_of(result.stdout, cluster.nodes[1])
    lightray.cancel(ref, force=True)


def test_status_shows_a_sigkilled_agent_dead_within_5_s(cluster, capsys, no_address_env):
    victim = cluster.nodes[2]
    cluster.kill(victim)
    assert wait_for(lambda: not status_json(capsys)[victim.node_id]["alive"],
                    timeout=5.0, interval=0.1)
    nodes = status_json(capsys)
    assert nodes[victim.node_id]["died"]
    assert all(nodes[n.node_id]["alive"] for n in cluster.nodes[:2])
    result = run_cli("status")
    assert result.returncode == 0, result.stderr
    assert "3 node(s), 2 alive, 1 dead" in result.stdout
    line = line_of(result.stdout, victim)
    assert f"dead ({nodes[victim.node_id]['died']})" in line
    assert "CPU ?/1.0" in line
    for node in cluster.nodes[:2]:
        assert line_of(result.stdout, node).split()[2] == "alive"


def test_status_json_is_the_list_of_nodes(cluster):
    assert wait_for(heartbeats_seen)
    result = run_cli("status", "--json")
    assert result.returncode == 0, result.stderr
    nodes = {n["node_id"]: n for n in json.loads(result.stdout)}
    assert set(nodes) == {n.node_id for n in cluster.nodes}
    for node in cluster.nodes:
        row = nodes[node.node_id]
        assert row["address"] == node.address and row["alive"] is True
        assert row["is_head"] is (node is cluster.head)
        assert row["resources"]["CPU"] == 1.0
        assert row["store_capacity"] == 2 << 30
        assert {"available", "store_used", "spilled"} <= set(row)


def test_status_address_of_a_node_that_is_not_the_head(cluster):
    other = cluster.nodes[1]
    port = other.address.rpartition(":")[2]
    for address in (other.address, f"localhost:{port}"):
        result = run_cli("status", "--address", address)
        assert result.returncode == 0, result.stderr
        assert f"lightray cluster at {address}: 3 node(s), 3 alive" in result.stdout
        for node in cluster.nodes:
            assert line_of(result.stdout, node).split()[1] == node.address
    # LIGHTRAY_ADDRESS names it too.
    result = run_cli("status", LIGHTRAY_ADDRESS=other.address)
    assert result.returncode == 0, result.stderr
    assert f"lightray cluster at {other.address}:" in result.stdout


def test_status_of_an_address_no_agent_listens_on_fails(cluster):
    result = run_cli("status", "--address", "127.0.0.1:1")
    assert result.returncode == 1
    assert "no lightray agent listening on 127.0.0.1:1" in result.stderr
    assert cluster.head.address in result.stderr


def test_status_with_no_cluster_running_fails_clearly():
    result = run_cli("status")
    assert result.returncode == 1
    assert "no lightray cluster is running on this host" in result.stderr
    assert result.stdout == ""


def test_status_of_an_embedded_runtime_by_its_ipc_address():
    lightray.init(num_cpus=1)
    (record,) = cli.running_agent_records()
    assert record["address"] is None
    assert wait_for(lambda: available_cpus() == 1.0)
    result = run_cli("status")
    assert result.returncode == 1
    assert "no lightray cluster is running on this host" in result.stderr
    assert record["ipc"] in result.stderr       # and how to see the runtime
    result = run_cli("status", "--address", record["ipc"])
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines()
                if line.startswith(record["node_id"]))
    assert line.split()[1:4] == ["(embedded)", "alive", "head"]
    assert "CPU 0.0/1.0" in line
    assert "1 node(s), 1 alive" in result.stdout


def test_status_picks_the_cluster_last_started_else_asks_which(own_cluster):
    first = own_cluster.add_node(head=True)
    second = Cluster()
    try:
        last = second.add_node(head=True)
        # The head started last wrote current_cluster.
        result = run_cli("status")
        assert result.returncode == 0, result.stderr
        assert f"lightray cluster at {last.address}: 1 node(s)" in result.stdout
        assert line_of(result.stdout, last)
        # LIGHTRAY_ADDRESS comes first.
        result = run_cli("status", LIGHTRAY_ADDRESS=first.address)
        assert result.returncode == 0, result.stderr
        assert line_of(result.stdout, first)
        # Without a record of the last one, two candidates: no guess.
        os.unlink(os.path.join(temp_dir(), CURRENT_CLUSTER))
        result = run_cli("status")
        assert result.returncode == 1
        assert "several lightray agents" in result.stderr
        assert first.address in result.stderr and last.address in result.stderr
    finally:
        second.shutdown()


# -------------------------------------------------------------------- stop

def test_stop_stops_every_agent_of_a_cluster_cleanly(own_cluster):
    own_cluster.add_node(head=True)
    own_cluster.add_node()
    own_cluster.add_node()
    lightray.init(address=own_cluster.head.address)
    own_cluster.wait_for_nodes(3)
    lightray.shutdown()
    dirs = [session_dir_of(node) for node in own_cluster.nodes]
    result = run_cli("stop", "--timeout", "60")
    assert result.returncode == 0, result.stderr
    assert "stopped 3 lightray agent(s)" in result.stdout
    for node in own_cluster.nodes:
        assert node.node_id in result.stdout
        # SIGTERM: each ran its own clean-up and exited 0.
        assert node.process.wait(timeout=30) == 0
    assert not any(os.path.exists(d) for d in dirs)
    assert cli.running_agent_records() == []
    result = run_cli("status")
    assert result.returncode == 1
    assert "no lightray cluster is running on this host" in result.stderr


def test_stop_sigkills_an_agent_still_running_after_the_timeout(own_cluster):
    head = own_cluster.add_node(head=True)
    stuck = own_cluster.add_node()
    stuck_dir = session_dir_of(stuck)
    os.kill(stuck.pid, signal.SIGSTOP)     # SIGTERM stays pending; SIGKILL still works
    result = run_cli("stop", "--timeout", "1")
    assert result.returncode == 0, result.stderr
    assert "sending SIGKILL" in result.stderr
    assert "stopped 2 lightray agent(s)" in result.stdout
    assert stuck.process.wait(timeout=30) == -signal.SIGKILL
    assert head.process.wait(timeout=30) == 0
    # Its segments and session directory were reclaimed (no_leaks checks the
    # segments).
    assert not os.path.exists(stuck_dir)


def test_stop_force_sigkills_at_once_and_reclaims_what_they_leave(own_cluster):
    import numpy as np
    from conftest import shm_entries
    own_cluster.add_node(head=True)
    own_cluster.add_node()
    lightray.init(address=own_cluster.head.address)
    own_cluster.wait_for_nodes(2)
    before = shm_entries()
    # A driver still attached, holding an object in the head's store.
    ref = lightray.put(np.ones(4 << 20, dtype=np.uint8))
    assert shm_entries() - before
    dirs = [session_dir_of(node) for node in own_cluster.nodes]
    result = run_cli("stop", "--force")
    assert result.returncode == 0, result.stderr
    assert "stopped 2 lightray agent(s)" in result.stdout
    for node in own_cluster.nodes:
        assert node.process.wait(timeout=30) == -signal.SIGKILL
    assert not any(os.path.exists(d) for d in dirs)
    assert not shm_entries() - before
    del ref
    lightray.shutdown()        # detaching from a killed agent neither hangs nor raises


def test_stop_with_nothing_running_says_so():
    result = run_cli("stop")
    assert result.returncode == 0, result.stderr
    assert "no lightray agents of yours running on this host" in result.stdout


def test_stop_leaves_an_embedded_runtime_alone(own_cluster):
    @lightray.remote
    def double(x):
        return 2 * x

    lightray.init(num_cpus=1)
    (embedded,) = cli.running_agent_records()
    head = own_cluster.add_node(head=True)
    result = run_cli("stop")
    assert result.returncode == 0, result.stderr
    assert "stopped 1 lightray agent(s)" in result.stdout
    assert head.process.wait(timeout=30) == 0
    assert pid_alive(embedded["pid"]) and os.path.isdir(embedded["session_dir"])
    assert lightray.get(double.remote(21), timeout=30) == 42
    result = run_cli("stop")
    assert result.returncode == 0
    assert "no lightray agents of yours running on this host" in result.stdout
    assert pid_alive(embedded["pid"])


def test_stop_stops_a_lone_agent_started_by_hand():
    process = subprocess.Popen([sys.executable, "-m", "lightray.agent", "--num-cpus", "1",
                                "--object-store-memory", str(64 << 20)],
                               stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                               env=cli_env(), cwd=REPO_ROOT)
    try:
        words = process.stdout.readline().split()
        assert words[:2] == ["lightray", "agent"], words
        assert wait_for(lambda: len(cli.running_agent_records()) == 1)
        result = run_cli("stop")
        assert result.returncode == 0, result.stderr
        assert "stopped 1 lightray agent(s)" in result.stdout
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()


def test_stop_never_signals_a_process_that_is_not_an_agent(tmp_path):
    """A record whose pid now belongs to another program (the agent died and
    its pid was reused) must not get that program killed."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    fake = os.path.join(temp_dir(), "session_19700101-000000_1_deadbeef")
    try:
        os.makedirs(fake)
        with open(os.path.join(fake, "agent.json"), "w") as f:
            json.dump({"node_id": "ffffffffffffffff", "pid": bystander.pid,
                       "ipc": f"ipc://{fake}/agent.sock", "address": "127.0.0.1:1",
                       "head": True}, f)
        assert [r["pid"] for r in cli.running_agent_records()] == [bystander.pid]
        result = run_cli("stop", "--force")
        assert result.returncode == 0, result.stderr
        assert "no lightray agents of yours running on this host" in result.stdout
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
        import shutil
        shutil.rmtree(fake, ignore_errors=True)
