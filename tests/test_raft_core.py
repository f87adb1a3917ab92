"""The Raft core's rules, one behaviour per test, on replicas wired by a lossless
in-test network (tests/raft_sim.py covers the lossy, crashing schedules)."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightray.store.control.raft import (CANDIDATE, CONFIG, FOLLOWER, LEADER, NOOP, NORMAL,
                                         PRE_CANDIDATE, Entry, HardState, MemoryStorage,
                                         Message, NotLeader, PersistedState, ProposalRefused,
                                         RaftCodecError, RaftNode, Snapshot, decode,
                                         encode, encode_voters)
from lightray.store.control.raft import codec
from lightray.store.control.raft.types import (APPEND, APPEND_RESP, HEARTBEAT,
                                               HEARTBEAT_RESP, MESSAGE_TYPES, PRE_VOTE,
                                               SNAPSHOT, TIMEOUT_NOW, VOTE, VOTE_RESP)

E = 10      # election ticks


class Net:
    """Replicas and a lossless network that delivers everything at once (flush)."""

    def __init__(self, ids=("a", "b", "c"), voters=None, **options):
        voters = ids if voters is None else voters
        self.options = dict(election_ticks=E, heartbeat_ticks=1, **options)
        self.storage = {i: MemoryStorage() for i in ids}
        self.nodes = {i: RaftNode(i, voters if i in voters else (), rng=random.Random(n),
                                  **self.options) for n, i in enumerate(ids)}
        self.applied = {i: [] for i in ids}
        self.reads = {i: [] for i in ids}
        self.cut: set = set()           # node ids that hear and reach nobody
        self.sent: list = []

    def ready(self, node_id: str) -> list:
        node = self.nodes[node_id]
        ready = node.ready()
        self.storage[node_id].save(ready)
        if ready.restore_snapshot:
            self.applied[node_id] = [("snapshot", ready.snapshot.index)]
        self.applied[node_id].extend(e for e in ready.committed if e.kind == NORMAL)
        self.reads[node_id].extend(ready.read_states)
        return ready.messages

    def flush(self, rounds: int = 200) -> None:
        for _ in range(rounds):
            messages = [m for i in self.nodes if self.nodes[i] is not None
                        for m in self.ready(i)]
            if not messages:
                return
            for m in messages:
                self.sent.append(m)
                if m.src in self.cut or m.dst in self.cut or self.nodes.get(m.dst) is None:
                    continue
                self.nodes[m.dst].step(decode(encode(m)))
        raise AssertionError("the network did not go quiet")

    def tick(self, count: int = 1) -> None:
        for _ in range(count):
            for node in self.nodes.values():
                if node is not None:
                    node.tick()
            self.flush()

    def elect(self, node_id: str) -> RaftNode:
        self.nodes[node_id].campaign()
        self.flush()
        assert self.nodes[node_id].role == LEADER
        return self.nodes[node_id]

    def leaders(self) -> list:
        return [n for n in self.nodes.values() if n is not None and n.role == LEADER]

    def commands(self, node_id: str) -> list:
        return [e.data for e in self.applied[node_id] if isinstance(e, Entry)]

    def restart(self, node_id: str, voters=("a", "b", "c")) -> RaftNode:
        persisted = self.storage[node_id].persisted()
        applied = persisted.snapshot.index if persisted.snapshot else 0
        self.nodes[node_id] = RaftNode(node_id, voters, persisted=persisted, applied=applied,
                                       rng=random.Random(99), **self.options)
        return self.nodes[node_id]


# ---------------------------------------------------------------- election

def test_single_voter_elects_itself_and_commits_alone():
    net = Net(ids=("a",))
    net.tick(2 * E)
    leader = net.nodes["a"]
    assert leader.role == LEADER and leader.term == 1
    index = leader.propose(b"x")
    net.flush()
    assert leader.commit_index == index and net.commands("a") == [b"x"]


def test_election_timeout_is_randomized_between_e_and_2e():
    timeouts = {RaftNode("a", ("a", "b", "c"), rng=random.Random(seed),
                         election_ticks=E).randomized_timeout for seed in range(200)}
    assert min(timeouts) >= E and max(timeouts) < 2 * E and len(timeouts) > E // 2


def test_followers_elect_one_leader_by_timeouts_and_it_starts_its_term_with_a_noop():
    net = Net()
    net.tick(3 * E)
    [leader] = net.leaders()
    assert leader.log.entry(leader.log.last_index()).kind == NOOP
    assert leader.commit_index == leader.log.last_index()
    assert all(n.leader == leader.id and n.term == leader.term for n in net.nodes.values())


def test_a_new_leader_is_elected_when_the_leader_is_cut_off():
    net = Net()
    old = net.elect("a")
    net.cut = {"a"}
    net.tick(3 * E)
    [new, *others] = [n for n in net.leaders() if n.id != "a"]
    assert not others and new.term > old.term


def test_a_replica_votes_for_one_candidate_per_term():
    node = RaftNode("c", ("a", "b", "c"), election_ticks=E, pre_vote=False)
    node.step(Message(VOTE, "a", "c", 1, index=1, log_term=0))
    node.step(Message(VOTE, "b", "c", 1, index=1, log_term=0))
    replies = [m for m in node.ready().messages if m.type == VOTE_RESP]
    assert [(m.dst, m.reject) for m in replies] == [("a", False), ("b", True)]
    assert node.vote == "a"


def test_a_replica_refuses_its_vote_to_a_candidate_with_a_staler_log():
    persisted = PersistedState(HardState(2, None, 1), None,
                               [Entry(0, 1, CONFIG, encode_voters("abc")), Entry(2, 2)])
    node = RaftNode("c", ("a", "b", "c"), persisted=persisted, election_ticks=E)
    node.step(Message(VOTE, "a", "c", 3, index=5, log_term=1))   # longer, older term
    node.step(Message(VOTE, "b", "c", 3, index=2, log_term=2))   # as up to date
    replies = {m.dst: m.reject for m in node.ready().messages}
    assert replies == {"a": True, "b": False}


def test_a_vote_is_in_the_hard_state_of_the_ready_that_sends_it():
    node = RaftNode("c", ("a", "b", "c"), election_ticks=E)
    node.step(Message(VOTE, "a", "c", 1, index=1, log_term=0))
    ready = node.ready()
    assert ready.hard_state == HardState(1, "a", 0)
    assert [m.type for m in ready.messages] == [VOTE_RESP]


# ---------------------------------------------------------------- replication

def test_an_append_whose_previous_entry_does_not_match_is_rejected_with_a_conflict_hint():
    log = [Entry(0, 1, CONFIG, encode_voters("abc")), Entry(1, 2), Entry(2, 3), Entry(2, 4)]
    node = RaftNode("b", ("a", "b", "c"), persisted=PersistedState(
        HardState(3, None, 2), None, log), election_ticks=E)
    node.step(Message(APPEND, "a", "b", 3, index=4, log_term=3, commit=2))
    [reply] = node.ready().messages
    assert reply.reject and reply.index == 4
    assert (reply.hint_index, reply.hint_term) == (3, 2)   # first index of its term 2
    node.step(Message(APPEND, "a", "b", 3, index=9, log_term=3, commit=2))
    [reply] = node.ready().messages
    assert (reply.hint_index, reply.hint_term) == (5, 0)   # its log ends before 9


def test_a_follower_cuts_a_conflicting_uncommitted_suffix_and_takes_the_leaders_entries():
    log = [Entry(0, 1, CONFIG, encode_voters("abc")), Entry(1, 2), Entry(2, 3), Entry(2, 4)]
    node = RaftNode("b", ("a", "b", "c"), persisted=PersistedState(
        HardState(2, None, 2), None, log), election_ticks=E)
    node.step(Message(APPEND, "a", "b", 3, index=2, log_term=1, commit=2,
                      entries=[Entry(3, 3, NORMAL, b"new")]))
    ready = node.ready()
    assert ready.entries == [Entry(3, 3, NORMAL, b"new")]     # storage replaces from 3 on
    assert node.log.last_index() == 3 and node.log.entry(3).data == b"new"
    assert [(m.type, m.reject, m.index) for m in ready.messages] == [(APPEND_RESP, False, 3)]


def test_the_leader_repairs_a_divergent_follower_with_few_round_trips():
    voters = encode_voters("abc")
    a_log = [Entry(0, 1, CONFIG, voters)] + [Entry(1, i) for i in range(2, 40)]
    c_log = [Entry(0, 1, CONFIG, voters)] + [Entry(1, i) for i in range(2, 10)] + \
        [Entry(2, i, NORMAL, b"stale") for i in range(10, 60)]
    net = Net()
    net.storage["a"].entries = a_log
    net.storage["a"].hard_state = HardState(3, None, 1)
    net.storage["c"].entries = c_log
    net.storage["c"].hard_state = HardState(2, None, 1)
    net.restart("a")
    net.restart("c")
    net.elect("a")          # b (empty log) votes for a; c's log is newer-termed but c is
    net.tick(2)             # a follower of term 4 now
    c = net.nodes["c"]
    assert [c.log.entry(i).term for i in range(2, 41)] == [1] * 38 + [4]
    rejections = [m for m in net.sent if m.type == APPEND_RESP and m.src == "c" and m.reject]
    assert len(rejections) <= 3       # a term's worth at a time, not one index at a time


def test_an_entry_commits_once_a_majority_stored_it_and_not_before():
    net = Net()
    leader = net.elect("a")
    net.cut = {"b", "c"}
    index = leader.propose(b"x")
    net.flush()
    assert leader.commit_index < index
    net.cut = {"c"}
    net.tick(1)
    assert leader.commit_index == index and net.commands("a") == [b"x"]
    assert net.commands("b") == [b"x"]     # learnt from the next heartbeat/append


def test_figure8_an_entry_of_an_older_term_does_not_commit_by_counting_replicas():
    voters = encode_voters("abc")
    # a led term 2 and appended index 3 (term 2) alone; it comes back and wins term 4.
    a = RaftNode("a", ("a", "b", "c"), election_ticks=E, pre_vote=False,
                 persisted=PersistedState(HardState(3, None, 2), None,
                                          [Entry(0, 1, CONFIG, voters), Entry(1, 2),
                                           Entry(2, 3, NORMAL, b"old")]))
    a.campaign()
    a.step(Message(VOTE_RESP, "b", "a", 4))
    assert a.role == LEADER and a.log.entry(4) == Entry(4, 4, NOOP)
    a.ready()
    # b stores the term-2 entry but not yet the leader's own: a majority holds index 3.
    a.step(Message(APPEND_RESP, "b", "a", 4, index=3))
    assert a.commit_index == 2, "an older term's entry must not commit by counting"
    a.step(Message(APPEND_RESP, "b", "a", 4, index=4))
    assert a.commit_index == 4          # index 3 commits with the leader's own entry
    assert [e.index for e in a.ready().committed] == [3, 4]


# ---------------------------------------------------------------- pre-vote, check-quorum

def test_prevote_a_replica_back_from_a_partition_does_not_raise_terms_or_depose_the_leader():
    net = Net()
    leader = net.elect("a")
    term = leader.term
    net.cut = {"c"}
    net.tick(5 * E)                 # c times out again and again, alone
    c = net.nodes["c"]
    assert c.term == term and c.role == PRE_CANDIDATE
    net.cut = set()
    net.tick(2)
    assert leader.role == LEADER and leader.term == term
    assert c.role == FOLLOWER and c.leader == "a"


def test_without_prevote_the_same_replica_raises_its_term_while_cut_off():
    net = Net(pre_vote=False)
    leader = net.elect("a")
    net.cut = {"c"}
    net.tick(5 * E)
    assert net.nodes["c"].term > leader.term and net.nodes["c"].role == CANDIDATE


def test_check_quorum_a_leader_that_hears_no_quorum_steps_down():
    net = Net()
    leader = net.elect("a")
    net.cut = {"a"}
    net.tick(E - 1)
    assert leader.role == LEADER      # its followers answered within the last check period
    net.tick(E + 1)                   # a whole period of silence: at most 2E ticks
    assert leader.role == FOLLOWER and leader.leader is None


def test_a_replica_that_heard_from_its_leader_lately_ignores_a_higher_term_vote_request():
    net = Net()
    net.elect("a")
    b = net.nodes["b"]
    b.step(Message(VOTE, "c", "b", b.term + 5, index=100, log_term=100))
    assert b.term == net.nodes["a"].term and b.ready().messages == []


# ---------------------------------------------------------------- membership

def test_an_added_voter_counts_from_the_moment_its_change_is_appended_and_catches_up():
    net = Net(ids=("a", "b", "c", "d"), voters=("a", "b", "c"))
    leader = net.elect("a")
    leader.propose(b"before")
    net.flush()
    index = leader.propose_add_voter("d")
    assert leader.voters == ("a", "b", "c", "d")        # in force when appended
    net.flush()
    assert leader.commit_index >= index
    assert net.nodes["d"].voters == ("a", "b", "c", "d")
    assert net.commands("d") == [b"before"]
    net.cut = {"c", "d"}             # 2 of 4 is no quorum any more
    after = leader.propose(b"after")
    net.flush()
    assert leader.commit_index < after


def test_a_voter_just_added_counts_as_active_until_the_next_quorum_check():
    # A lone leader adds a second voter (the head adding the first agent that
    # joins): a quorum check falling before the newcomer could answer must not
    # depose the leader; a whole check period without an answer does.
    net = Net(ids=("a", "b"), voters=("a",))
    leader = net.elect("a")
    net.cut = {"b"}
    net.tick(E - 1)
    leader.propose_add_voter("b")
    net.tick(1)                       # the quorum check: b is new, so it counts
    assert leader.role == LEADER
    net.tick(E)                       # a whole period of silence from b
    assert leader.role == FOLLOWER


def test_only_one_membership_change_may_be_pending():
    net = Net(ids=("a", "b", "c", "d", "e"), voters=("a", "b", "c"))
    leader = net.elect("a")
    net.cut = {"b", "c"}
    leader.propose_add_voter("d")
    with pytest.raises(ProposalRefused, match="one at a time"):
        leader.propose_add_voter("e")
    net.cut = set()
    net.tick(1)
    leader.propose_add_voter("e")
    net.flush()
    assert all(net.nodes[i].voters == ("a", "b", "c", "d", "e") for i in "abcde")


def test_a_removed_voter_no_longer_counts_and_never_campaigns():
    net = Net()
    leader = net.elect("a")
    leader.propose_remove_voter("c")
    net.flush()
    assert net.nodes["c"].voters == ("a", "b") and not net.nodes["c"].promotable()
    net.cut = {"c"}
    index = leader.propose(b"x")
    net.flush()
    assert leader.commit_index == index
    net.tick(5 * E)
    assert net.nodes["c"].role == FOLLOWER and net.nodes["c"].term == leader.term


def test_a_leader_that_removes_itself_steps_down_once_committed_and_the_rest_go_on():
    net = Net()
    leader = net.elect("a")
    index = leader.propose_remove_voter("a")
    net.flush()
    assert leader.role == FOLLOWER and not leader.promotable()
    assert net.nodes["b"].commit_index >= index
    net.tick(3 * E)
    [new] = net.leaders()
    assert new.id in ("b", "c")
    new.propose(b"x")
    net.flush()
    assert b"x" in net.commands("b") and b"x" in net.commands("c")


# ---------------------------------------------------------------- snapshots, restart

def test_compaction_truncates_the_log_and_a_follower_far_behind_gets_the_snapshot():
    net = Net()
    leader = net.elect("a")
    net.cut = {"c"}
    for k in range(20):
        leader.propose(b"c%d" % k)
    net.flush()
    applied = leader.log.applied
    snapshot = leader.compact(applied, b"image")
    assert leader.log.first_index() == applied + 1
    net.flush()
    assert net.storage["a"].snapshot == snapshot
    assert all(e.index > applied for e in net.storage["a"].entries)
    net.cut = set()
    net.tick(2)
    c = net.nodes["c"]
    assert c.log.snapshot.index == applied and c.log.snapshot.data == b"image"
    assert net.applied["c"][0] == ("snapshot", applied)
    leader.propose(b"after")
    net.flush()
    assert net.commands("c")[-1] == b"after"


def test_a_restarted_replica_keeps_its_term_vote_and_log():
    net = Net()
    leader = net.elect("a")
    leader.propose(b"x")
    net.flush()
    b = net.nodes["b"]
    before = (b.term, b.vote, b.log.entries)
    b = net.restart("b")
    assert (b.term, b.vote, b.log.entries) == before and b.role == FOLLOWER


# ---------------------------------------------------------------- reads

def test_read_index_is_answered_after_a_heartbeat_quorum_at_the_commit_index():
    net = Net()
    leader = net.elect("a")
    leader.propose(b"x")
    net.flush()
    net.cut = {"b", "c"}
    leader.read_index(b"q1")
    net.flush()
    assert net.reads["a"] == []              # no quorum confirmed the leadership yet
    net.cut = {"c"}
    net.tick(1)
    assert [(r.context, r.index) for r in net.reads["a"]] == [(b"q1", leader.commit_index)]


def test_read_index_on_a_follower_goes_through_the_leader():
    net = Net()
    leader = net.elect("a")
    leader.propose(b"x")
    net.flush()
    net.nodes["b"].read_index(b"q")
    net.flush()
    [read] = net.reads["b"]
    assert read.context == b"q" and read.index == leader.commit_index


def test_a_deposed_leader_answers_no_read():
    net = Net()
    old = net.elect("a")
    net.cut = {"a"}
    old.read_index(b"stale?")
    net.tick(3 * E)
    assert net.reads["a"] == []


def test_read_index_waits_until_the_new_leader_committed_an_entry_of_its_term():
    a = RaftNode("a", ("a", "b", "c"), election_ticks=E, pre_vote=False)
    a.campaign()
    a.step(Message(VOTE_RESP, "b", "a", 1))
    a.read_index(b"q")
    a.ready()
    a.step(Message(HEARTBEAT_RESP, "b", "a", 1, context=(0).to_bytes(8, "big")))
    assert a.ready().read_states == []
    a.step(Message(APPEND_RESP, "b", "a", 1, index=2))       # the noop commits
    heartbeats = [m for m in a.ready().messages if m.type == HEARTBEAT]
    a.step(Message(HEARTBEAT_RESP, "b", "a", 1, context=heartbeats[-1].context))
    assert [(r.context, r.index) for r in a.ready().read_states] == [(b"q", 2)]


# ---------------------------------------------------------------- leader transfer

def test_leader_transfer_hands_over_to_an_up_to_date_voter():
    net = Net()
    leader = net.elect("a")
    leader.transfer_leadership("b")
    net.flush()
    assert net.nodes["b"].role == LEADER and leader.role == FOLLOWER
    assert any(m.type == TIMEOUT_NOW for m in net.sent)


def test_leader_transfer_catches_the_target_up_first_and_refuses_proposals_meanwhile():
    net = Net()
    leader = net.elect("a")
    net.cut = {"c"}
    for k in range(5):
        leader.propose(b"%d" % k)
    net.flush()
    net.cut = set()
    leader.transfer_leadership("c")
    with pytest.raises(ProposalRefused):
        leader.propose(b"during")
    net.flush()
    c = net.nodes["c"]
    assert c.role == LEADER and c.log.last_index() > 5


def test_propose_on_a_follower_raises_not_leader_naming_the_leader():
    net = Net()
    net.elect("a")
    with pytest.raises(NotLeader) as info:
        net.nodes["b"].propose(b"x")
    assert info.value.leader == "a"


# ---------------------------------------------------------------- codec

node_ids = st.text(st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)),
                   min_size=1, max_size=20).filter(lambda s: len(s.encode()) <= 255)
numbers = st.integers(0, (1 << 63) - 1)


@st.composite
def messages(draw):
    kind = draw(st.sampled_from(MESSAGE_TYPES))
    term = draw(numbers)
    index = draw(st.integers(0, 1 << 40))
    log_term = draw(st.integers(0, term))
    entries, snapshot = [], None
    if kind == APPEND:
        previous = log_term
        for k in range(draw(st.integers(0, 5))):
            entry_term = draw(st.integers(previous, term))
            data = draw(st.binary(max_size=50))
            entry_kind = draw(st.sampled_from((NORMAL, NOOP, CONFIG)))
            if entry_kind == CONFIG:
                data = encode_voters(draw(st.sets(node_ids, min_size=1, max_size=5)))
            entries.append(Entry(entry_term, index + 1 + k, entry_kind, data))
            previous = entry_term
    if kind == SNAPSHOT:
        snapshot = Snapshot(draw(numbers), draw(st.integers(0, term)),
                            tuple(sorted(draw(st.sets(node_ids, min_size=1, max_size=5)))),
                            draw(st.binary(max_size=100)))
    return Message(kind, draw(node_ids), draw(node_ids), term, log_term=log_term, index=index,
                   entries=entries, commit=draw(numbers), reject=draw(st.booleans()),
                   hint_index=draw(numbers), hint_term=draw(numbers), snapshot=snapshot,
                   context=draw(st.binary(max_size=32)), force=draw(st.booleans()))


@given(messages())
@settings(max_examples=300, deadline=None)
def test_codec_round_trips_every_message_type(message):
    assert decode(encode(message)) == message


@given(st.binary(max_size=300))
@settings(max_examples=500, deadline=None)
def test_codec_garbage_raises_only_raft_codec_error(data):
    try:
        decode(data)
    except RaftCodecError:
        pass


@given(messages(), st.data())
@settings(max_examples=300, deadline=None)
def test_codec_a_damaged_message_raises_raft_codec_error_or_decodes_to_a_valid_one(message,
                                                                                    data):
    raw = bytearray(encode(message))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        decoded = decode(bytes(raw[:cut]))
    except RaftCodecError:
        return
    assert decode(encode(decoded)) == decoded


@pytest.mark.parametrize("what, message", [
    ("does not follow", Message(APPEND, "a", "b", 3, index=4, entries=[Entry(3, 6)])),
    ("only an append carries entries", Message(HEARTBEAT, "a", "b", 3, entries=[Entry(3, 1)])),
    ("out of order", Message(APPEND, "a", "b", 3, index=0, entries=[Entry(5, 1)])),
    ("carries a snapshot", Message(SNAPSHOT, "a", "b", 3)),
    ("voters", Message(APPEND, "a", "b", 3, entries=[Entry(3, 1, CONFIG, b"b\na\na")])),
    ("node id", Message(PRE_VOTE, "a", "", 3)),
])
def test_codec_refuses_a_well_framed_message_that_breaks_the_cores_assumptions(what, message):
    with pytest.raises(RaftCodecError, match=what):
        decode(encode(message))


def test_codec_refuses_a_message_over_its_size_bound_and_non_bytes():
    with pytest.raises(RaftCodecError, match="over"):
        decode(b"LR" + bytes(codec.MAX_MESSAGE_BYTES))
    with pytest.raises(RaftCodecError, match="bytes"):
        decode("LR")
    with pytest.raises(RaftCodecError, match="version"):
        decode(b"LR\x09" + encode(Message(VOTE, "a", "b", 1))[3:])
