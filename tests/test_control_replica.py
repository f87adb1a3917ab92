"""ControlReplica: the Raft core, its SQLite log and the ControlStore, over a test network.

Each replica has its own directory (control.db, raft.db) under tmp_path; the
network is a set of in-memory inboxes the test drives, so a "crash" is a
replica closed without a goodbye and reopened from its files, and a
partition is a rule that drops messages between two groups.
"""
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightray.store.control import KV_PUT, NODE_REGISTER, NotAControlStore
from lightray.store.control import command_codec
from lightray.store.control.raft import NotLeader
from lightray.store.control.replica import ControlReplica, ReplicaDamaged

NS = "test"


def put(key: bytes, value: bytes, ts: float = 1.0):
    return (KV_PUT, NS, key, value, True, ts)


class Network:
    def __init__(self, root, ids, *, seed=0, compact_every=10_000, voters=None):
        self.root = root
        self.rng = random.Random(seed)
        self.compact_every = compact_every
        self.replicas = {}
        self.inbox = {}
        self.results = {}
        self.dropped = {}
        self.reads = []
        self.cut = set()          # frozenset({a, b}) pairs that cannot talk
        voters = tuple(ids) if voters is None else voters
        for node_id in ids:
            self.start(node_id, voters)

    def start(self, node_id, voters=()):
        self.replicas[node_id] = ControlReplica(
            node_id, os.path.join(self.root, node_id), voters,
            rng=random.Random(self.rng.random()), compact_every=self.compact_every)
        self.inbox[node_id] = []

    def crash(self, node_id):
        """The process dies: what it saved stays on disk, its inbox is lost."""
        self.replicas.pop(node_id).close()
        self.inbox.pop(node_id, None)

    def partition(self, group_a, group_b):
        self.cut |= {frozenset((a, b)) for a in group_a for b in group_b}

    def heal(self):
        self.cut.clear()

    def _collect(self, node_id, out):
        for dst, data in out.messages:
            if dst in self.inbox and frozenset((node_id, dst)) not in self.cut:
                self.inbox[dst].append(data)
        self.results.update(out.results)
        self.dropped.update(out.dropped)
        self.reads.extend(out.reads)

    def round(self):
        for node_id, replica in list(self.replicas.items()):
            replica.tick()
            self._collect(node_id, replica.process())
        for _ in range(3):       # let answers to this round's messages arrive
            for node_id, replica in list(self.replicas.items()):
                messages, self.inbox[node_id] = self.inbox[node_id], []
                for data in messages:
                    assert replica.receive(data) is None
                self._collect(node_id, replica.process())

    def run_until(self, condition, rounds=300):
        for _ in range(rounds):
            if condition():
                return
            self.round()
        raise AssertionError("the condition did not hold within the rounds allowed")

    def leader(self, among=None):
        leaders = [r for i, r in self.replicas.items()
                   if r.is_leader and (among is None or i in among)]
        return leaders[0] if len(leaders) == 1 else None

    def elect(self, among=None):
        self.run_until(lambda: self.leader(among) is not None)
        return self.leader(among)

    def write(self, command, token, among=None):
        leader = self.elect(among)
        leader.propose(command, token)
        self.run_until(lambda: token in self.results or token in self.dropped)
        return self.results.get(token)

    def dumps(self):
        return {i: r.store.dump() for i, r in self.replicas.items()}

    def converged(self):
        dumps = set(self.dumps().values())
        return len(dumps) == 1


@pytest.fixture
def net(tmp_path):
    network = Network(str(tmp_path), ["a", "b", "c"], seed=1)
    yield network
    for replica in network.replicas.values():
        replica.close()


def test_a_write_is_acknowledged_once_committed_and_every_replica_applies_it(net):
    assert net.write(put(b"k", b"v"), "w1") is True
    net.run_until(net.converged)
    for replica in net.replicas.values():
        assert replica.store.kv_get(NS, b"k") == b"v"


def test_a_write_on_a_follower_is_refused_naming_the_leader(net):
    leader = net.elect()
    follower = next(r for r in net.replicas.values() if r is not leader)
    net.run_until(lambda: follower.leader == leader.node_id)
    with pytest.raises(NotLeader) as refused:
        follower.propose(put(b"k", b"v"), "w")
    assert refused.value.leader == leader.node_id


def test_a_malformed_command_is_refused_before_it_reaches_the_log(net):
    leader = net.elect()
    last = leader.node.log.last_index()
    with pytest.raises(ValueError, match="unknown control store command kind"):
        leader.propose(("no_such_kind", 1), "w")
    assert leader.node.log.last_index() == last


def test_acknowledged_writes_survive_a_crash_of_the_leader(net):
    acknowledged = {}
    for n in range(20):
        key = f"k{n}".encode()
        if net.write(put(key, b"v%d" % n), ("w", n)) is True:
            acknowledged[key] = b"v%d" % n
    old = net.leader().node_id
    net.crash(old)
    survivors = set(net.replicas)
    new = net.elect(survivors)
    assert new.node_id != old
    for replica in net.replicas.values():
        net.run_until(lambda: all(replica.store.kv_get(NS, k) == v
                                  for k, v in acknowledged.items()))
    assert net.write(put(b"after", b"x"), "after") is True


