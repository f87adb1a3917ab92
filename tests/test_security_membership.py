"""Membership and message validation on the mesh, attacked with real agents on 127.0.0.1.

A peer that never joined may only JOIN; the head admits only its own protocol
version; a bad identity, frame or op is dropped and reported once, never
fatal, and nothing from it reaches the control store.
"""
import os
import subprocess
import sys

import pytest
from conftest import wait_for
from mesh_attack_utils import (agent_env, control_rows, curve_keys, dealer, logged_node,
                               make_key, read_log)

import lightray
from lightray import NodeAffinity
from lightray.agent.cluster.admission import check_ops
from lightray.transport import messages as m

pytestmark = pytest.mark.timeout(120)

STRANGER = "strangernode01"
MARK = "stranger-was-here"


@lightray.remote
def where(x):
    return x, lightray.get_runtime_context().node_id


def both_nodes_serve(head, other) -> None:
    for node in (head, other):
        value, ran_on = lightray.get(
            where.options(scheduling_strategy=NodeAffinity(node.node_id)).remote(21))
        assert (value, ran_on) == (21, node.node_id)


@pytest.fixture
def keyed(own_cluster, tmp_path):
    """A head and one agent sharing a cluster key; the head's stderr in a file."""
    key_file = make_key(str(tmp_path / "cluster.key"))
    log = str(tmp_path / "head.log")
    head = logged_node(own_cluster, log, head=True, args=["--cluster-key", key_file])
    other = logged_node(own_cluster, str(tmp_path / "other.log"),
                        args=["--cluster-key", key_file])
    lightray.init(address=head.address)
    own_cluster.wait_for_nodes(2)
    return own_cluster, head, other, curve_keys(key_file), log


# ------------------------------------------------------------- the frame format

def test_a_frame_without_the_header_is_refused_before_unpickling(tmp_path):
    marker = tmp_path / "marker"

    class Boom:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    import pickle
    with pytest.raises(m.BadMessage, match="no lightray header"):
        m.decode(pickle.dumps([Boom()]))
    assert not marker.exists()


def test_a_frame_of_another_protocol_version_names_both_versions():
    frame = bytearray(m.encode([(m.LEAVING,)]))
    frame[2] = m.PROTOCOL_VERSION + 1
    with pytest.raises(m.BadMessage, match="version") as caught:
        m.decode(bytes(frame))
    assert caught.value.version == m.PROTOCOL_VERSION + 1


def test_a_refusal_reads_whatever_its_version():
    frame = bytearray(m.encode_refusal("you are too new"))
    frame[2] = 200
    assert m.decode(bytes(frame)) == [(m.JOIN_REFUSED, "you are too new")]


def test_garbage_after_a_good_header_is_a_bad_message_not_a_crash():
    for body in (b"", b"\x80\x05junk", b"\x00" * 100):
        with pytest.raises(m.BadMessage, match="unpickle"):
            m.decode(m.encode([])[:m.HEADER_SIZE] + body)
    with pytest.raises(m.BadMessage, match="not a list"):
        m.decode(m.encode([])[:m.HEADER_SIZE] + m.encode([])[m.HEADER_SIZE:].replace(
            b"]", b")"))


def test_a_large_frame_decodes_from_a_memoryview():
    ops = [(m.FREE, [b"x" * 16] * 10_000)]
    assert m.decode(memoryview(m.encode(ops))) == ops


@pytest.mark.parametrize("op, problem", [
    ((m.CONTROL, [()]), "non-empty"),
    ((m.CONTROL, [("no_such_command", "n")]), "may not send"),
    ((m.RAFT, "not bytes"), "not bytes"),
    ((m.RAFT, b"x", b"y"), "fields"),
    ((m.CONTROL, [("kv_put", "ns", "not bytes", b"v", False, None)]), "malformed"),
    ((m.FORWARD, ()), "fields"),
    ((m.PULL, b"id", "seg", -1, 10), "offset"),
    ((m.FREE, "not a list"), "list of ids"),
    ((m.HEARTBEAT, {"available": {"CPU": "lots"}, "hot": False}), "resource amounts"),
    ((m.ACTOR_RELAY, b"a", ("create",)), "relay has"),
    ((m.DESCRIBED, 0, [(b"id", None)]), "payload"),
    ((999,), "no kind a peer sends"),
])
def test_each_malformed_peer_op_is_named(op, problem):
    with pytest.raises(m.BadMessage, match=problem):
        check_ops([op], None)


def test_a_data_frame_must_follow_a_pull_data_of_its_length():
    check_ops([(m.PULL_DATA, b"i" * 16, 0, 5)], 5)
    with pytest.raises(m.BadMessage, match="data frame"):
        check_ops([(m.PULL_DATA, b"i" * 16, 0, 5)], 6)
    with pytest.raises(m.BadMessage, match="without its data"):
        check_ops([(m.PULL_DATA, b"i" * 16, 0, 5)], None)


# ------------------------------------------------------------ real agents

