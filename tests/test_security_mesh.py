"""Attacks on the mesh port of real agents on 127.0.0.1 and the cluster key's
rules: without the key nothing reaches lightray, the agent keeps serving and
logs the refusal once; an agent of another cluster exits saying why; a driver
or `lightray status` given a wrong key fails at once saying where the right
one is; the bind rules hold."""
import os
import pickle
import socket
import stat
import subprocess
import sys

import pytest
import zmq
import zmq.utils.monitor
from conftest import wait_for
from mesh_attack_utils import MakesMarker, logged_node
from test_cluster_transport import agent_env, nodes, run_agent  # noqa: F401  (fixture, helpers)

import lightray
from lightray.transport.keys import (KEY_ENV, KEY_FILE, cluster_key_path, derive_stream_key,
                                     make_cluster_key, new_cluster_key, read_cluster_key)

pytestmark = pytest.mark.timeout(120)



@lightray.remote
def add(a, b):
    return a + b


ATTACKS = 50      # connections, each sending one pickle frame


def _attack_once(address, frame, client, own_key, head_public):
    """Connect as client, send frame; return once the agent has refused the
    connection (the handshake failed, or it hung up on raw bytes)."""
    host, _, port = address.rpartition(":")
    if client == "raw tcp":
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            raw.sendall(frame * 2)          # more than a ZMTP greeting's 64 bytes
            try:
                while raw.recv(4096):
                    pass                    # until the agent closes the connection
            except ConnectionResetError:
                pass
        return
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if client.startswith("wrong curve key"):
        if client.endswith("a new pair each time"):
            own_key = new_cluster_key()
        sock.curve_serverkey = head_public
        sock.curve_publickey, sock.curve_secretkey = own_key.public, own_key.secret
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                                      | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                      | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                      | zmq.EVENT_HANDSHAKE_SUCCEEDED)
    try:
        sock.connect(f"tcp://{address}")
        sock.send(frame, zmq.NOBLOCK)
        assert monitor.poll(10_000), "no handshake outcome within 10 s"
        event = zmq.utils.monitor.recv_monitor_message(monitor)["event"]
        assert event != zmq.EVENT_HANDSHAKE_SUCCEEDED, "the mesh admitted a stranger"
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close()


def _refusal_lines(log_path):
    with open(log_path) as f:
        return [line for line in f if "refused a mesh" in line]


@pytest.mark.parametrize("client", ["keyless", "wrong curve key", "raw tcp",
                                    "wrong curve key, a new pair each time"])
def test_a_pickle_sent_to_the_mesh_without_the_key_is_never_unpickled_and_logged_once(
        nodes, tmp_path, client):  # noqa: F811
    log_path = str(tmp_path / "head.log")
    head = logged_node(nodes, log_path, head=True)
    marker = str(tmp_path / "marker")
    with open(cluster_key_path(head.address)) as f:
        head_public = f.readline().strip().encode()
    frame = pickle.dumps([MakesMarker(marker)])
    own_key = new_cluster_key()        # the same pair every time unless the client says
    for _ in range(ATTACKS):
        _attack_once(head.address, frame, client, own_key, head_public)
    if client != "raw tcp":
        # (Bytes that are not a ZMTP greeting are dropped by ZeroMQ before any
        # handshake, with no event to report them by.)
        assert wait_for(lambda: _refusal_lines(log_path)), open(log_path).read()
    lightray.init(address=head.address)
    assert lightray.get(add.remote(2, 3), timeout=30) == 5
    assert not os.path.exists(marker)
    lines = _refusal_lines(log_path)
    assert len(lines) == (0 if client == "raw tcp" else 1), lines
    assert "Traceback" not in open(log_path).read()


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


# ------------------------------------------------- joining with the wrong key

def _run_to_exit(*args, timeout=30):
    """lightray-agent with these flags; its (returncode, stdout, stderr) once it
    exits by itself (a failure if it is still running after timeout)."""
    process = subprocess.Popen([sys.executable, "-m", "lightray.agent", "--num-cpus", "1",
                                "--object-store-memory", str(64 << 20), *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=agent_env(), stdin=subprocess.DEVNULL)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"the agent was still running after {timeout} s: {out!r} {err!r}")
    return process.returncode, out, err


@pytest.mark.parametrize("joiner", ["another cluster's key", "--insecure"])
def test_an_agent_the_head_refuses_in_the_handshake_exits_with_one_line_saying_why(
        nodes, tmp_path, joiner):  # noqa: F811
    head = nodes.add_node(head=True)
    if joiner == "--insecure":
        flags, cause = ["--insecure"], "requires its cluster key and this agent runs --insecure"
    else:
        other = str(tmp_path / "other.key")
        make_cluster_key(other)
        flags, cause = ["--cluster-key", other], f"refused this agent's cluster key ({other})"
    returncode, out, err = _run_to_exit("--address", head.address, *flags)
    assert returncode == 1, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lightray-agent: this agent cannot join the cluster: "
                               f"the head at {head.address} ")
    assert cause in lines[0], lines[0]
    assert "still trying" not in err
    lightray.init(address=head.address)
    assert lightray.get(add.remote(2, 3), timeout=30) == 5
    assert [n["node_id"] for n in lightray.nodes()] == [head.node_id]


