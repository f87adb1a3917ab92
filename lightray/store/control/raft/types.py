"""The values the Raft core takes and gives: entries, snapshots, messages, Ready.

Everything here is plain data (no behaviour beyond small helpers), so the
codec (lightray.store.control.raft.codec) can turn each into bytes and back,
and a test can build any of them by hand.

    Entry     one log slot: (term, index, kind, data)
    Snapshot  the state machine up to index, the voters at that index, its bytes
    Message   one Raft RPC or reply between replicas (one class, many types)
    HardState term, vote, commit: what must be durable before a message leaves
    ReadState a linearizable read may be answered once index is applied
    Ready     one batch of work for the I/O side: persist, then send, then apply
"""
from __future__ import annotations

from typing import NamedTuple

# Entry kinds.
NORMAL = 0      # an application command (the control store's command bytes)
NOOP = 1        # the empty entry a new leader appends to commit its term
CONFIG = 2      # data is the new voter set, see encode_voters / decode_voters
ENTRY_KINDS = (NORMAL, NOOP, CONFIG)

# Roles.
FOLLOWER, PRE_CANDIDATE, CANDIDATE, LEADER = "follower", "pre-candidate", "candidate", "leader"

# Message types (the numbers are the wire encoding).
VOTE = 1               # candidate asks for a vote for term
VOTE_RESP = 2
PRE_VOTE = 3           # "would you vote for me at term?" (term is the proposed one)
PRE_VOTE_RESP = 4
APPEND = 5             # entries after (index, log_term); commit
APPEND_RESP = 6        # index: last matching index (reject=False) or the rejected index
HEARTBEAT = 7          # commit; context: the newest pending read's sequence number
HEARTBEAT_RESP = 8     # context echoed
SNAPSHOT = 9           # snapshot
TIMEOUT_NOW = 10       # leader transfer: campaign now, without pre-vote
READ_INDEX = 11        # follower -> leader: confirm leadership for read context
READ_INDEX_RESP = 12   # leader -> follower: read context may be served at index
MESSAGE_TYPES = tuple(range(1, 13))

TYPE_NAMES = {VOTE: "vote", VOTE_RESP: "vote_resp", PRE_VOTE: "pre_vote",
              PRE_VOTE_RESP: "pre_vote_resp", APPEND: "append", APPEND_RESP: "append_resp",
              HEARTBEAT: "heartbeat", HEARTBEAT_RESP: "heartbeat_resp", SNAPSHOT: "snapshot",
              TIMEOUT_NOW: "timeout_now", READ_INDEX: "read_index",
              READ_INDEX_RESP: "read_index_resp"}


class Entry(NamedTuple):
    term: int
    index: int
    kind: int = NORMAL
    data: bytes = b""


class Snapshot(NamedTuple):
    index: int              # the last log index the snapshot covers
    term: int               # that entry's term
    voters: tuple           # the voter set in force at index (sorted node ids)
    data: bytes = b""       # the application's image (ControlStore.snapshot())


class HardState(NamedTuple):
    term: int
    vote: str | None        # who this replica voted for in term (None: nobody)
    commit: int


class ReadState(NamedTuple):
    context: bytes          # what the caller passed to read_index
    index: int              # serve the read once the state machine applied this index


def encode_voters(voters) -> bytes:
    """A CONFIG entry's data: the voter ids, sorted, one per line."""
    return "\n".join(sorted(voters)).encode()


def decode_voters(data: bytes) -> tuple:
    return tuple(data.decode().split("\n")) if data else ()


class Message:
    """One message between replicas. Fields a type does not use stay at their default.

    term is the sender's term (for PRE_VOTE: the term it would campaign at).
    index/log_term: APPEND's previous entry, VOTE's last entry, APPEND_RESP's
    matched or rejected index, READ_INDEX_RESP's read index. hint_index and
    hint_term: a rejected APPEND's conflict (first index of the follower's
    term at the rejected index, and that term; 0 when its log is shorter).
    context: heartbeat read sequence, or in READ_INDEX(_RESP) the read's id.
    """

    __slots__ = ("type", "src", "dst", "term", "log_term", "index", "entries", "commit",
                 "reject", "hint_index", "hint_term", "snapshot", "context", "force")

    def __init__(self, type: int, src: str, dst: str, term: int, *, log_term: int = 0,
                 index: int = 0, entries: tuple = (), commit: int = 0, reject: bool = False,
                 hint_index: int = 0, hint_term: int = 0, snapshot: Snapshot | None = None,
                 context: bytes = b"", force: bool = False):
        self.type = type
        self.src = src
        self.dst = dst
        self.term = term
        self.log_term = log_term
        self.index = index
        self.entries = tuple(entries)
        self.commit = commit
        self.reject = reject
        self.hint_index = hint_index
        self.hint_term = hint_term
        self.snapshot = snapshot
        self.context = context
        self.force = force       # VOTE after TIMEOUT_NOW: a leader transfer, skip the lease

    def _key(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other) -> bool:
        return isinstance(other, Message) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self) -> str:
        fields = [f"{TYPE_NAMES.get(self.type, self.type)} {self.src}->{self.dst} t{self.term}"]
        for name in ("log_term", "index", "commit", "hint_index", "hint_term"):
            value = getattr(self, name)
            if value:
                fields.append(f"{name}={value}")
        if self.entries:
            fields.append(f"entries={self.entries[0].index}..{self.entries[-1].index}")
        if self.reject:
            fields.append("reject")
        if self.snapshot is not None:
            fields.append(f"snapshot@{self.snapshot.index}")
        if self.context:
            fields.append(f"context={self.context!r}")
        if self.force:
            fields.append("force")
        return f"Message({' '.join(fields)})"


class Ready:
    """One batch of work for the I/O side, in this order (the durability contract):

    1. persist ``snapshot`` if set (when ``restore_snapshot``: also replace the
       state machine by it and discard every stored entry; otherwise drop the
       stored entries up to snapshot.index: the application compacted);
    2. persist ``hard_state`` if set, and ``entries``: stored entries from
       entries[0].index on are replaced by them (a follower's log may be cut);
       fsync both;
    3. only then send ``messages`` (a vote or an acknowledgement promises
       what step 2 made durable);
    4. apply ``committed`` in order (NOOP and CONFIG entries take their index
       in the state machine but change nothing in it) and answer each
       ``read_states`` item once the state machine has applied its index.

    The core considers everything handed out in a Ready done: finish it
    before giving the core its next input.
    """

    __slots__ = ("hard_state", "entries", "snapshot", "restore_snapshot", "messages",
                 "committed", "read_states")

    def __init__(self):
        self.hard_state: HardState | None = None
        self.entries: list = []
        self.snapshot: Snapshot | None = None
        self.restore_snapshot = False
        self.messages: list = []
        self.committed: list = []
        self.read_states: list = []

    def __bool__(self) -> bool:
        return bool(self.hard_state or self.entries or self.snapshot or self.messages
                    or self.committed or self.read_states)

    def __repr__(self) -> str:
        return (f"Ready(hard_state={self.hard_state}, entries={len(self.entries)}, "
                f"snapshot={self.snapshot.index if self.snapshot else None}, "
                f"messages={len(self.messages)}, committed={len(self.committed)}, "
                f"read_states={len(self.read_states)})")


class NotLeader(Exception):
    """This replica is not the leader; leader is the one it knows (None: unknown)."""

    def __init__(self, leader: str | None):
        super().__init__(f"not the leader (leader: {leader or 'unknown'})")
        self.leader = leader


class ProposalRefused(Exception):
    """The leader cannot take this proposal now (a change pending, a transfer under way)."""
