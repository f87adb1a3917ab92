"""The ``lightray`` command line never answers a user's mistake, or a reader
that went away, with a Python traceback; every command takes --address and
--cluster-key; ``stop`` acts only on this user's agents, or those named."""
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
from conftest import pid_alive
from test_cli_cluster import REPO_ROOT, cli_env, run_cli

import lightray
from lightray import cli
from lightray.config import temp_dir

pytestmark = pytest.mark.timeout(120)


def one_line_error(result, *words):
    """result failed with one line on stderr naming words, and no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------ user errors

@pytest.mark.parametrize("address", ["127.0.0.1:1", "ipc:///nonexistent/agent.sock"])
def test_memory_at_an_address_with_nothing_there_is_a_one_line_error(address):
    line = one_line_error(run_cli("memory", "--address", address), "lightray memory:")
    assert address in line


def test_status_at_a_malformed_address_is_a_one_line_error():
    one_line_error(run_cli("status", "--address", "no-port-here"), "HOST:PORT")


def test_a_cluster_key_file_that_does_not_exist_is_a_one_line_error(own_cluster):
    head = own_cluster.add_node(head=True)
    for command in ("status", "memory"):
        line = one_line_error(run_cli(command, "--address", head.address,
                                      "--cluster-key", "/nonexistent/key"), command)
        assert "/nonexistent/key" in line


def test_memory_takes_a_cluster_agent_s_host_port_and_its_key(own_cluster):
    head = own_cluster.add_node(head=True)
    key = json.load(open(os.path.join(_session_dir(head), "agent.json")))["cluster_key_file"]
    result = run_cli("memory", "--address", head.address, "--cluster-key", key)
    assert result.returncode == 0, result.stderr
    assert f"object store of {head.address}" in result.stdout
    result = run_cli("memory", "--address", head.address, "--json")
    assert json.loads(result.stdout)["num_objects"] == 0


def test_a_closed_pipe_ends_status_quietly(own_cluster):
    # `lightray status --json | head`: the reader is gone before a byte is
    # written (its end of the pipe is closed before the command starts).
    head = own_cluster.add_node(head=True)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "-m", "lightray.cli", "status", "--json",
                                 "--address", head.address], stdout=write_end,
                                stderr=subprocess.PIPE, text=True, env=cli_env(), timeout=90,
                                cwd=REPO_ROOT)
    finally:
        os.close(write_end)
    assert result.returncode == 1
    assert result.stderr == ""


def test_a_closed_pipe_ends_a_shell_pipeline_into_head_quietly(own_cluster):
    own_cluster.add_node(head=True)
    own_cluster.add_node()
    shell = subprocess.run(f"{sys.executable} -m lightray.cli status --json | head -n 2",
                           shell=True, capture_output=True, text=True, env=cli_env(),
                           timeout=90, cwd=REPO_ROOT)
    assert shell.stdout.splitlines()[0] == "["
    assert "Traceback" not in shell.stderr and "BrokenPipe" not in shell.stderr


# ------------------------------------------------------------------- stop

def _session_dir(node):
    return next(r["session_dir"] for r in cli.running_agent_records()
                if r["node_id"] == node.node_id)


def test_stop_with_an_address_stops_only_that_agent(own_cluster):
    head = own_cluster.add_node(head=True)
    other = own_cluster.add_node()
    result = run_cli("stop", "--address", other.address, "--timeout", "60")
    assert result.returncode == 0, result.stderr
    assert "stopped 1 lightray agent(s)" in result.stdout and other.node_id in result.stdout
    assert other.process.wait(timeout=30) == 0
    assert head.process.poll() is None
    one_line_error(run_cli("stop", "--address", other.address), other.address)


def test_stop_with_a_cluster_key_stops_only_that_cluster_s_agents(own_cluster):
    from cluster_utils import Cluster
    first = own_cluster.add_node(head=True)
    second_cluster = Cluster()
    try:
        second = second_cluster.add_node(head=True)
        key = json.load(open(os.path.join(_session_dir(second), "agent.json")))[
            "cluster_key_file"]
        result = run_cli("stop", "--cluster-key", key, "--timeout", "60")
        assert result.returncode == 0, result.stderr
        assert "stopped 1 lightray agent(s)" in result.stdout
        assert second.process.wait(timeout=30) == 0
        assert first.process.poll() is None
    finally:
        second_cluster.shutdown()


@pytest.mark.skipif(os.geteuid() != 0, reason="starting another user's process needs root")
def test_stop_leaves_another_user_s_agent_alone():
    """Records of other users can sit in a shared LIGHTRAY_TEMP_DIR: an
    agent of another user recorded there is not ours to stop."""
    nobody = 65534
    # A shell whose command line names lightray.agent ("; exit" keeps it from
    # exec-ing sleep in its place).
    theirs = subprocess.Popen(["/bin/sh", "-c", "sleep 300; exit 0", "lightray.agent"],
                              user=nobody, cwd="/", start_new_session=True)
    fake = os.path.join(temp_dir(), "session_19700101-000000_2_0therus3")
    try:
        os.makedirs(fake)
        with open(os.path.join(fake, "agent.json"), "w") as f:
            json.dump({"node_id": "eeeeeeeeeeeeeeee", "pid": theirs.pid,
                       "ipc": f"ipc://{fake}/agent.sock", "address": "127.0.0.1:2",
                       "head": True}, f)
        assert [r["pid"] for r in cli.running_agent_records()] == [theirs.pid]
        result = run_cli("stop", "--force")
        assert result.returncode == 0, result.stderr
        assert "no lightray agents of yours running on this host" in result.stdout
        assert theirs.poll() is None and pid_alive(theirs.pid)
        one_line_error(run_cli("stop", "--address", "127.0.0.1:2"), "no lightray agent of yours")
        assert theirs.poll() is None
    finally:
        os.killpg(theirs.pid, signal.SIGKILL)   # the shell and its sleep
        theirs.wait()
        shutil.rmtree(fake, ignore_errors=True)


def test_every_agent_command_takes_address_and_cluster_key():
    for command in ("memory", "status", "stop"):
        result = run_cli(command, "--help")
        assert result.returncode == 0
        assert "--address" in result.stdout and "--cluster-key" in result.stdout, command


def test_the_cli_in_process_reports_a_user_error_in_one_line(capsys):
    assert cli.main(["memory", "--address", "127.0.0.1:1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not lightray.is_initialized()
