"""A deterministic simulated network for the Raft core, with the safety checks.

    Simulation(seed) ─ per tick: chaos events (propose, crash, restart, partition,
                       heal, membership change, compaction, read, leader transfer)
                       → tick every live replica → deliver the messages due, in a
                       random order (lost, duplicated, delayed as the seed decides)

Every message goes through the codec (encode on send, decode on delivery), and
every Ready is handled as the real I/O side must: persist to the replica's
MemoryStorage (which survives a crash), then send, then apply. A crash drops
the replica's memory (sometimes with a Ready taken but not yet fsync'd: its
entries and messages are lost, as a crash before fsync loses them); a restart
builds it again from its storage, its state machine from its snapshot.

Checked after every step (a Ready handled), raising SafetyViolation:
- election safety: at most one leader per term;
- log matching: an (index, term) pair always names the same entry with the
  same previous term (so, by induction, two logs agreeing on an entry agree
  on everything before it);
- committed entries are never changed: no replica stores, at a committed index,
  an entry other than the committed one once it knows that index committed or
  is in a later term (a replica still in an older term may hold a deposed
  leader's entry there until it is repaired);
- leader completeness: a leader of a later term holds every committed entry;
- state machine safety: no two replicas apply different entries at an index;
- read index: a read is answered at an index no older than every entry known
  committed when it was asked.
Then, after healing everything (no loss, no partition, every replica up):
liveness: a leader within a bounded number of ticks, and every proposal made
after healing is applied on every voter.

Replay a seed: ``python tests/raft_sim.py --seed 1234 --trace``; search many:
``python tests/raft_sim.py --seeds 0:100000``.
"""
from __future__ import annotations

import argparse
import json
import random
import sys

from collections import Counter

from lightray.store.control.raft import (CONFIG, LEADER, NORMAL, MemoryStorage, NotLeader,
                                         ProposalRefused, RaftNode, decode, encode)
from lightray.store.control.raft.types import TYPE_NAMES


class SafetyViolation(AssertionError):
    pass


def replay_hint(seed: int) -> str:
    return f"replay with: PYTHONPATH=. python tests/raft_sim.py --seed {seed} --trace"