def test_messages_from_a_node_that_never_joined_are_dropped_and_never_stored(keyed):
    cluster, head, other, key, log = keyed
    stranger = dealer(head.address, STRANGER.encode(), key)   # holds the key, never joined
    spec = (b"t" * 14, b"f" * 16, "f", None, [], [], 1, None, 0, False, None, 0, None)
    attacks = [
        [(m.CONTROL, [()])],
        [(m.CONTROL, [("node_register", STRANGER, "127.0.0.1:1", '{"CPU": 64}', "{}", None)])],
        [(m.CONTROL, [("kv_put", "default", MARK.encode(), MARK.encode(), True, None)])],
        [(m.CONTROL, [("function_export", MARK.encode(), MARK.encode(), None)])],
        [(m.FORWARD, spec, MARK.encode(), [])],
        [(m.PULL, b"o" * 16, "lr_segment", 0, 1 << 20)],
        [(m.HEARTBEAT, {"available": {"CPU": 640000}, "hot": False})],
        [(m.NODE_DEAD, other.node_id, "a stranger says so")],
        [(m.FREE, [b"o" * 16])],
        [(m.DESCRIBE, 0, [b"o" * 16])],
        [(m.ACTOR_RELAY, b"a" * 16, ("kill", True))],
    ]
    for ops in attacks:
        stranger.send(m.encode(ops))
    # Last, a JOIN the head must refuse: its answer says it read everything before.
    stranger.send(m.encode([(m.JOIN, {"node_id": STRANGER, "address": "127.0.0.1:1",
                                      "resources": {"CPU": 1.0}, "protocol": -1})]))
    assert stranger.poll(15_000), "the head never answered the JOIN"
    assert m.decode(stranger.recv())[0][0] == m.JOIN_REFUSED
    both_nodes_serve(head, other)      # the head kept serving; the turns since
    rows = control_rows(head)          # applied whatever it had to write
    assert STRANGER not in rows and MARK not in rows
    assert head.process.poll() is None and other.process.poll() is None
    assert {n["node_id"] for n in lightray.nodes() if n["alive"]} == {head.node_id,
                                                                       other.node_id}
    # Reported once per kind (rate-limited), never a traceback.
    text = read_log(log)
    assert text.count(f"node {STRANGER}, which has not joined") == 1, text
    assert text.count(f"peer {STRANGER}: CONTROL (op 0)") == 1, text
    assert "Traceback" not in text
    stranger.close()


def test_an_identity_that_is_not_utf8_does_not_kill_the_agent(keyed):
    cluster, head, other, key, log = keyed
    bad = dealer(head.address, b"\xff\xfe\x00bad", key)
    for _ in range(100):
        bad.send(m.encode([(m.CONTROL, [()])]))
    bad.send_multipart([b"a", b"b", b"c", b"d"])
    assert wait_for(lambda: "is not a node id" in read_log(log))
    both_nodes_serve(head, other)
    text = read_log(log)
    assert text.count("is not a node id") == 1 and "Traceback" not in text
    bad.close()


_OTHER_VERSION_AGENT = """
import sys
from lightray.transport import messages
messages.PROTOCOL_VERSION += 1
messages._HEADER = messages.MAGIC + bytes((messages.PROTOCOL_VERSION, messages.OPS))
from lightray.agent.cli import main
sys.exit(main())
"""


@pytest.mark.parametrize("in_header", [True, False], ids=["header", "join"])
def test_an_agent_of_another_protocol_version_is_refused_clearly_on_both_ends(
        keyed, tmp_path, in_header):
    cluster, head, other, key, log = keyed
    script = _OTHER_VERSION_AGENT
    if not in_header:     # the same frames as ours, but its JOIN says another version
        script = script.replace("messages._HEADER =", "_unused =")
    key_file = str(tmp_path / "cluster.key")
    process = subprocess.run(
        [sys.executable, "-c", script, "--address", head.address, "--num-cpus", "1",
         "--cluster-key", key_file], env=agent_env(), capture_output=True, text=True,
        timeout=60)
    assert process.returncode == 1, process
    version = m.PROTOCOL_VERSION
    assert (f"cannot join the cluster: the head refused it: it speaks lightray protocol "
            f"version {version + 1}, this cluster version {version}") in process.stderr
    text = read_log(log)
    assert f"protocol version {version + 1}" in text and "Traceback" not in text
    both_nodes_serve(head, other)
    assert {n["node_id"] for n in lightray.nodes() if n["alive"]} == {head.node_id,
                                                                       other.node_id}


def test_an_agent_that_is_not_the_head_drops_garbage_of_every_shape(keyed, tmp_path):
    cluster, head, other, key, log = keyed
    other_log = str(tmp_path / "other.log")
    sock = dealer(other.address, STRANGER.encode(), key)
    for frame in (b"", b"\x00", os.urandom(64), m.encode([])[:3], m.encode([])[:4] + b"\xff" * 9,
                  m.encode([(m.FORWARD,)]), m.encode([("not an op",)]),
                  m.encode([(m.JOIN, {"node_id": STRANGER})])):
        sock.send(frame)
    sock.send_multipart([m.encode([(m.PULL_DATA, b"x" * 16, 0, 3)]), b"abc"])
    sock.send(m.encode([(m.LEAVING,)]))
    sock.send(m.encode([(m.FREE, [b"o" * 16])]))
    assert wait_for(lambda: "which has not joined" in read_log(other_log))
    both_nodes_serve(head, other)
    text = read_log(other_log)
    assert other.process.poll() is None and "Traceback" not in text
    assert text.count(f"peer {STRANGER}: ") == 1, text    # once a minute per peer
    sock.close()
