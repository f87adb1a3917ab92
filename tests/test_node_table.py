"""The liveness rules without sockets: the node table (silence, suspicion,
incarnations), the refused-reconnect clock, LIGHTRAY_NODE_DEAD_AFTER_S, and
the membership's rejoin and relay decisions on a plain AgentState."""
import pytest
import zmq

from lightray import config
from lightray.agent.cluster.node_table import ALIVE, DEAD, SUSPECT, NodeTable
from lightray.agent.state import AgentState
from lightray.transport import messages as m
from lightray.transport.peer_watch import REFUSED_FOR, RefusalClock


def test_a_peer_silent_for_two_seconds_is_suspect_and_dead_only_after_the_deadline():
    table = NodeTable(dead_after=30.0)
    table.add("b", 0, now=0.0)
    assert table.verdict("b", 1.9) == ALIVE
    assert table.verdict("b", 2.0) == SUSPECT
    assert table.verdict("b", 29.9) == SUSPECT
    assert table.overdue(29.9) == []
    assert table.verdict("b", 30.0) == DEAD
    assert table.overdue(30.0) == ["b"]


def test_hearing_from_a_peer_restarts_its_count():
    table = NodeTable(dead_after=3.0)
    table.add("b", 0, now=0.0)
    table.heard("b", 2.5)
    assert table.verdict("b", 4.0) == ALIVE
    assert table.silence("b", 4.0) == pytest.approx(1.5)
    assert table.overdue(5.4) == [] and table.overdue(5.5) == ["b"]


def test_overdue_peers_come_longest_silent_first_and_dead_ones_not_again():
    table = NodeTable(dead_after=3.0)
    table.add("late", 0, now=1.0)
    table.add("early", 0, now=0.0)
    assert table.overdue(10.0) == ["early", "late"]
    table.mark_dead("early")
    assert table.overdue(10.0) == ["late"]
    assert table.verdict("early", 0.0) == DEAD
    table.heard("early", 11.0)           # a dead incarnation is not revived by a message
    assert table.verdict("early", 11.0) == DEAD


def test_a_late_tick_means_this_agent_stood_still_and_forgives_the_peers_silence():
    table = NodeTable(dead_after=3.0)
    table.add("b", 0, now=0.0)
    assert not table.tick(0.5)
    assert table.tick(10.5)              # SIGSTOPped for 10 s: our silence, not theirs
    assert table.verdict("b", 10.5) == ALIVE
    assert table.overdue(13.4) == [] and table.overdue(13.5) == ["b"]


def test_news_about_an_earlier_incarnation_is_stale():
    table = NodeTable(dead_after=3.0)
    table.add("b", 0, now=0.0)
    table.mark_dead("b")
    assert table.is_newer("b", 1) and not table.is_newer("b", 0)
    table.add("b", 1, now=5.0)           # it joined again
    assert table.verdict("b", 5.0) == ALIVE
    assert not table.is_current("b", 0)  # a NODE_DEAD still in flight about incarnation 0
    assert table.is_current("b", 1)
    assert not table.is_newer("x", 3)    # a node never seen is not a "later incarnation"


def test_suspicion_never_comes_later_than_death():
    table = NodeTable(dead_after=1.0)
    table.add("b", 0, now=0.0)
    assert table.verdict("b", 1.0) == DEAD


def test_reconnects_refused_for_a_second_mean_the_peer_is_gone():
    clock = RefusalClock()
    assert not clock.event(zmq.EVENT_CONNECTED, 0.0)
    assert not clock.event(zmq.EVENT_DISCONNECTED, 1.0)          # SIGKILL: the link breaks
    assert not clock.event(zmq.EVENT_CONNECT_RETRIED, 1.1)
    assert not clock.event(zmq.EVENT_CONNECT_RETRIED, 1.0 + REFUSED_FOR - 0.05)
    assert clock.event(zmq.EVENT_CONNECT_RETRIED, 1.0 + REFUSED_FOR)
    assert not clock.event(zmq.EVENT_CONNECT_RETRIED, 5.0)       # said once