def test_a_follower_restarted_from_its_files_catches_up(net):
    net.write(put(b"before", b"1"), "w1")
    follower = next(i for i, r in net.replicas.items() if not r.is_leader)
    net.crash(follower)
    for n in range(10):
        net.write(put(b"while%d" % n, b"2"), ("w", n))
    net.start(follower)                  # same directory: its saved log and state
    net.run_until(net.converged)
    assert net.replicas[follower].store.kv_get(NS, b"while9") == b"2"


def test_a_minority_cannot_commit_and_the_majority_goes_on(tmp_path):
    net = Network(str(tmp_path), ["a", "b", "c", "d", "e"], seed=3)
    try:
        old = net.elect()
        minority = {old.node_id, next(i for i in net.replicas if i != old.node_id)}
        majority = set(net.replicas) - minority
        net.partition(minority, majority)
        old.propose(put(b"lost", b"x"), "minority")   # it still thinks it leads, for now
        new = net.elect(majority)
        assert net.write(put(b"kept", b"y"), "majority", among=majority) is True
        for _ in range(30):
            net.round()
        assert "minority" not in net.results
        net.heal()
        net.run_until(net.converged)
        assert "minority" in net.dropped and "minority" not in net.results
        for replica in net.replicas.values():
            assert replica.store.kv_get(NS, b"lost") is None
            assert replica.store.kv_get(NS, b"kept") == b"y"
        assert new.is_leader
    finally:
        for replica in net.replicas.values():
            replica.close()


def test_a_replica_added_later_catches_up_from_a_snapshot_and_the_log_tail(tmp_path):
    net = Network(str(tmp_path), ["a", "b", "c"], seed=5, compact_every=8)
    try:
        for n in range(30):
            net.write(put(b"k%d" % n, b"v"), ("w", n))
        leader = net.leader()
        assert leader.storage.snapshot_index > 0        # the log was compacted
        net.start("d")                                   # no voters: learns them from the leader
        leader.add_voter("d")
        net.run_until(lambda: "d" in net.replicas["d"].voters and net.converged())
        assert net.replicas["d"].store.kv_get(NS, b"k29") == b"v"
        assert net.write(put(b"with-d", b"1"), "w-d") is True
        net.run_until(net.converged)
    finally:
        for replica in net.replicas.values():
            replica.close()


def test_a_consistent_read_waits_until_the_replica_has_the_leaders_commit(net):
    net.write(put(b"k", b"v"), "w1")
    follower = next(r for r in net.replicas.values() if not r.is_leader)
    follower.read("r1")
    net.run_until(lambda: "r1" in net.reads)
    assert follower.store.kv_get(NS, b"k") == b"v"


def test_a_leader_that_stops_hands_leadership_over_first(net):
    leader = net.elect()
    net.write(put(b"k", b"v"), "w1")
    target = leader.hand_over()
    assert target is not None and target != leader.node_id
    net.run_until(lambda: net.replicas[target].is_leader)
    assert not leader.is_leader


def test_garbage_from_a_peer_is_dropped_with_a_reason_and_changes_nothing(net):
    net.write(put(b"k", b"v"), "w1")
    net.run_until(net.converged)
    before = net.dumps()
    replica = net.replicas["a"]
    rng = random.Random(7)
    for _ in range(500):
        garbage = rng.randbytes(rng.randrange(0, 200))
        why = replica.receive(garbage)
        assert why is not None and why.startswith("not a Raft message")
        replica.process()
    assert net.dumps() == before
    assert net.write(put(b"k2", b"v2"), "w2") is True


def test_a_damaged_log_file_is_refused_naming_the_file(tmp_path):
    directory = tmp_path / "r"
    ControlReplica("a", str(directory), ("a",)).close()
    with open(directory / "raft.db", "r+b") as damaged:
        damaged.write(b"this is not sqlite" * 10)
    with pytest.raises(NotAControlStore, match="raft.db"):
        ControlReplica("a", str(directory), ("a",))


def damage(path) -> None:
    """Garbage over a whole SQLite file and its WAL and wal-index, sizes kept."""
    for name in (path, path + "-wal", path + "-shm"):
        if os.path.exists(name):
            size = os.path.getsize(name)
            with open(name, "r+b") as f:
                f.write(random.Random(name).randbytes(max(size, 512)))


