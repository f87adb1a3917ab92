"""MemoryStorage: the durable side of the Ready contract, kept in memory.

It shows, in a dozen lines, what the SQLite-backed storage of the agent must
do with each Ready before sending its messages (tests and the simulation use
it as the "disk" that survives a crash):

    ready.snapshot      → keep it; drop entries <= its index (all of them if
                          ready.restore_snapshot)
    ready.hard_state    → keep it
    ready.entries       → drop stored entries from entries[0].index on, append
    (fsync)             → now ready.messages may leave

`persisted()` gives what RaftNode(persisted=...) takes on restart.
"""
from __future__ import annotations

from .types import HardState, Ready, Snapshot


class PersistedState:
    """What a replica stored durably, given back to RaftNode on restart."""

    __slots__ = ("hard_state", "snapshot", "entries")

    def __init__(self, hard_state: HardState | None = None, snapshot: Snapshot | None = None,
                 entries=()):
        self.hard_state = hard_state
        self.snapshot = snapshot
        self.entries = list(entries)


class MemoryStorage:
    __slots__ = ("hard_state", "snapshot", "entries")

    def __init__(self):
        self.hard_state = None
        self.snapshot = None
        self.entries: list = []

    def save(self, ready: Ready) -> None:
        if ready.snapshot is not None:
            if self.snapshot is None or ready.snapshot.index > self.snapshot.index:
                self.snapshot = ready.snapshot
                if ready.restore_snapshot:
                    self.entries = []
                else:
                    self.entries = [e for e in self.entries if e.index > ready.snapshot.index]
        if ready.hard_state is not None:
            self.hard_state = ready.hard_state
        if ready.entries:
            first = ready.entries[0].index
            self.entries = [e for e in self.entries if e.index < first] + list(ready.entries)

    def persisted(self) -> PersistedState:
        return PersistedState(self.hard_state, self.snapshot, list(self.entries))
