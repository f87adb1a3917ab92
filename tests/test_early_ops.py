"""Messages from a peer the authority has not announced yet, without sockets:
held (bounded in messages, bytes, senders and time), handled in order once its
NODE_JOINED or our MEMBERS arrives, dropped with the log line if it never joins."""
from lightray.agent.cluster import early_ops
from lightray.agent.cluster.early_ops import HOLD_SECONDS, EarlyOps
from lightray.agent.state import AgentState
from lightray.transport import messages as m

HEARTBEAT = (m.HEARTBEAT, {"available": {"CPU": 70000}, "hot": False})


def _agent(node_id: str, join: str | None) -> AgentState:
    agent = AgentState(node_id=node_id, session="s", resources={"CPU": 1.0},
                       pipeline_depth=4, max_workers=4, store_capacity=1 << 20)
    agent.start_cluster(f"127.0.0.1:{7000 + int(node_id[-1])}", join, 0.0, 0.0)
    return agent


def _node(agent: AgentState) -> dict:
    return agent.membership.join_op()[1]


def _members(head: AgentState, joiner: AgentState) -> tuple:
    head.handle_peer(joiner.node_id, [joiner.membership.join_op()], 0.0, 0.0)
    [members] = [op for op in head.effects.peer_outbox[joiner.node_id] if op[0] == m.MEMBERS]
    return members


def test_held_messages_are_bounded_in_count_bytes_and_senders(monkeypatch):
    monkeypatch.setattr(early_ops, "MAX_MESSAGES", 3)
    monkeypatch.setattr(early_ops, "MAX_BYTES", 100)
    monkeypatch.setattr(early_ops, "MAX_SENDERS", 2)
    held = EarlyOps()
    assert held.hold("a", [HEARTBEAT], 10, 0.0) and held.hold("b", [HEARTBEAT], 10, 0.0)
    assert not held.hold("c", [HEARTBEAT], 10, 0.0)          # a third sender
    assert not held.hold("a", [HEARTBEAT], 81, 0.0)          # over the bytes
    assert held.hold("a", [(m.FREE, [b"o" * 16])], 80, 0.0)
    assert not held.hold("a", [HEARTBEAT], 0, 0.0)           # over the messages
    assert held.take("a") == [[HEARTBEAT], [(m.FREE, [b"o" * 16])]]
    assert held.hold("c", [HEARTBEAT], 90, 0.0)              # room again once taken


def test_held_messages_of_a_sender_that_never_joins_are_dropped_after_the_hold():
    held = EarlyOps()
    held.hold("a", [HEARTBEAT], 10, 0.0)
    held.hold("a", [(m.FREE, [b"o" * 16])], 10, 1.0)
    held.expire(HOLD_SECONDS)
    assert held.take_drops() == []
    held.expire(HOLD_SECONDS + 0.1)
    assert held.take_drops() == [
        ("a", "dropped FREE, HEARTBEAT from node a, which has not joined the cluster")]
    assert not held and held.take("a") == []


def test_a_peer_heard_before_its_node_joined_is_handled_once_the_authority_announces_it():
    head, other, third = _agent("node1", None), _agent("node2", "x:1"), _agent("node3", "x:1")
    other.handle_peer(head.node_id, [_members(head, other)], 0.0, 0.0)
    third.handle_peer(head.node_id, [_members(head, third)], 0.0, 0.0)
    # third learned of other from its MEMBERS and speaks first: held, not dropped.
    assert other.handle_peer(third.node_id, [HEARTBEAT], 0.1, 0.1, 100) is None
    assert third.node_id not in other.membership.peers
    [joined] = [op for op in head.effects.peer_outbox[other.node_id] if op[0] == m.NODE_JOINED]
    other.handle_peer(head.node_id, [joined], 0.2, 0.2)
    assert other.membership.peers[third.node_id].available == {"CPU": 70000}
    assert not other.membership.early
    other.cluster_tick(HOLD_SECONDS + 1, HOLD_SECONDS + 1, {"hot": False})
    assert other.membership.early.take_drops() == []


def test_a_joining_agent_handles_a_member_heard_before_its_members_answer():
    head, member, joiner = _agent("node1", None), _agent("node2", "x:1"), _agent("node3", "x:1")
    member.handle_peer(head.node_id, [_members(head, member)], 0.0, 0.0)
    members = _members(head, joiner)
    assert joiner.membership.waiting_for_head()
    assert joiner.handle_peer(member.node_id, [HEARTBEAT], 0.1, 0.1, 100) is None
    joiner.handle_peer(head.node_id, [members], 0.2, 0.2)
    assert joiner.membership.peers[member.node_id].available == {"CPU": 70000}


def test_nothing_held_from_a_stranger_is_handled_and_a_refused_join_drops_it_at_once():
    head = _agent("node1", None)
    writes = list(head.effects.control_writes)
    cpu = {"available": {"CPU": 640000}, "hot": False}
    assert head.handle_peer("stranger", [(m.HEARTBEAT, cpu)], 0.0, 0.0, 100) is None
    assert "stranger" not in head.membership.peers and head.effects.control_writes == writes
    join = dict(_node(head), node_id="stranger", protocol=-1)
    why, answer = head.handle_peer("stranger", [(m.JOIN, join)], 0.1, 0.1)
    assert "protocol version -1" in answer
    assert head.membership.early.take_drops() == [
        ("stranger", "dropped HEARTBEAT from node stranger, which has not joined the cluster")]
    assert "stranger" not in head.membership.peers and head.effects.control_writes == writes


def test_a_stranger_past_the_bounds_is_dropped_with_the_log_line_at_once(monkeypatch):
    monkeypatch.setattr(early_ops, "MAX_BYTES", 100)
    head = _agent("node1", None)
    why, answer = head.handle_peer("stranger", [HEARTBEAT], 0.0, 0.0, 101)
    assert why == "dropped HEARTBEAT from node stranger, which has not joined the cluster"
    assert answer is None
