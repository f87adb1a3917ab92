"""The control plane's decisions (lightray.agent.cluster.control_plane) and how the
agent's state hands RAFT and CONTROL ops to its I/O side: no sockets, no replica."""
import pytest

from lightray.agent import instructions as i
from lightray.agent.cluster import control_plane as cp
from lightray.agent.state import AgentState
from lightray.transport import messages as m

HEAD, B, C, D = "head0000", "b0000000", "c0000000", "d0000000"


# ------------------------------------------------------------ which voter, when

def test_a_lone_leader_adds_live_agents_in_join_order_until_there_are_enough():
    members = [(HEAD, True, True), (B, True, True), (C, True, True), (D, True, True)]
    assert cp.next_voter_change((HEAD,), members, 3) == ("add", B)
    assert cp.next_voter_change((HEAD, B), members, 3) == ("add", C)
    assert cp.next_voter_change((HEAD, B, C), members, 3) is None


def test_no_voter_is_added_when_one_replica_is_wanted():
    assert cp.next_voter_change((HEAD,), [(HEAD, True, True), (B, True, True)], 1) is None


def test_fewer_agents_than_wanted_makes_every_live_agent_a_voter_and_no_more():
    members = [(HEAD, True, True), (B, True, True)]
    assert cp.next_voter_change((HEAD, B), members, 3) is None


def test_a_dead_voter_is_removed_before_a_live_agent_takes_its_place():
    members = [(HEAD, True, True), (B, False, True), (C, True, True), (D, True, True)]
    assert cp.next_voter_change((HEAD, B, C), members, 3) == ("remove", B)
    assert cp.next_voter_change((HEAD, C), members, 3) == ("add", D)


def test_dead_agents_are_never_added_and_unknown_voters_are_left_alone():
    members = [(HEAD, True, True), (B, False, True), (C, True, True)]
    assert cp.next_voter_change((HEAD,), members, 3) == ("add", C)
    assert cp.next_voter_change((HEAD, "unknown0"), members, 3) == ("add", C)


def test_an_agent_not_heard_from_yet_is_not_added():
    members = [(HEAD, True, True), (B, True, False), (C, True, True)]
    assert cp.next_voter_change((HEAD,), members, 3) == ("add", C)
    assert cp.next_voter_change((HEAD, C), members, 3) is None


def test_the_last_voter_is_never_removed():
    assert cp.next_voter_change((B,), [(HEAD, True, True), (B, False, True)], 1) is None


# ------------------------------------------------------------ where a write goes

def test_writes_go_to_the_leader_the_replica_knows_before_one_a_heartbeat_named():
    roles = [(B, True, cp.LEADER)]
    assert cp.known_leader(C, roles) == C
    assert cp.known_leader(None, roles) == B
    assert cp.known_leader(None, [(B, False, cp.LEADER), (C, True, cp.REPLICA)]) is None


def test_a_write_made_here_goes_to_the_head_while_no_leader_is_known():
    assert cp.write_destination(B, None, HEAD, forwarded=False) == HEAD
    assert cp.write_destination(B, C, HEAD, forwarded=False) == C


def test_a_write_forwarded_here_goes_only_to_a_known_leader_never_back_on_a_guess():
    assert cp.write_destination(B, None, HEAD, forwarded=True) is None
    assert cp.write_destination(B, C, HEAD, forwarded=True) == C
    assert cp.write_destination(HEAD, HEAD, HEAD, forwarded=False) is None


def test_a_node_s_role_says_leader_replica_or_nothing():
    assert cp.role(False, False, False) is None
    assert cp.role(True, True, True) == cp.LEADER
    assert cp.role(True, False, True) == cp.REPLICA
    assert cp.role(True, False, False) is None     # removed, or not added yet


@pytest.mark.parametrize("text", ["0", "-2", "two", "1.5", ""])
def test_a_replica_count_that_is_not_a_whole_number_of_at_least_one_is_refused(text):
    with pytest.raises(ValueError, match="--control-replicas must be a whole number >= 1"):
        cp.replica_count(text)


def test_a_replica_count_is_read_as_a_number():
    assert cp.replica_count("1") == 1 and cp.replica_count("5") == 5


# ------------------------------------------------------------ the state's part

@pytest.fixture
def member():
    """An agent admitted to a cluster whose head is HEAD, B another member."""
    agent = AgentState(node_id="self0000", session="s", resources={"CPU": 1.0},
                       pipeline_depth=4, max_workers=2, store_capacity=1 << 30)
    agent.start_cluster("127.0.0.1:2", "127.0.0.1:1", 0.0, 0.0)
    node = {"resources": {"CPU": 1.0}, "protocol": m.PROTOCOL_VERSION}
    agent.handle_peer(HEAD, [(m.MEMBERS, [dict(node, node_id=HEAD, address="127.0.0.1:1"),
                                          dict(node, node_id=B, address="127.0.0.1:3")])],
                      0.0, 0.0)
    agent.take_instructions()
    return agent


def test_raft_bytes_from_a_member_go_to_the_io_side_untouched(member):
    assert member.handle_peer(B, [(m.RAFT, b"\x01raft")], 0.0, 0.0) is None
    assert [x for x in member.take_instructions() if type(x) is i.RaftMessages] == [
        i.RaftMessages([(B, b"\x01raft")])]


def test_control_writes_from_peers_are_kept_apart_from_this_agent_s_own(member):
    member.membership.control(("job_finish", b"j" * 8, None))
    member.handle_peer(B, [(m.CONTROL, [("kv_delete", "ns", b"k", None)])], 0.0, 0.0)
    [writes] = [x for x in member.take_instructions() if type(x) is i.ControlWrites]
    assert writes.commands == [("job_finish", b"j" * 8, None)]
    assert writes.forwarded == [("kv_delete", "ns", b"k", None)]


def test_node_commands_are_taken_from_the_head_only(member):
    command = ("node_dead", B, 1.0)
    refused = member.handle_peer(B, [(m.CONTROL, [command])], 0.0, 0.0)
    assert refused is not None and "other than the head may not send" in refused[0]
    assert member.handle_peer(HEAD, [(m.CONTROL, [command])], 0.0, 0.0) is None
    [writes] = [x for x in member.take_instructions() if type(x) is i.ControlWrites]
    assert writes.forwarded == [command]


def test_each_node_shows_the_control_role_its_heartbeat_reported(member):
    load = {"available": {"CPU": 10_000}, "hot": False, "control": cp.REPLICA}
    member.handle_peer(B, [(m.HEARTBEAT, load)], 0.0, 0.0)
    member.cluster_tick(0.1, 0.1, {"hot": False, "control": cp.LEADER})
    roles = {row["node_id"]: row["control"] for row in member.membership.nodes_info()}
    assert roles == {"self0000": cp.LEADER, B: cp.REPLICA, HEAD: None}
