"""RaftNode: one replica's consensus state machine. Inputs in, a Ready batch out; no I/O.

    I/O side ── step(message) / tick() / propose(data) / read_index(ctx) ──▶ RaftNode
             ◀── ready(): persist (snapshot, hard state, entries) → send messages
                          → apply committed entries, answer read states

The core never touches a socket, a clock, a thread or a file: time is
tick() (the I/O side calls it every tick interval, e.g. 100 ms), randomness
is the random.Random it is given, durability is the Ready contract (see
lightray.store.control.raft.types.Ready). So a test can drive any number of
replicas through any schedule, deterministically.

Roles and terms:

    follower ──election timeout──▶ pre-candidate ──quorum would vote──▶ candidate
        ▲   (randomized: [E, 2E) ticks)     │ (term unchanged)       (term+1, votes
        │                                   ▼                          for itself)
        └──── a message of a higher term, or a leader of this term ◀──────┘
                                                     candidate ──quorum──▶ leader

The safety rules it keeps are listed in the package docstring
(lightray.store.control.raft).
"""
from __future__ import annotations

import random

from .log import RaftLog
from .reads import ReadQueue
from .storage import PersistedState
from .progress import PROBE, REPLICATE, SNAPSHOT, Progress
from .types import (APPEND, APPEND_RESP, CANDIDATE, CONFIG, FOLLOWER, HEARTBEAT,
                    HEARTBEAT_RESP, LEADER, NOOP, NORMAL, PRE_CANDIDATE, PRE_VOTE,
                    PRE_VOTE_RESP, READ_INDEX, READ_INDEX_RESP, TIMEOUT_NOW, VOTE, VOTE_RESP,
                    Entry, HardState, Message, NotLeader, ProposalRefused, Ready, ReadState,
                    Snapshot, encode_voters)
from .types import SNAPSHOT as SNAPSHOT_MSG

MAX_ENTRIES_PER_APPEND = 256
MAX_BYTES_PER_APPEND = 1 << 20