def test_a_reconnect_that_succeeds_between_failures_restarts_the_clock():
    clock = RefusalClock()
    clock.event(zmq.EVENT_DISCONNECTED, 0.0)
    clock.event(zmq.EVENT_CONNECTED, 0.6)                        # it restarted, or a blip
    clock.event(zmq.EVENT_CONNECT_RETRIED, 0.9)
    assert not clock.event(zmq.EVENT_CONNECT_RETRIED, 1.5)
    assert clock.event(zmq.EVENT_CONNECT_RETRIED, 1.0 + REFUSED_FOR)


def test_node_dead_after_defaults_to_thirty_seconds_and_takes_a_number(monkeypatch):
    monkeypatch.delenv(config.NODE_DEAD_AFTER_ENV, raising=False)
    assert config.node_dead_after() == 30.0
    monkeypatch.setenv(config.NODE_DEAD_AFTER_ENV, "3")
    assert config.node_dead_after() == 3.0


@pytest.mark.parametrize("raw", ["0", "0.5", "86401", "-3", "soon", "nan", "inf"])
def test_a_bad_node_dead_after_is_refused_naming_the_variable_and_the_range(monkeypatch, raw):
    monkeypatch.setenv(config.NODE_DEAD_AFTER_ENV, raw)
    with pytest.raises(ValueError, match=r"LIGHTRAY_NODE_DEAD_AFTER_S=.*from 1 to 86400"):
        config.node_dead_after()


# ----------------------------------------------- the membership on a plain state

def _agent(node_id: str, join: str | None, dead_after: float = 3.0) -> AgentState:
    agent = AgentState(node_id=node_id, session="s", resources={"CPU": 1.0},
                       pipeline_depth=4, max_workers=4, store_capacity=1 << 20)
    agent.start_cluster(f"127.0.0.1:{7000 + int(node_id[-1])}", join, 0.0, 0.0,
                        dead_after=dead_after)
    return agent


def _node(agent: AgentState) -> dict:
    return agent.membership.join_op()[1]


def _ops(agent: AgentState, to: str, kind: int) -> list:
    return [op for op in agent.effects.peer_outbox.get(to, []) if op[0] == kind]


def _admitted(head: AgentState, joiner: AgentState) -> None:
    head.handle_peer(joiner.node_id, [joiner.membership.join_op()], 0.0, 0.0)
    [members] = _ops(head, joiner.node_id, m.MEMBERS)
    joiner.handle_peer(head.node_id, [members], 0.0, 0.0)
    head.effects.peer_outbox.clear()
    joiner.effects.peer_outbox.clear()


def test_a_member_that_is_not_the_authority_relays_a_join_to_it():
    head, relay, joiner = _agent("node1", None), _agent("node2", "x:1"), _agent("node3", "x:1")
    _admitted(head, relay)
    assert relay.handle_peer(joiner.node_id, [joiner.membership.join_op()], 0.0, 0.0) is None
    [relayed] = _ops(relay, head.node_id, m.JOIN_VIA)
    head.handle_peer(relay.node_id, [relayed], 0.0, 0.0)
    [members] = _ops(head, joiner.node_id, m.MEMBERS)       # the authority answers the joiner
    assert {n["node_id"] for n in members[1]} == {head.node_id, relay.node_id}
    assert _ops(head, relay.node_id, m.NODE_JOINED)


def test_a_node_declared_dead_that_speaks_again_rejoins_as_its_next_incarnation():
    head, stalled = _agent("node1", None), _agent("node2", "x:1")
    _admitted(head, stalled)
    for now in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5):
        head.cluster_tick(now, now, {"hot": False})
    assert not head.membership.peers[stalled.node_id].alive
    head.effects.peer_outbox.clear()
    # It wakes: its heartbeat is answered with NODE_DEAD naming incarnation 0.
    head.handle_peer(stalled.node_id, [(m.HEARTBEAT, {"available": {}, "hot": False})],
                     4.0, 4.0)
    [dead] = _ops(head, stalled.node_id, m.NODE_DEAD)
    assert dead[3] == 0
    stalled.handle_peer(head.node_id, [dead, dead], 4.0, 4.0)    # the second one is stale
    assert stalled.membership.incarnation == 1 and not stalled.stopping
    [join] = _ops(stalled, head.node_id, m.JOIN)
    assert join[1]["incarnation"] == 1
    head.handle_peer(stalled.node_id, [join], 4.1, 4.1)
    assert head.membership.peers[stalled.node_id].alive
    assert head.membership.nodes.incarnation(stalled.node_id) == 1
    assert ("node_rejoin", stalled.node_id, 1) == head.effects.control_writes[-1][:3]
    [members] = _ops(head, stalled.node_id, m.MEMBERS)
    stalled.handle_peer(head.node_id, [members], 4.1, 4.1)
    assert stalled.membership.rejoining is None


