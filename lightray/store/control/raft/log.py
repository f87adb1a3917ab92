"""A replica's Raft log in memory: a snapshot, the entries after it, commit and applied.

    snapshot (index s, term, voters) | entries s+1 .. last | commit <= last | applied <= commit
                                       '-- from stable_to+1 on: not yet handed out to persist

Invariants the methods keep:
- entries[k].index == snapshot.index + 1 + k, and terms never decrease along the log;
- commit only grows, and a cut (a follower's conflicting suffix) never reaches
  below commit + 1: a committed entry is never removed or changed;
- applied <= commit; entries up to applied were handed out to be applied.

The voter set in force is the one of the last CONFIG entry in the log (a
change takes effect when appended, not when committed), else the
snapshot's. The log is the core's own memory; the I/O side keeps the
durable copy from Ready batches and gives it back on restart.
"""
from __future__ import annotations

from .types import CONFIG, Entry, Snapshot, decode_voters


class RaftLog:
    __slots__ = ("snapshot", "entries", "commit", "applied", "stable_to")

    def __init__(self, snapshot: Snapshot, entries=(), commit: int = 0, applied: int = 0):
        self.snapshot = snapshot
        self.entries = list(entries)        # the entries after snapshot.index
        for offset, entry in enumerate(self.entries):
            if entry.index != snapshot.index + 1 + offset:
                raise ValueError(f"log entry {offset} has index {entry.index}, expected "
                                 f"{snapshot.index + 1 + offset}")
        self.commit = max(commit, snapshot.index)
        self.commit = min(self.commit, self.last_index())
        self.applied = max(snapshot.index, min(applied, self.commit))
        self.stable_to = self.last_index()   # entries up to here were handed out to persist

    # ------------------------------------------------------------ reading

    def first_index(self) -> int:
        return self.snapshot.index + 1

    def last_index(self) -> int:
        return self.snapshot.index + len(self.entries)

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snapshot.term

    def term(self, index: int) -> int | None:
        """The term of the entry at index; None when compacted away or past the end."""
        if index == self.snapshot.index:
            return self.snapshot.term
        offset = index - self.snapshot.index - 1
        if 0 <= offset < len(self.entries):
            return self.entries[offset].term
        return None

    def matches(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def entry(self, index: int) -> Entry:
        return self.entries[index - self.snapshot.index - 1]

    def slice(self, low: int, high: int, max_count: int, max_bytes: int) -> list:
        """Entries low..high-1 (low >= first_index), at most max_count of them and
        about max_bytes (at least one entry)."""
        start = low - self.snapshot.index - 1
        stop = min(high - self.snapshot.index - 1, start + max_count)
        chosen, size = [], 0
        for entry in self.entries[start:stop]:
            size += len(entry.data) + 32
            if chosen and size > max_bytes:
                break
            chosen.append(entry)
        return chosen

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """A candidate's log with that last entry is at least as up to date as this one."""
        return (last_term, last_index) >= (self.last_term(), self.last_index())

    def voters_at(self, index: int) -> tuple:
        """The voter set in force once the log up to index is appended."""
        for entry in reversed(self.entries[:max(0, index - self.snapshot.index)]):
            if entry.kind == CONFIG:
                return decode_voters(entry.data)
        return self.snapshot.voters

    def last_config_index(self) -> int:
        for entry in reversed(self.entries):
            if entry.kind == CONFIG:
                return entry.index
        return self.snapshot.index

    def conflict_hint(self, index: int) -> tuple:
        """For a rejected append at index: (first index of our term there, that term), or
        (last index + 1, 0) when our log is shorter."""
        if index > self.last_index():
            return self.last_index() + 1, 0
        term = self.term(index)
        if term is None:        # compacted: everything up to the snapshot is committed
            return self.snapshot.index + 1, 0
        while index - 1 > self.snapshot.index and self.term(index - 1) == term:
            index -= 1
        return index, term

    def last_index_of_term(self, term: int) -> int | None:
        for entry in reversed(self.entries):
            if entry.term == term:
                return entry.index
            if entry.term < term:
                return None
        return None

    # ------------------------------------------------------------ writing

    def append(self, entries) -> None:
        """Appends entries that follow on from the last one (the leader's own)."""
        self.entries.extend(entries)

    def maybe_append(self, index: int, log_term: int, commit: int, entries) -> int | None:
        """A follower's AppendEntries: None if the log does not contain (index, log_term);
        else stores entries after index (cutting a conflicting suffix), advances commit
        to min(commit, the last new index) and returns that last new index."""
        if not self.matches(index, log_term):
            return None
        last_new = index + len(entries)
        for entry in entries:
            if entry.index <= self.snapshot.index:
                continue
            existing = self.term(entry.index)
            if existing == entry.term:
                continue
            if existing is not None:
                if entry.index <= self.commit:
                    raise AssertionError(f"entry {entry.index} conflicts with the committed "
                                         f"log (commit {self.commit})")
                del self.entries[entry.index - self.snapshot.index - 1:]
                self.stable_to = min(self.stable_to, entry.index - 1)
            self.entries.extend(e for e in entries if e.index >= entry.index)
            break
        self.commit_to(min(commit, last_new))
        return last_new

    def commit_to(self, index: int) -> bool:
        if index > self.commit:
            self.commit = min(index, self.last_index())
            return True
        return False

    def take_unstable(self) -> list:
        """The entries not yet handed out to persist; from now on they count as handed out."""
        unstable = self.entries[max(0, self.stable_to - self.snapshot.index):]
        self.stable_to = self.last_index()
        return unstable

    def take_committed(self) -> list:
        """The entries committed and not yet handed out to apply."""
        start = self.applied - self.snapshot.index
        stop = self.commit - self.snapshot.index
        ready = self.entries[start:stop]
        self.applied = self.commit
        return ready

    def compact(self, index: int, data: bytes) -> Snapshot:
        """The application's image of its state at index (<= applied) becomes the
        snapshot; the entries up to index go."""
        if not self.snapshot.index < index <= self.applied:
            raise ValueError(f"compact to {index}: must be after the snapshot "
                             f"({self.snapshot.index}) and applied (up to {self.applied})")
        snapshot = Snapshot(index, self.term(index), self.voters_at(index), data)
        del self.entries[:index - self.snapshot.index]
        self.snapshot = snapshot
        return snapshot

    def restore(self, snapshot: Snapshot) -> None:
        """A snapshot from the leader replaces the whole log."""
        self.snapshot = snapshot
        self.entries = []
        self.commit = self.applied = self.stable_to = snapshot.index