class RaftNode:
    """One replica. voters: the bootstrap voter set, the same on every first member
    (used only when persisted is empty: it becomes log entry 1); () for a replica that
    is added later and learns the set from the log. applied: the last index the
    application's state machine holds (at least persisted.snapshot's index)."""

    def __init__(self, node_id: str, voters=(), *, persisted: PersistedState | None = None,
                 applied: int = 0, rng: random.Random | None = None,
                 election_ticks: int = 10, heartbeat_ticks: int = 1, pre_vote: bool = True,
                 check_quorum: bool = True):
        if heartbeat_ticks < 1 or election_ticks <= heartbeat_ticks:
            raise ValueError("need 1 <= heartbeat_ticks < election_ticks")
        persisted = persisted or PersistedState()
        snapshot = persisted.snapshot or Snapshot(0, 0, ())
        hard = persisted.hard_state or HardState(0, None, 0)
        entries = persisted.entries
        fresh = persisted.snapshot is None and not entries and persisted.hard_state is None
        if fresh and voters:
            # Bootstrap: the first voter set is entry 1 (term 0, the same on every first
            # member), so a replica added later learns it from the log like any change.
            entries = [Entry(0, 1, CONFIG, encode_voters(voters))]
        self.id = node_id
        self.rng = rng or random.Random()
        self.election_ticks = election_ticks
        self.heartbeat_ticks = heartbeat_ticks
        self.pre_vote = pre_vote
        self.check_quorum = check_quorum
        self.log = RaftLog(snapshot, entries, hard.commit, applied)
        if fresh and voters:
            self.log.stable_to = 0          # the bootstrap entry goes out in the first Ready
        self.term = hard.term
        self.vote = hard.vote
        self.role = FOLLOWER
        self.leader: str | None = None
        self.voters = self.log.voters_at(self.log.last_index())
        self.progress: dict = {}             # leader: node id -> Progress
        self.votes: dict = {}                # (pre-)candidate: node id -> granted
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = 0
        self.lead_transferee: str | None = None
        self.pending_config_index = 0
        self.reads = ReadQueue()             # leader: reads waiting for a quorum's answer
        self.reads_before_commit: list = []  # leader: (context, origin) until its term commits
        self._outbox: list = []
        self._read_states: list = []
        self._snapshot_out: Snapshot | None = None
        self._restore_out = False
        self._handed_hard_state = hard
        self._reset_election_timer()

    # ------------------------------------------------------------ inputs

    def tick(self) -> None:
        """One unit of time passed."""
        if self.role == LEADER:
            self._tick_leader()
        else:
            self.election_elapsed += 1
            if self.election_elapsed >= self.randomized_timeout and self.promotable():
                self._start_election()

    def step(self, m: Message) -> None:
        """A message from a peer (the I/O side has decoded it; see codec)."""
        if m.dst != self.id or m.src == self.id:
            return
        if m.term > self.term:
            if m.type in (VOTE, PRE_VOTE) and not m.force and self._in_lease():
                return      # we heard from a leader recently: it is alive
            if m.type == PRE_VOTE or (m.type == PRE_VOTE_RESP and not m.reject):
                pass        # a pre-vote changes no term
            elif m.type in (APPEND, HEARTBEAT, SNAPSHOT_MSG):
                self._become_follower(m.term, m.src)
            else:
                self._become_follower(m.term, None)
        elif m.term < self.term:
            if m.type in (APPEND, HEARTBEAT):
                # A deposed leader learns of the newer term from the answer.
                self._send(Message(APPEND_RESP, self.id, m.src, self.term))
            elif m.type == PRE_VOTE:
                self._send(Message(PRE_VOTE_RESP, self.id, m.src, self.term, reject=True))
            return
        if m.type in (VOTE, PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role == LEADER:
            self._step_leader(m)
        elif self.role in (CANDIDATE, PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    def propose(self, data: bytes) -> int:
        """Appends a command; returns its log index (it is committed when it comes out
        of ready().committed with that index and this term). Raises NotLeader or
        ProposalRefused."""
        return self.propose_batch([data])[0]

    def propose_batch(self, commands) -> list:
        self._check_can_propose()
        first = self.log.last_index() + 1
        entries = [Entry(self.term, first + k, NORMAL, bytes(data))
                   for k, data in enumerate(commands)]
        self._append(entries)
        self._broadcast_append()
        return [entry.index for entry in entries]

    def propose_add_voter(self, node_id: str) -> int:
        if node_id in self.voters:
            raise ProposalRefused(f"{node_id} is a voter already")
        return self._propose_voters(self.voters + (node_id,))

    def propose_remove_voter(self, node_id: str) -> int:
        if node_id not in self.voters:
            raise ProposalRefused(f"{node_id} is not a voter")
        if len(self.voters) == 1:
            raise ProposalRefused("cannot remove the last voter")
        return self._propose_voters(tuple(v for v in self.voters if v != node_id))

    def read_index(self, context: bytes) -> None:
        """Asks to read linearizably: a ReadState(context, index) comes out of a later
        ready(); the read may be served once the state machine applied index. A request
        lost to a leader change produces nothing: retry after a timeout."""
        if self.role == LEADER:
            self._leader_read(bytes(context), self.id)
        elif self.leader is not None:
            self._send(Message(READ_INDEX, self.id, self.leader, self.term,
                               context=bytes(context)))
        else:
            raise NotLeader(None)

    def transfer_leadership(self, target: str) -> None:
        """Hands leadership to target (a voter): it is brought up to date, then told to
        campaign at once. Proposals are refused meanwhile; gives up after an election
        timeout."""
        if self.role != LEADER:
            raise NotLeader(self.leader)
        if target == self.id:
            return
        if target not in self.voters:
            raise ProposalRefused(f"{target} is not a voter")
        self.lead_transferee = target
        self.election_elapsed = 0
        if self.progress[target].match == self.log.last_index():
            self._send(Message(TIMEOUT_NOW, self.id, target, self.term))
        else:
            self._send_append(target)

    def compact(self, index: int, data: bytes) -> Snapshot:
        """The application's image of its state after applying index: it becomes the
        snapshot (persisted through the next Ready) and the log up to index goes."""
        snapshot = self.log.compact(index, bytes(data))
        if self._snapshot_out is None or self._snapshot_out.index < index:
            self._snapshot_out = snapshot
        return snapshot

    def campaign(self) -> None:
        """Starts an election now (tests; a single-replica bootstrap needs none)."""
        if self.role != LEADER and self.promotable():
            self._start_election()

    # ------------------------------------------------------------ outputs

    def ready(self) -> Ready:
        """Everything to do since the last call (see Ready for the order)."""
        ready = Ready()
        if self._snapshot_out is not None:
            ready.snapshot, ready.restore_snapshot = self._snapshot_out, self._restore_out
            self._snapshot_out, self._restore_out = None, False
        ready.entries = self.log.take_unstable()
        hard = HardState(self.term, self.vote, self.log.commit)
        if hard != self._handed_hard_state:
            ready.hard_state = self._handed_hard_state = hard
        ready.messages, self._outbox = self._outbox, []
        ready.committed = self.log.take_committed()
        ready.read_states, self._read_states = self._read_states, []
        return ready

    # ------------------------------------------------------------ state

    def promotable(self) -> bool:
        return self.id in self.voters

    @property
    def commit_index(self) -> int:
        return self.log.commit

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.commit)

    def __repr__(self) -> str:
        return (f"RaftNode({self.id} {self.role} term={self.term} leader={self.leader} "
                f"last={self.log.last_index()} commit={self.log.commit})")

    # ------------------------------------------------------------ transitions

    def _reset_election_timer(self) -> None:
        self.election_elapsed = 0
        self.randomized_timeout = self.election_ticks + self.rng.randrange(self.election_ticks)

    def _become_follower(self, term: int, leader: str | None) -> None:
        if term != self.term:
            self.term, self.vote = term, None
        self.role = FOLLOWER
        self.leader = leader
        self._reset_leader_state()
        self._reset_election_timer()

    def _reset_leader_state(self) -> None:
        self.progress = {}
        self.votes = {}
        self.lead_transferee = None
        self.reads.clear()
        self.reads_before_commit = []

    def _start_election(self, skip_pre_vote: bool = False, transfer: bool = False) -> None:
        """transfer: a leader told us to (TIMEOUT_NOW), so voters skip their lease."""
        if self.pre_vote and not (skip_pre_vote or transfer):
            self.role = PRE_CANDIDATE
            self.leader = None
            kind, term = PRE_VOTE, self.term + 1
        else:
            self.term, self.vote = self.term + 1, self.id
            self.role = CANDIDATE
            self.leader = None
            kind, term = VOTE, self.term
        self._reset_leader_state()
        self._reset_election_timer()
        self.votes = {self.id: True}
        if self._count_votes() == "won":
            self._election_won()
            return
        for voter in self.voters:
            if voter != self.id:
                self._send(Message(kind, self.id, voter, term, index=self.log.last_index(),
                                   log_term=self.log.last_term(), force=transfer))

    def _election_won(self) -> None:
        if self.role == PRE_CANDIDATE:
            self._start_election(skip_pre_vote=True)
        else:
            self._become_leader()

    def _count_votes(self) -> str:
        granted = sum(1 for v in self.voters if self.votes.get(v) is True)
        refused = sum(1 for v in self.voters if self.votes.get(v) is False)
        quorum = len(self.voters) // 2 + 1
        if granted >= quorum:
            return "won"
        if refused >= quorum:
            return "lost"
        return "pending"

    def _become_leader(self) -> None:
        self.role = LEADER
        self.leader = self.id
        self._reset_leader_state()
        self.heartbeat_elapsed = 0
        self.election_elapsed = 0
        last = self.log.last_index()
        for voter in sorted(set(self.voters) | {self.id}):   # sorted: deterministic
            self.progress[voter] = Progress(last + 1)
        self.progress[self.id].match = last
        self._append([Entry(self.term, last + 1, NOOP)])
        # No membership change before this term has committed an entry: the previous
        # leader's change may still be uncommitted (the thesis' single-server fix).
        self.pending_config_index = self.log.last_index()
        self._broadcast_append()

    # ------------------------------------------------------------ votes

    def _in_lease(self) -> bool:
        return (self.check_quorum and self.leader is not None
                and self.election_elapsed < self.election_ticks)

    def _handle_vote_request(self, m: Message) -> None:
        reply = VOTE_RESP if m.type == VOTE else PRE_VOTE_RESP
        free = (self.vote == m.src or (self.vote is None and self.leader is None)
                or (m.type == PRE_VOTE and m.term > self.term))
        if free and self.log.is_up_to_date(m.index, m.log_term):
            self._send(Message(reply, self.id, m.src, m.term))
            if m.type == VOTE:
                self.vote = m.src
                self._reset_election_timer()
        else:
            self._send(Message(reply, self.id, m.src, self.term, reject=True))

    def _step_candidate(self, m: Message) -> None:
        if m.type in (APPEND, HEARTBEAT, SNAPSHOT_MSG):
            self._become_follower(self.term, m.src)
            self._step_follower(m)
            return
        wanted = PRE_VOTE_RESP if self.role == PRE_CANDIDATE else VOTE_RESP
        expected_term = self.term + 1 if self.role == PRE_CANDIDATE else self.term
        if m.type != wanted or (m.term != expected_term and not m.reject):
            return
        self.votes.setdefault(m.src, not m.reject)
        outcome = self._count_votes()
        if outcome == "won":
            self._election_won()
        elif outcome == "lost":
            self._become_follower(self.term, None)

    # ------------------------------------------------------------ follower

    def _step_follower(self, m: Message) -> None:
        if m.type == APPEND:
            self._heard_from_leader(m.src)
            self._handle_append(m)
        elif m.type == HEARTBEAT:
            self._heard_from_leader(m.src)
            self.log.commit_to(m.commit)
            self._send(Message(HEARTBEAT_RESP, self.id, m.src, self.term, context=m.context))
        elif m.type == SNAPSHOT_MSG:
            self._heard_from_leader(m.src)
            self._handle_snapshot(m)
        elif m.type == TIMEOUT_NOW:
            if self.promotable():
                self._start_election(transfer=True)
        elif m.type == READ_INDEX_RESP:
            self._read_states.append(ReadState(m.context, m.index))

    def _heard_from_leader(self, leader: str) -> None:
        self.leader = leader
        self.election_elapsed = 0

    def _handle_append(self, m: Message) -> None:
        log = self.log
        if m.index < log.commit:
            self._send(Message(APPEND_RESP, self.id, m.src, self.term, index=log.commit))
            return
        last_new = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is None:
            hint_index, hint_term = log.conflict_hint(m.index)
            self._send(Message(APPEND_RESP, self.id, m.src, self.term, index=m.index,
                               reject=True, hint_index=hint_index, hint_term=hint_term))
            return
        if m.entries:
            self.voters = log.voters_at(log.last_index())
        self._send(Message(APPEND_RESP, self.id, m.src, self.term, index=last_new))

    def _handle_snapshot(self, m: Message) -> None:
        snapshot, log = m.snapshot, self.log
        if snapshot is None:
            return
        if snapshot.index <= log.commit:
            index = log.commit
        elif log.matches(snapshot.index, snapshot.term):
            log.commit_to(snapshot.index)      # we hold its entries: nothing to restore
            index = snapshot.index
        else:
            log.restore(snapshot)
            self.voters = snapshot.voters
            self._snapshot_out, self._restore_out = snapshot, True
            index = snapshot.index
        self._send(Message(APPEND_RESP, self.id, m.src, self.term, index=index))

    # ------------------------------------------------------------ leader

    def _check_can_propose(self) -> None:
        if self.role != LEADER:
            raise NotLeader(self.leader)
        if self.lead_transferee is not None:
            raise ProposalRefused(f"leadership is moving to {self.lead_transferee}")

    def _propose_voters(self, voters: tuple) -> int:
        self._check_can_propose()
        if self.pending_config_index > self.log.commit:
            raise ProposalRefused("a membership change is pending: one at a time")
        entry = Entry(self.term, self.log.last_index() + 1, CONFIG, encode_voters(voters))
        self.pending_config_index = entry.index
        self._append([entry])
        self._broadcast_append()
        return entry.index

    def _append(self, entries: list) -> None:
        self.log.append(entries)
        self.progress[self.id].match = self.log.last_index()
        self.progress[self.id].next = self.log.last_index() + 1
        if any(entry.kind == CONFIG for entry in entries):
            self._set_voters(self.log.voters_at(self.log.last_index()))
        self._maybe_commit()

    def _set_voters(self, voters: tuple) -> None:
        self.voters = voters
        for voter in voters:
            if voter not in self.progress:
                self.progress[voter] = Progress(self.log.last_index())
                # A voter just added counts as active until the next quorum check
                # (as etcd does): else a check right after the change, before it
                # could answer, would depose a healthy leader.
                self.progress[voter].recent_active = True
        # A removed voter keeps its progress (and gets the change) until the change
        # commits, so it learns it was removed and stops campaigning; it no longer counts.
        if self.lead_transferee is not None and self.lead_transferee not in voters:
            self.lead_transferee = None

    def _maybe_commit(self) -> None:
        if not self.voters:
            return
        matches = sorted((self.progress[v].match if v in self.progress else 0
                          for v in self.voters), reverse=True)
        quorum_index = matches[len(self.voters) // 2]
        if quorum_index <= self.log.commit or self.log.term(quorum_index) != self.term:
            return      # only an entry of this term commits by counting (Figure 8)
        first_of_term = self.log.term(self.log.commit) != self.term
        self.log.commit_to(quorum_index)
        if self.log.commit >= self.log.last_config_index():
            for node in [n for n in self.progress if n not in self.voters and n != self.id]:
                del self.progress[node]
        if first_of_term:
            for context, origin in self.reads_before_commit:
                self._leader_read(context, origin)
            self.reads_before_commit = []
        if self.id not in self.voters and self.log.commit >= self.log.last_config_index():
            self._broadcast_append()       # let the others learn the change is committed
            self._become_follower(self.term, None)

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_ticks:
            self.election_elapsed = 0
            if self.check_quorum and not self._quorum_active():
                self._become_follower(self.term, None)
                return
            self.lead_transferee = None       # a transfer that did not finish in time
        for node, pr in self.progress.items():
            if pr.state == SNAPSHOT:
                pr.snapshot_wait -= 1
                if pr.snapshot_wait <= 0:
                    pr.become_probe()
                    self._send_append(node)
        if self.heartbeat_elapsed >= self.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _quorum_active(self) -> bool:
        active = sum(1 for v in self.voters
                     if v == self.id or (v in self.progress and self.progress[v].recent_active))
        for node, pr in self.progress.items():
            pr.recent_active = False
        return active >= len(self.voters) // 2 + 1

    def _broadcast_heartbeat(self) -> None:
        context = self.reads.heartbeat_context()
        for node, pr in self.progress.items():
            if node != self.id:
                self._send(Message(HEARTBEAT, self.id, node, self.term,
                                   commit=min(pr.match, self.log.commit), context=context))

    def _broadcast_append(self) -> None:
        for node in self.progress:
            if node != self.id:
                self._send_append(node)

    def _send_append(self, node: str) -> None:
        pr, log = self.progress[node], self.log
        if not pr.can_send():
            return
        previous = pr.next - 1
        previous_term = log.term(previous)
        if previous_term is None:
            # The entries it needs were compacted away: send the snapshot instead.
            pr.become_snapshot(self.election_ticks)
            self._send(Message(SNAPSHOT_MSG, self.id, node, self.term, snapshot=log.snapshot))
            return
        entries = []
        if pr.next <= log.last_index():
            entries = log.slice(pr.next, log.last_index() + 1, MAX_ENTRIES_PER_APPEND,
                                MAX_BYTES_PER_APPEND)
        self._send(Message(APPEND, self.id, node, self.term, index=previous,
                           log_term=previous_term, entries=entries, commit=log.commit))
        if entries:
            pr.sent(entries[-1].index)
        elif pr.state == PROBE:
            pr.paused = True

    def _step_leader(self, m: Message) -> None:
        pr = self.progress.get(m.src)
        if m.type == READ_INDEX:
            self._leader_read(m.context, m.src)
            return
        if pr is None:
            return
        if m.type == APPEND_RESP:
            pr.recent_active = True
            if m.reject:
                self._append_rejected(m, pr)
            else:
                self._append_accepted(m, pr)
        elif m.type == HEARTBEAT_RESP:
            pr.recent_active = True
            if pr.state == PROBE:
                pr.paused = False
            elif pr.state == REPLICATE and pr.inflight:
                pr.inflight.popleft()      # an answer lost on the way must not stall us
            if pr.match < self.log.last_index():
                self._send_append(m.src)
            if m.context:
                self.reads.acknowledge(m.src, m.context)
                self._release_confirmed_reads()

    def _append_rejected(self, m: Message, pr: Progress) -> None:
        if m.index <= pr.match:
            return          # older than what we know
        if pr.state == PROBE and m.index != pr.next - 1:
            return          # the answer to an earlier probe
        if m.hint_term:
            last_of_term = self.log.last_index_of_term(m.hint_term)
            next_index = last_of_term + 1 if last_of_term is not None else m.hint_index
        else:
            next_index = m.hint_index
        pr.become_probe()
        pr.next = max(pr.match + 1, min(next_index, m.index))
        self._send_append(m.src)

    def _append_accepted(self, m: Message, pr: Progress) -> None:
        if not pr.acknowledged(m.index):
            return
        if pr.state == PROBE:
            pr.become_replicate()
        elif pr.state == SNAPSHOT and pr.match + 1 >= self.log.first_index():
            pr.become_replicate()
        commit_before = self.log.commit
        self._maybe_commit()
        if self.role != LEADER:
            return
        if self.log.commit > commit_before:
            self._broadcast_append()
        elif pr.next <= self.log.last_index():
            self._send_append(m.src)
        if m.src == self.lead_transferee and pr.match == self.log.last_index():
            self._send(Message(TIMEOUT_NOW, self.id, m.src, self.term))

    # ------------------------------------------------------------ reads

    def _leader_read(self, context: bytes, origin: str) -> None:
        if self.log.term(self.log.commit) != self.term:
            self.reads_before_commit.append((context, origin))
            return
        self.reads.add(context, origin, self.log.commit, self.id)
        self._release_confirmed_reads()
        if self.reads:
            self._broadcast_heartbeat()

    def _release_confirmed_reads(self) -> None:
        for read in self.reads.confirmed(self.voters):
            if read.origin == self.id:
                self._read_states.append(ReadState(read.context, read.index))
            else:
                self._send(Message(READ_INDEX_RESP, self.id, read.origin, self.term,
                                   index=read.index, context=read.context))

    def _send(self, m: Message) -> None:
        self._outbox.append(m)
