"""ReadQueue: a leader's linearizable reads waiting for a quorum's heartbeat answers.

A read that arrives at commit index c is safe to serve at c once a quorum
answered a heartbeat sent after it arrived: then no newer leader can have
committed anything this leader has not (ReadIndex, Raft thesis 6.4). Each
heartbeat carries the sequence number of the newest pending read, and an
answer acknowledges every read up to it. The sequence never goes back, even
across terms, so an answer to an old heartbeat never confirms a newer read.
"""
from __future__ import annotations


class PendingRead:
    __slots__ = ("seq", "context", "origin", "index", "acks")

    def __init__(self, seq: int, context: bytes, origin: str, index: int, acks: set):
        self.seq = seq
        self.context = context
        self.origin = origin
        self.index = index
        self.acks = acks


class ReadQueue:
    """Pending reads, oldest first; seq numbers the newest one."""

    __slots__ = ("pending", "seq")

    def __init__(self):
        self.pending: list = []
        self.seq = 0

    def __bool__(self) -> bool:
        return bool(self.pending)

    def add(self, context: bytes, origin: str, index: int, leader: str) -> None:
        self.seq += 1
        self.pending.append(PendingRead(self.seq, context, origin, index, {leader}))

    def heartbeat_context(self) -> bytes:
        """What a heartbeat carries: the newest pending read's seq, or nothing."""
        return self.seq.to_bytes(8, "big") if self.pending else b""

    def acknowledge(self, node: str, context: bytes) -> None:
        """A heartbeat answer from node: it confirms every read up to the seq it carries."""
        if len(context) != 8:
            return
        seq = int.from_bytes(context, "big")
        for read in self.pending:
            if read.seq > seq:
                break
            read.acks.add(node)

    def confirmed(self, voters) -> list:
        """The oldest reads a quorum of voters acknowledged, taken off the queue."""
        quorum = len(voters) // 2 + 1
        done = []
        while self.pending:
            read = self.pending[0]
            if sum(1 for v in voters if v in read.acks) < quorum:
                break
            done.append(self.pending.pop(0))
        return done

    def clear(self) -> None:
        """A new role: pending reads are dropped (their callers retry); seq goes on."""
        self.pending = []