# ------------------------------------------------ drivers and the cluster key

def _status(*args, env=None):
    return subprocess.run([sys.executable, "-m", "lightray.cli", "status", *args],
                          capture_output=True, text=True, timeout=60,
                          env={**agent_env(), **(env or {})})


@pytest.mark.parametrize("how", ["cluster_key=", KEY_ENV])
def test_a_driver_given_another_clusters_key_fails_at_once_naming_both_files(
        nodes, tmp_path, monkeypatch, how):  # noqa: F811
    head = nodes.add_node(head=True)
    other = str(tmp_path / "other.key")
    make_cluster_key(other)
    options = {}
    if how == KEY_ENV:
        monkeypatch.setenv(KEY_ENV, other)
    else:
        options["cluster_key"] = other
    with pytest.raises(ValueError) as raised:
        lightray.init(address=head.address, **options)
    message = str(raised.value)
    assert f"the cluster key {other} (" in message and f"agent at {head.address}" in message
    assert cluster_key_path(head.address) in message       # where the right one is
    assert (KEY_ENV in message) == (how == KEY_ENV)
    assert not lightray.is_initialized()


def test_a_missing_key_file_named_by_the_environment_is_a_clear_error(
        nodes, tmp_path, monkeypatch):  # noqa: F811
    head = nodes.add_node(head=True)
    missing = str(tmp_path / "missing.key")
    monkeypatch.setenv(KEY_ENV, missing)
    with pytest.raises(ValueError, match=f"cannot read the cluster key file {missing}: "
                                         f"No such file or directory .*named by {KEY_ENV}"):
        lightray.init(address=head.address)
    result = _status("--address", head.address)
    assert result.returncode == 1 and missing in result.stderr, result


def test_a_driver_given_the_clusters_own_key_attaches(nodes):  # noqa: F811
    head = nodes.add_node(head=True)
    lightray.init(address=head.address, cluster_key=cluster_key_path(head.address))
    assert lightray.get(add.remote(1, 2), timeout=30) == 3


def test_a_key_given_for_an_insecure_cluster_is_refused(nodes, tmp_path):  # noqa: F811
    head = nodes.add_node(head=True, args=["--insecure"])
    key = str(tmp_path / "some.key")
    make_cluster_key(key)
    with pytest.raises(ValueError, match="runs --insecure"):
        lightray.init(address=head.address, cluster_key=key)


def test_lightray_status_checks_the_key_it_is_given(nodes, tmp_path):  # noqa: F811
    head = nodes.add_node(head=True)
    other = str(tmp_path / "other.key")
    make_cluster_key(other)
    for flags, env in ((["--cluster-key", other], None), ([], {KEY_ENV: other})):
        result = _status("--address", head.address, *flags, env=env)
        assert result.returncode == 1, result
        assert result.stderr.startswith("lightray status: the cluster key " + other)
        assert cluster_key_path(head.address) in result.stderr
    right = _status("--address", head.address, "--cluster-key", cluster_key_path(head.address))
    assert right.returncode == 0 and head.node_id in right.stdout, right


def test_the_embedded_runtime_keeps_its_own_key_in_its_session_directory():
    lightray.init(num_cpus=1)
    runtime = lightray.api._runtime
    path = os.path.join(runtime.session_dir, KEY_FILE)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(runtime.session_dir).st_mode) == 0o700
    key = read_cluster_key(path)
    # It is the key the agent's stream sockets use.
    assert runtime.client.node_info["stream_key"] == derive_stream_key(key)
    assert lightray.get(add.remote(1, 1), timeout=30) == 2


def test_an_agent_whose_key_file_named_by_the_environment_is_missing_says_so(
        nodes, tmp_path):  # noqa: F811
    head = nodes.add_node(head=True)
    missing = str(tmp_path / "missing.key")
    result = run_agent("--address", head.address, env={KEY_ENV: missing})
    assert not result.started and result.returncode == 2, result
    assert f"cannot read the cluster key file {missing}" in result.stderr
    assert f"named by {KEY_ENV}" in result.stderr


def test_a_cluster_key_without_an_address_is_refused(tmp_path):
    with pytest.raises(ValueError, match="init\\(\\) without an address makes its own key"):
        lightray.init(cluster_key=str(tmp_path / "any.key"))
    assert not lightray.is_initialized()