def test_only_the_authority_turns_silence_into_death():
    head, other, third = _agent("node1", None), _agent("node2", "x:1"), _agent("node3", "x:1")
    _admitted(head, other)
    _admitted(head, third)
    other.handle_peer(head.node_id, [(m.NODE_JOINED, _node(third))], 0.0, 0.0)
    for now in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5):
        other.cluster_tick(now, now, {"hot": False})     # the head leads: other only waits
    assert all(v.alive for v in other.membership.peers.values())
    assert other.membership.nodes_info()[1]["suspect"] == 3.5   # but shows the silence


def test_a_new_leader_logs_the_deaths_it_knows_of():
    head, other = _agent("node1", None), _agent("node2", "x:1")
    _admitted(head, other)
    other.membership.peer_gone(head.node_id, 1.0)       # the head was killed
    other.effects.control_writes.clear()
    other.membership.set_leader(other.node_id, 2.0)     # ... and other won the election
    assert ("node_dead", head.node_id, 2.0) in other.effects.control_writes
    other.effects.control_writes.clear()
    other.membership.set_leader(other.node_id, 3.0)     # once, on taking over
    assert not other.effects.control_writes


def test_news_about_a_peer_s_earlier_incarnation_is_ignored_and_a_later_one_revives_it():
    head, other, third = _agent("node1", None), _agent("node2", "x:1"), _agent("node3", "x:1")
    _admitted(head, other)
    other.handle_peer(head.node_id, [(m.NODE_JOINED, _node(third))], 0.0, 0.0)
    other.handle_peer(head.node_id, [(m.NODE_DEAD, third.node_id, "silent", 0)], 1.0, 1.0)
    assert not other.membership.peers[third.node_id].alive
    third.membership.incarnation = 1
    other.handle_peer(head.node_id, [(m.NODE_JOINED, _node(third))], 2.0, 2.0)
    assert other.membership.peers[third.node_id].alive
    other.handle_peer(head.node_id, [(m.NODE_DEAD, third.node_id, "silent", 0)], 3.0, 3.0)
    assert other.membership.peers[third.node_id].alive           # stale: about incarnation 0


def test_an_agent_still_joining_itself_neither_admits_nor_relays_a_join():
    lone = _agent("node2", "x:1")
    lone.effects.peer_outbox.clear()
    stranger = _agent("node3", "x:1")
    assert lone.handle_peer(stranger.node_id, [stranger.membership.join_op()], 0.0, 0.0) is None
    assert not lone.effects.peer_outbox and stranger.node_id not in lone.membership.peers


def test_a_member_with_no_live_authority_drops_a_join_saying_so():
    head, other = _agent("node1", None), _agent("node2", "x:1")
    _admitted(head, other)
    other.membership.peer_gone(head.node_id, 1.0)
    stranger = _agent("node3", "x:1")
    why, answer = other.handle_peer(stranger.node_id, [stranger.membership.join_op()], 2.0, 2.0)
    assert "no membership authority" in why and answer is None


def test_a_live_peer_s_later_incarnation_replaces_it_on_the_same_connection():
    # The authority had not seen it die (a new leader, say): the JOIN as
    # incarnation 1 ends incarnation 0 there, and MEMBERS goes out on the
    # connection it already has, which must stay open.
    head, other = _agent("node1", None), _agent("node2", "x:1")
    _admitted(head, other)
    other.membership.incarnation = 1
    head.handle_peer(other.node_id, [other.membership.join_op()], 1.0, 1.0)
    assert other.node_id not in head.effects.mesh_disconnect
    assert _ops(head, other.node_id, m.MEMBERS)
    assert head.membership.peers[other.node_id].alive
    assert head.membership.nodes.incarnation(other.node_id) == 1
    writes = [w[0] for w in head.effects.control_writes]
    assert writes[-2:] == ["node_dead", "node_rejoin"]