class Simulation:
    NODES = ("n1", "n2", "n3", "n4", "n5")

    def __init__(self, seed: int, *, chaos_ticks: int = 300, election_ticks: int = 10,
                 heartbeat_ticks: int = 2, trace: bool = False):
        self.seed = seed
        self.rng = random.Random(seed)
        self.trace_enabled = trace
        self.election_ticks = election_ticks
        self.heartbeat_ticks = heartbeat_ticks
        self.chaos_ticks = chaos_ticks
        count = self.rng.choice((1, 3, 3, 3, 5))
        self.bootstrap = tuple(self.NODES[:count])
        self.loss = self.rng.choice((0.0, 0.02, 0.1, 0.3))
        self.duplicate = self.rng.choice((0.0, 0.02, 0.1))
        self.max_delay = self.rng.choice((0, 1, 3))
        self.storage = {n: MemoryStorage() for n in self.NODES}
        self.nodes: dict = {}
        self.state: dict = {}           # node -> list of (index, data) applied NORMAL entries
        self.applied_index: dict = {}
        for node in self.NODES:
            self._start(node)
        self.time = 0
        self.in_flight: list = []       # (deliver_at, order, src, dst, bytes)
        self.order = 0
        self.cut: set = set()           # frozenset({a, b}) pairs that cannot talk
        self.proposed = 0
        self.reads = 0
        # What the checks remember.
        self.leader_of_term: dict = {}
        self.entry_at: dict = {}        # (index, term) -> (kind, data, previous term)
        self.committed: dict = {}       # index -> (term, kind, data)
        self.committed_seen_in_term: dict = {}
        self.applied: dict = {}         # index -> (term, kind, data)
        self.read_floor: dict = {}      # read context -> highest committed index when asked
        self.was_leader: set = set()
        self.stats: Counter = Counter()   # what the schedule exercised

    # ------------------------------------------------------------ replicas

    def _start(self, node: str) -> None:
        persisted = self.storage[node].persisted()
        snapshot = persisted.snapshot
        state = [tuple(item) for item in json.loads(snapshot.data)] if snapshot else []
        self.state[node] = [(index, data.encode()) for index, data in state]
        self.applied_index[node] = snapshot.index if snapshot else 0
        voters = self.bootstrap if node in self.bootstrap else ()
        self.nodes[node] = RaftNode(node, voters, persisted=persisted,
                                    applied=self.applied_index[node],
                                    rng=random.Random(self.rng.random()),
                                    election_ticks=self.election_ticks,
                                    heartbeat_ticks=self.heartbeat_ticks)

    def live(self) -> list:
        return [self.nodes[n] for n in self.NODES if self.nodes.get(n) is not None]

    def leader(self):
        leaders = [r for r in self.live() if r.role == LEADER]
        return max(leaders, key=lambda r: r.term) if leaders else None

    def trace(self, text: str) -> None:
        if self.trace_enabled:
            print(f"[t={self.time}] {text}")

    # ------------------------------------------------------------ one step

    def handle_ready(self, replica: RaftNode) -> None:
        ready = replica.ready()
        if not ready:
            self.check_roles(replica)
            return
        node = replica.id
        self.check_new_entries(replica, ready)
        self.storage[node].save(ready)           # persist before sending
        for message in ready.messages:
            self.stats[f"sent_{TYPE_NAMES[message.type]}"] += 1
            self.send(encode(message), message.src, message.dst)
        if ready.snapshot is not None and ready.restore_snapshot:
            self.stats["snapshots_installed"] += 1
            self.state[node] = [(i, d.encode()) for i, d in json.loads(ready.snapshot.data)]
            self.applied_index[node] = ready.snapshot.index
        for entry in ready.committed:
            self.apply(replica, entry)
        for read in ready.read_states:
            self.stats["reads_answered"] += 1
            floor = self.read_floor.get(read.context, 0)
            if read.index < floor:
                raise SafetyViolation(f"read {read.context!r} answered at {read.index}, "
                                      f"but {floor} was committed before it was asked")
        self.check_commit(replica)
        self.check_roles(replica)

    def apply(self, replica: RaftNode, entry) -> None:
        node = replica.id
        if entry.index != self.applied_index[node] + 1:
            raise SafetyViolation(f"{node} applies {entry.index} after "
                                  f"{self.applied_index[node]}")
        self.applied_index[node] = entry.index
        known = self.applied.setdefault(entry.index, (entry.term, entry.kind, entry.data))
        if known != (entry.term, entry.kind, entry.data):
            raise SafetyViolation(f"{node} applies {entry} at {entry.index}, another replica "
                                  f"applied {known}")
        if entry.kind == NORMAL:
            self.state[node].append((entry.index, entry.data))
        elif entry.kind == CONFIG and entry.index > 1 and known is not None:
            self.stats["membership_changes_applied"] += 1

    def send(self, data: bytes, src: str, dst: str) -> None:
        if self.rng.random() < self.loss:
            return
        copies = 2 if self.rng.random() < self.duplicate else 1
        for _ in range(copies):
            self.order += 1
            delay = self.rng.randint(0, self.max_delay)
            self.in_flight.append((self.time + delay, self.rng.random(), src, dst, data))

    def deliver_due(self) -> None:
        for _ in range(50):     # answers sent with no delay arrive in the same tick
            due = [m for m in self.in_flight if m[0] <= self.time]
            if not due:
                return
            self.in_flight = [m for m in self.in_flight if m[0] > self.time]
            due.sort(key=lambda m: m[1])         # a random order: reordering
            for _, _, src, dst, data in due:
                replica = self.nodes.get(dst)
                if replica is None or frozenset((src, dst)) in self.cut:
                    continue
                replica.step(decode(data))
                self.handle_ready(replica)

    def tick(self) -> None:
        self.time += 1
        for replica in self.live():
            replica.tick()
            self.handle_ready(replica)
        self.deliver_due()

    # ------------------------------------------------------------ chaos

    def chaos(self) -> None:
        rng = self.rng
        leader = self.leader()
        if leader is not None and rng.random() < 0.3:
            self.propose(leader)
        if rng.random() < 0.02:
            live = [r.id for r in self.live()]
            if len(live) > 1:
                victim = rng.choice(live)
                self.stats["crashes"] += 1
                if rng.random() < 0.5 and self.propose(self.nodes[victim], handle=False):
                    # Crash before the fsync: the Ready's entries and messages are lost.
                    self.nodes[victim].ready()
                    self.stats["crashes_before_fsync"] += 1
                self.trace(f"crash {victim}")
                self.nodes[victim] = None
                leader = self.leader()          # never drive a crashed replica
        if rng.random() < 0.05:
            down = [n for n in self.NODES if self.nodes.get(n) is None]
            if down:
                node = rng.choice(down)
                self.trace(f"restart {node}")
                self._start(node)
        if rng.random() < 0.02:
            group = {n for n in self.NODES if rng.random() < 0.5}
            self.cut = {frozenset((a, b)) for a in group for b in self.NODES if b not in group}
            self.trace(f"partition {sorted(group)} from the rest")
        if self.cut and rng.random() < 0.04:
            self.trace("heal the partition")
            self.cut = set()
        if leader is not None and rng.random() < 0.02:
            self.change_membership(leader)
        if leader is not None and rng.random() < 0.01:
            target = rng.choice(leader.voters)
            try:
                leader.transfer_leadership(target)
                self.trace(f"{leader.id} transfers leadership to {target}")
            except (NotLeader, ProposalRefused):
                pass
            self.handle_ready(leader)
        for replica in self.live():
            if rng.random() < 0.05:
                self.compact(replica)
            if rng.random() < 0.03:
                self.read(replica)

    def propose(self, replica: RaftNode, handle: bool = True) -> int | None:
        self.proposed += 1
        data = f"s{self.seed}-c{self.proposed}".encode()
        try:
            index = replica.propose(data)
        except (NotLeader, ProposalRefused):
            return None
        if handle:
            self.handle_ready(replica)
        return index

    def change_membership(self, leader: RaftNode) -> None:
        outside = [n for n in self.NODES if n not in leader.voters]
        try:
            if outside and (len(leader.voters) < 3 or self.rng.random() < 0.5):
                node = self.rng.choice(outside)
                leader.propose_add_voter(node)
                self.trace(f"{leader.id} adds voter {node}")
            elif len(leader.voters) > 1:
                node = self.rng.choice(leader.voters)
                leader.propose_remove_voter(node)
                self.trace(f"{leader.id} removes voter {node}")
        except (NotLeader, ProposalRefused):
            return
        self.handle_ready(leader)

    def compact(self, replica: RaftNode) -> None:
        applied = self.applied_index[replica.id]
        if applied - replica.log.snapshot.index < 4:
            return
        image = json.dumps([(i, d.decode()) for i, d in self.state[replica.id]]).encode()
        replica.compact(applied, image)
        self.handle_ready(replica)

    def read(self, replica: RaftNode) -> None:
        self.reads += 1
        context = f"r{self.reads}".encode()
        self.read_floor[context] = max(self.committed, default=0)
        try:
            replica.read_index(context)
        except NotLeader:
            return
        self.handle_ready(replica)

    # ------------------------------------------------------------ checks

    def check_roles(self, replica: RaftNode) -> None:
        if replica.role != LEADER:
            return
        holder = self.leader_of_term.setdefault(replica.term, replica.id)
        if holder != replica.id:
            raise SafetyViolation(f"two leaders in term {replica.term}: {holder} and "
                                  f"{replica.id}")
        if (replica.id, replica.term) not in self.was_leader:
            self.was_leader.add((replica.id, replica.term))
            self.stats["leaders_elected"] += 1
            self.check_leader_complete(replica)

    def check_leader_complete(self, leader: RaftNode) -> None:
        log = leader.log
        for index, (term, kind, data) in self.committed.items():
            if self.committed_seen_in_term[index] >= leader.term:
                continue
            if index > log.last_index():
                raise SafetyViolation(f"leader {leader.id} of term {leader.term} lacks "
                                      f"committed entry {index}")
            if index >= log.first_index():
                entry = log.entry(index)
                if (entry.term, entry.kind, entry.data) != (term, kind, data):
                    raise SafetyViolation(f"leader {leader.id} of term {leader.term} holds "
                                          f"{entry} where {index} committed {term, data}")

    def check_new_entries(self, replica: RaftNode, ready) -> None:
        log = replica.log
        for entry in ready.entries:
            previous = log.term(entry.index - 1)
            fact = (entry.kind, entry.data, previous)
            known = self.entry_at.setdefault((entry.index, entry.term), fact)
            if known != fact:
                raise SafetyViolation(f"log matching: {replica.id} stores {entry} after term "
                                      f"{previous}, elsewhere ({entry.index}, {entry.term}) "
                                      f"is {known}")
            committed = self.committed.get(entry.index)
            # A replica still in an older term may hold a deposed leader's entry there
            # (it is repaired later); one that knows the commit, or is in a later term
            # (its leader holds the committed entry), may not.
            if committed is not None and committed != (entry.term, entry.kind, entry.data) \
                    and (entry.index <= log.commit
                         or replica.term > self.committed_seen_in_term[entry.index]):
                raise SafetyViolation(f"{replica.id} overwrites committed entry {entry.index} "
                                      f"{committed} with {entry}")

    def check_commit(self, replica: RaftNode) -> None:
        log = replica.log
        for index in range(max(log.first_index(), log.commit - 300), log.commit + 1):
            entry = log.entry(index)
            fact = (entry.term, entry.kind, entry.data)
            known = self.committed.get(index)
            if known is None:
                self.committed[index] = fact
                self.committed_seen_in_term[index] = replica.term
                for leader in self.live():
                    if leader.role == LEADER and leader.term > replica.term:
                        self.check_leader_complete(leader)
            elif known != fact:
                raise SafetyViolation(f"{replica.id} has {entry} committed at {index}, "
                                      f"{known} was committed there")

    # ------------------------------------------------------------ the run

    def heal(self) -> None:
        self.trace("heal everything")
        self.cut = set()
        self.loss = self.duplicate = 0.0
        for node in self.NODES:
            if self.nodes.get(node) is None:
                self._start(node)

    def run(self) -> None:
        for _ in range(self.chaos_ticks):
            self.chaos()
            self.tick()
        self.heal()
        self.check_liveness()

    def check_liveness(self) -> None:
        """After healing: a leader of the newest term within the bound, and the three
        commands proposed to it applied on every voter. A command proposed to a leader
        that is then deposed may be lost (Raft promises nothing for it): like a
        client, the check proposes it again to the next leader."""
        bound = 30 * self.election_ticks
        wanted = [f"s{self.seed}-after-heal-{k}".encode() for k in range(3)]
        proposed_to = None
        for _ in range(bound):
            self.tick()
            leader = self.leader()
            newest = max(r.term for r in self.live())
            if leader is None or leader.term != newest \
                    or leader.log.term(leader.commit_index) != leader.term:
                continue
            if all(set(wanted) <= {d for _, d in self.state[v]} for v in leader.voters):
                return
            if proposed_to != (leader.id, leader.term):
                try:
                    leader.propose_batch(wanted)
                    proposed_to = (leader.id, leader.term)
                except ProposalRefused:
                    pass
                self.handle_ready(leader)
        raise SafetyViolation(f"no progress {bound} ticks after healing: leader "
                              f"{self.leader()}, replicas {self.live()}")


def run_seed(seed: int, trace: bool = False) -> Simulation:
    simulation = Simulation(seed, trace=trace)
    try:
        simulation.run()
    except AssertionError as exc:
        raise SafetyViolation(f"seed {seed}: {exc}\n{replay_hint(seed)}") from exc
    return simulation


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int)
    parser.add_argument("--seeds", default="0:1000", help="first:last (exclusive)")
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args(argv)
    if args.seed is not None:
        simulation = run_seed(args.seed, trace=args.trace)
        print(f"seed {args.seed}: ok, {len(simulation.committed)} entries committed")
        return 0
    first, last = (int(x) for x in args.seeds.split(":"))
    for seed in range(first, last):
        try:
            run_seed(seed)
        except SafetyViolation as exc:
            print(exc)
            return 1
    print(f"seeds {first}..{last - 1}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