def test_a_stopped_replica_whose_state_file_is_damaged_never_serves_it_and_catches_up(
        tmp_path):
    net = Network(str(tmp_path), ["a", "b", "c"], seed=3, compact_every=5)
    try:
        for i in range(10):
            assert net.write(put(b"k%d" % i, b"before"), f"w{i}") is True
        net.run_until(net.converged)
        net.crash("c")
        # The others go on far past what c holds: the leader compacts its log, so c
        # can only catch up from the leader's snapshot.
        for i in range(10, 30):
            assert net.write(put(b"k%d" % i, b"while c was down"), f"w{i}") is True
        path = os.path.join(str(tmp_path), "c", "control.db")
        damage(path)
        net.start("c")
        c = net.replicas["c"]
        assert c.damaged is not None and path in c.damaged     # names the file
        assert os.path.exists(path + ".damaged")
        assert c.store.kv_get(NS, b"k29") is None              # never the garbage
        net.run_until(net.converged)
        assert c.store.kv_get(NS, b"k29") == b"while c was down"
        assert c.store.kv_get(NS, b"k0") == b"before"
        assert net.write(put(b"after", b"1"), "after") is True
    finally:
        for replica in net.replicas.values():
            replica.close()


def test_a_state_file_damaged_under_a_running_replica_raises_replica_damaged_naming_it(
        net):
    net.write(put(b"k", b"v"), "w1")
    net.run_until(net.converged)
    replica = net.replicas["c"]
    damage(replica.store.path)
    with pytest.raises(ReplicaDamaged, match="c/control.db is damaged"):
        replica.query(lambda store: store.kv_get(NS, b"k"))
    net.crash("c")                       # the I/O side reopens it: rebuilt from raft.db
    net.start("c")
    assert net.replicas["c"].damaged is not None
    net.run_until(net.converged)
    assert net.replicas["c"].store.kv_get(NS, b"k") == b"v"


def test_a_lone_replica_commits_alone_and_resumes_after_a_restart(tmp_path):
    net = Network(str(tmp_path), ["solo"], seed=2)
    try:
        assert net.write((NODE_REGISTER, "n1", "tcp://127.0.0.1:1", "{}", "{}", 1.0),
                         "reg") == "ok"
        net.crash("solo")
        net.start("solo")
        assert net.replicas["solo"].store.node("n1") is not None
        assert net.write(put(b"k", b"v"), "w") is True
    finally:
        for replica in net.replicas.values():
            replica.close()


@pytest.mark.parametrize("command", [
    put(b"k", b"\x00\xff" * 10),
    (NODE_REGISTER, "n\u00e9", "tcp://127.0.0.1:1", "{}", "{}", 2.5),
])
def test_a_command_round_trips_through_its_encoding(command):
    assert command_codec.decode(command_codec.encode(command)) == command


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_to_a_valid_command_or_a_codec_error(data):
    try:
        command = command_codec.decode(data)
    except command_codec.CommandCodecError:
        return
    assert command_codec.decode(command_codec.encode(command)) == command


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_valid_encoding_cut_or_flipped_is_refused_or_still_valid(data):
    encoded = command_codec.encode(put(b"key", b"value"))
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(command_codec.CommandCodecError):
        command_codec.decode(encoded[:cut])
    position = data.draw(st.integers(0, len(encoded) - 1))
    flipped = bytearray(encoded)
    flipped[position] ^= data.draw(st.integers(1, 255))
    try:
        command_codec.decode(bytes(flipped))
    except command_codec.CommandCodecError:
        pass


def _random_schedule(root, seed):
    """Writes at whoever leads while replicas crash (reopened from their files),
    partitions come and go; then everything heals."""
    rng = random.Random(seed)
    ids = ["a", "b", "c"]
    net = Network(root, ids, seed=seed, compact_every=rng.choice([5, 20, 10_000]))
    down = set()
    written = 0
    try:
        for _ in range(120):
            event = rng.random()
            if event < 0.04 and len(down) < 1:
                victim = rng.choice(sorted(net.replicas))
                net.crash(victim)
                down.add(victim)
            elif event < 0.10 and down:
                victim = down.pop()
                net.start(victim)
            elif event < 0.13:
                lone = rng.choice(ids)
                net.partition({lone}, set(ids) - {lone})
            elif event < 0.18:
                net.heal()
            leader = net.leader()
            if leader is not None and rng.random() < 0.5:
                written += 1
                try:
                    leader.propose(put(b"k%d" % written, b"v"), written)
                except NotLeader:
                    pass
            net.round()
        net.heal()
        for victim in down:
            net.start(victim)
        net.run_until(lambda: net.leader() is not None and net.converged(), rounds=500)
        return net
    except BaseException:
        for replica in net.replicas.values():
            replica.close()
        raise


@pytest.mark.parametrize("seed", range(12))
def test_random_crashes_and_partitions_keep_every_acknowledged_write_and_no_dropped_one(
        tmp_path, seed):
    net = _random_schedule(str(tmp_path), seed)
    try:
        assert net.results, "the schedule acknowledged no write: it tests nothing"
        for replica in net.replicas.values():
            for token in net.results:
                assert replica.store.kv_get(NS, b"k%d" % token) == b"v", (seed, token)
            for token in net.dropped:
                assert replica.store.kv_get(NS, b"k%d" % token) is None, (seed, token)
    finally:
        for replica in net.replicas.values():
            replica.close()
