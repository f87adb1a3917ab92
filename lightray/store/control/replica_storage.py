"""The durable side of a control replica's Raft log: one SQLite file, fsync'd.

    RaftNode.ready() ── save(ready) ──▶ raft.db (WAL, synchronous=FULL): one transaction
                                          snapshot · hard state · entries, then fsync
    restart ── persisted() ──▶ RaftNode(persisted=...)

What `save` promises is the Ready contract (lightray.store.control.raft.types):
when it returns, the snapshot, the hard state (term, vote, commit) and the
entries are on disk, so the messages of that Ready may leave (a vote or an
acknowledgement promises exactly this). WAL with synchronous=FULL syncs the
log file at every commit; a crash of the process or of the machine keeps
every saved Ready.

The log lives apart from control.db (the state the entries build) because
the two advance at different times: entries are saved when they arrive,
applied when they commit. control.db carries its own last applied index,
which the replica hands RaftNode on restart as `applied`.

A file that is not this format raises NotAControlStore naming the file:
the replica then refuses to serve, and can be rebuilt empty (it catches up
from the leader's snapshot).
"""
from __future__ import annotations

import os
import sqlite3

from .raft import Entry, HardState, PersistedState, Ready, Snapshot, decode_voters, encode_voters
from .schema import NotAControlStore

FORMAT = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS raft_meta (format INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS raft_hard_state (
    term INTEGER NOT NULL, vote TEXT, commit_index INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS raft_snapshot (
    idx INTEGER NOT NULL, term INTEGER NOT NULL, voters BLOB NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS raft_entries (
    idx INTEGER PRIMARY KEY, term INTEGER NOT NULL, kind INTEGER NOT NULL,
    data BLOB NOT NULL);
"""


class SqliteRaftStorage:
    """A replica's Raft log, hard state and latest snapshot in the SQLite file at path."""

    __slots__ = ("path", "_db", "snapshot_index", "_synced_vote", "_synchronous")

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        _create_private(self.path)
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")   # the fsync the Ready contract needs
            db.executescript(_SCHEMA)
            row = db.execute("SELECT format FROM raft_meta").fetchone()
            if row is None:
                db.execute("INSERT INTO raft_meta VALUES (?)", (FORMAT,))
            elif row[0] != FORMAT:
                raise NotAControlStore(f"{self.path} is a Raft log of format {row[0]}, "
                                       f"this lightray reads {FORMAT}")
            db.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as error:
            db.close()
            raise NotAControlStore(f"{self.path} is not a readable Raft log: {error}") from None
        except BaseException:
            db.close()
            raise
        self._db = db
        row = db.execute("SELECT idx FROM raft_snapshot").fetchone()
        self.snapshot_index = row[0] if row else 0
        row = db.execute("SELECT term, vote FROM raft_hard_state").fetchone()
        self._synced_vote = tuple(row) if row else (0, None)   # (term, vote) on disk
        self._synchronous = "FULL"

    def save(self, ready: Ready) -> None:
        """Makes a Ready's snapshot, hard state and entries durable (one transaction)."""
        snapshot, hard, entries = ready.snapshot, ready.hard_state, ready.entries
        if snapshot is None and hard is None and not entries:
            return
        db = self._db
        # A Ready that only moves the commit index needs no fsync: a lost commit
        # index is learned again from the leader (or recounted by it), and what it
        # points at is durable on a majority already. Term, vote and entries are
        # promises to other replicas: fsync'd (synchronous=FULL).
        only_commit = snapshot is None and not entries and self.keeps_vote(hard)
        synchronous = "NORMAL" if only_commit else "FULL"
        if synchronous != self._synchronous:
            db.execute(f"PRAGMA synchronous={synchronous}")
            self._synchronous = synchronous
        db.execute("BEGIN IMMEDIATE")
        try:
            if snapshot is not None and snapshot.index > self.snapshot_index:
                db.execute("DELETE FROM raft_snapshot")
                db.execute("INSERT INTO raft_snapshot VALUES (?, ?, ?, ?)",
                           (snapshot.index, snapshot.term, encode_voters(snapshot.voters),
                            snapshot.data))
                if ready.restore_snapshot:
                    db.execute("DELETE FROM raft_entries")
                else:
                    db.execute("DELETE FROM raft_entries WHERE idx <= ?", (snapshot.index,))
            if hard is not None:
                db.execute("DELETE FROM raft_hard_state")
                db.execute("INSERT INTO raft_hard_state VALUES (?, ?, ?)",
                           (hard.term, hard.vote, hard.commit))
            if entries:
                db.execute("DELETE FROM raft_entries WHERE idx >= ?", (entries[0].index,))
                db.executemany("INSERT INTO raft_entries VALUES (?, ?, ?, ?)",
                               [(e.index, e.term, e.kind, e.data) for e in entries])
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        if snapshot is not None and snapshot.index > self.snapshot_index:
            self.snapshot_index = snapshot.index
        if hard is not None:
            self._synced_vote = (hard.term, hard.vote)

    def keeps_vote(self, hard) -> bool:
        """Whether hard state hard (or None) changes no term or vote on disk."""
        return hard is None or (hard.term, hard.vote) == self._synced_vote

    def persisted(self) -> PersistedState:
        """What RaftNode(persisted=...) takes on restart."""
        db = self._db
        row = db.execute("SELECT term, vote, commit_index FROM raft_hard_state").fetchone()
        hard = HardState(*row) if row else None
        row = db.execute("SELECT idx, term, voters, data FROM raft_snapshot").fetchone()
        snapshot = Snapshot(row[0], row[1], decode_voters(row[2]), row[3]) if row else None
        entries = [Entry(*row) for row in db.execute(
            "SELECT term, idx, kind, data FROM raft_entries ORDER BY idx")]
        return PersistedState(hard, snapshot, entries)

    def close(self) -> None:
        self._db.close()


def _create_private(path: str) -> None:
    # 0600 before SQLite creates it: its -wal and -shm files take the same mode.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
