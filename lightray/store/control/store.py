"""The control store: cluster state in one SQLite database, changed only by commands.

    head agent ── command tuples ──▶ ControlStore.apply / apply_batch ──▶ SQLite (WAL)
               ◀── results ────────           (one transaction each)
    head agent ── nodes(), named_actor(), kv_get(), ... ──▶ plain reads
    new replica ◀── snapshot() bytes ── restore(), then apply the log from last_applied_index()

The store is a deterministic state machine: a command carries every id and
timestamp it writes (see lightray.store.control.commands), so the same sequence
of commands gives the same `dump()` on any store, and a replicated log can
later feed `apply` on every replica without its users changing. Each applied
command takes the next log index, kept in the database with the state in the
same transaction, so a store reopened after a crash (or a replica replaying
its log) knows where it stands, and an index applied before is skipped.

Durability: WAL with synchronous=NORMAL survives a crash of the process
(the head agent) with every committed command; a power loss may lose the
last few commits, which replication across hosts is meant to cover.

Threads: a store belongs to the thread that opened it (the agent's one
thread); sqlite3 raises ProgrammingError on use from another thread. There
is no lock because nothing needs one; add one before sharing a store.
"""
from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable

from . import snapshot as _snapshot
from .commands import ALREADY_APPLIED, validate
from .records import ACTOR_COLUMNS, JOB_COLUMNS, NODE_COLUMNS, ActorRecord, JobRecord, NodeRecord
from .schema import TABLES, NotAControlStore, create_or_check
from .writes import BY_KIND


class ControlStore:
    """Cluster state: nodes, actors and their names, functions, jobs, a key-value table.

    `ControlStore(path)` opens or creates the database at path (":memory:"
    for a private, unsaved one); opening an existing file resumes where it
    stopped. Raises NotAControlStore (a ValueError) for a file that is some
    other database or another schema version.
    """

    __slots__ = ("_db", "_last_index", "path")

    def __init__(self, path: str | os.PathLike = ":memory:"):
        self.path = os.fspath(path)
        _create_private(self.path)
        # isolation_level=None: the store opens and ends every transaction itself.
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")      # ":memory:" stays "memory"
            db.execute("PRAGMA synchronous=NORMAL")
            create_or_check(db)
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                raise NotAControlStore(f"{self.path} is damaged: {verdict}")
        except sqlite3.DatabaseError as exc:
            db.close()
            raise NotAControlStore(f"{self.path} is not a readable SQLite database: {exc}") \
                from None
        except BaseException:
            db.close()
            raise
        self._db = db
        self._last_index = self._read_last_index()

    # ------------------------------------------------------------ writes

    def apply(self, command, index: int | None = None):
        """Applies one command in one transaction and returns its result.

        index is the command's log index; None takes the next one. An index
        at or below `last_applied_index()` was applied before: nothing
        changes and the result is ALREADY_APPLIED. An index past the next one
        raises ValueError (a command is missing). A malformed command raises
        TypeError or ValueError (see commands.validate) and changes nothing,
        not even the index; a command at odds with the state (a taken name,
        an unknown node) is a result, and does take its index.
        """
        command = validate(command)
        index = self._next_index(index, "index")
        if index <= self._last_index:
            return ALREADY_APPLIED
        with self._transaction(index):
            result = BY_KIND[command[0]](self._db, *command[1:])
        return result

    def apply_batch(self, commands: Iterable, first_index: int | None = None) -> list:
        """Applies commands in one transaction; returns their results, in order.

        The commands take consecutive log indexes from first_index (None: the
        next one); those at or below `last_applied_index()` are skipped with
        the result ALREADY_APPLIED, so replaying an overlapping batch is safe.
        Every command is validated first: if one is malformed, the error
        names its position and nothing is applied. One commit for the whole
        batch is what makes a thousand heartbeats cheap.

        A None in commands is a log entry that is not a command (a replicated
        log's leader NOOP or membership change): it takes its index, changes
        nothing, and its result is None.
        """
        checked = []
        for position, command in enumerate(commands):
            if command is None:
                checked.append(None)
                continue
            try:
                checked.append(validate(command))
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"command {position} of the batch: {exc}") from None
        first = self._next_index(first_index, "first_index")
        skip = min(len(checked), max(0, self._last_index + 1 - first))
        results = [ALREADY_APPLIED] * skip
        if skip == len(checked):
            return results
        db = self._db
        with self._transaction(first + len(checked) - 1):
            for command in checked[skip:]:
                results.append(None if command is None
                               else BY_KIND[command[0]](db, *command[1:]))
        return results

    def last_applied_index(self) -> int:
        """The log index of the last command applied (0 for a new store)."""
        return self._last_index

    def _next_index(self, index, what: str) -> int:
        if index is None:
            return self._last_index + 1
        if type(index) is not int:
            raise TypeError(f"{what} must be an int or None, got {type(index).__name__}")
        if index < 1:
            raise ValueError(f"{what} must be >= 1, got {index}")
        if index > self._last_index + 1:
            raise ValueError(f"{what} {index} skips ahead: the store has applied up to "
                             f"{self._last_index}, so the next command is "
                             f"{self._last_index + 1}")
        return index

    def _transaction(self, last_index: int) -> _Transaction:
        return _Transaction(self, last_index)

    def _read_last_index(self) -> int:
        return self._db.execute("SELECT last_applied_index FROM log_position").fetchone()[0]

    # ------------------------------------------------------------ reads: nodes

    def node(self, node_id: str) -> NodeRecord | None:
        _require(node_id, str, "node_id")
        row = self._db.execute(f"SELECT {NODE_COLUMNS} FROM nodes WHERE node_id = ?",
                               (node_id,)).fetchone()
        return None if row is None else NodeRecord.from_row(row)

    def nodes(self, alive_only: bool = False) -> list:
        """Every node ever registered (or only live ones), ordered by node id."""
        where = "WHERE alive = 1 " if alive_only else ""
        return [NodeRecord.from_row(row) for row in self._db.execute(
            f"SELECT {NODE_COLUMNS} FROM nodes {where}ORDER BY node_id")]

    def nodes_silent_since(self, deadline: float) -> list:
        """Live nodes whose last heartbeat (or registration) is older than deadline.

        The head compares against its own clock and writes node_dead for
        them; the store never reads a clock, so that replicas agree.
        """
        return [NodeRecord.from_row(row) for row in self._db.execute(
            f"SELECT {NODE_COLUMNS} FROM nodes WHERE alive = 1 AND last_heartbeat_at < ? "
            "ORDER BY node_id", (float(deadline),))]

    # ------------------------------------------------------------ reads: actors

    def actor(self, actor_id: bytes) -> ActorRecord | None:
        _require(actor_id, bytes, "actor_id")
        row = self._db.execute(f"SELECT {ACTOR_COLUMNS} FROM actors WHERE actor_id = ?",
                               (actor_id,)).fetchone()
        return None if row is None else ActorRecord.from_row(row)

    def actors(self, node_id: str | None = None, live_only: bool = False) -> list:
        """Actors (on one node, or everywhere; all, or those not dead), by actor id."""
        clauses, params = [], []
        if node_id is not None:
            _require(node_id, str, "node_id")
            clauses.append("node_id = ?")
            params.append(node_id)
        if live_only:
            clauses.append("state != 'dead'")
        where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
        return [ActorRecord.from_row(row) for row in self._db.execute(
            f"SELECT {ACTOR_COLUMNS} FROM actors {where}ORDER BY actor_id", params)]

    def named_actor(self, namespace: str, name: str) -> ActorRecord | None:
        """The live (not dead) actor holding this name, or None."""
        _require(namespace, str, "namespace")
        _require(name, str, "name")
        row = self._db.execute(
            f"SELECT {ACTOR_COLUMNS} FROM actors WHERE namespace = ? AND name = ? "
            "AND state != 'dead'", (namespace, name)).fetchone()
        return None if row is None else ActorRecord.from_row(row)

    # ------------------------------------------------------------ reads: functions, jobs

    def function(self, function_id: bytes) -> bytes | None:
        _require(function_id, bytes, "function_id")
        row = self._db.execute("SELECT function_bytes FROM functions WHERE function_id = ?",
                               (function_id,)).fetchone()
        return None if row is None else row[0]

    def job(self, job_id: bytes) -> JobRecord | None:
        _require(job_id, bytes, "job_id")
        row = self._db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = ?",
                               (job_id,)).fetchone()
        return None if row is None else JobRecord(*row)

    def jobs(self) -> list:
        """Every job, running or finished, in the order they started."""
        return [JobRecord(*row) for row in self._db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs ORDER BY started_at, job_id")]

    # ------------------------------------------------------------ reads: key-value

    def kv_get(self, namespace: str, key: bytes) -> bytes | None:
        _require(namespace, str, "namespace")
        _require(key, bytes, "key")
        row = self._db.execute("SELECT value FROM kv WHERE namespace = ? AND key = ?",
                               (namespace, key)).fetchone()
        return None if row is None else row[0]

    def kv_keys(self, namespace: str, prefix: bytes = b"") -> list:
        """The keys of namespace that start with prefix, in byte order."""
        _require(namespace, str, "namespace")
        _require(prefix, bytes, "prefix")
        # A range on the primary key rather than a LIKE/substr scan.
        sql, params = "SELECT key FROM kv WHERE namespace = ? AND key >= ?", [namespace, prefix]
        end = _prefix_end(prefix)
        if end is not None:
            sql += " AND key < ?"
            params.append(end)
        return [row[0] for row in self._db.execute(sql + " ORDER BY key", params)]

    # ------------------------------------------------------------ whole state

    def dump(self) -> str:
        """Every row of every table (log position included) in primary-key order.

        Two stores hold the same state exactly when their dumps are equal; for
        tests and debugging (it holds every function's bytes).
        """
        lines = []
        for table, primary_key in TABLES.items():
            lines.append(f"-- {table}")
            lines.extend(repr(row) for row in self._db.execute(
                f"SELECT * FROM {table} ORDER BY {primary_key}"))
        return "\n".join(lines)

    def snapshot(self) -> bytes:
        """The whole state, log index included, as an SQLite database image."""
        return _snapshot.take(self._db)

    def restore(self, image: bytes) -> None:
        """Replaces the whole state by a snapshot's; the log goes on from its index.

        Raises NotAControlStore (a ValueError) for bytes that are not a
        snapshot of this schema version, and then changes nothing. A store
        on a file keeps the restored state across a reopen.
        """
        _snapshot.restore_into(self._db, image)
        self._last_index = self._read_last_index()

    # ------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Closes the database (checkpointing the WAL into the file). Idempotent."""
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ControlStore({self.path!r}, last_applied_index={self._last_index})"


class _Transaction:
    """One write transaction that also records the log index it brings the store to.

    Commit, or roll back on any exception (the store is then exactly as
    before, in the database and in memory).
    """

    __slots__ = ("last_index", "store")

    def __init__(self, store: ControlStore, last_index: int):
        self.store = store
        self.last_index = last_index

    def __enter__(self) -> None:
        # IMMEDIATE: take the write lock now, so a second process writing the
        # same file fails here rather than halfway through.
        self.store._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> bool:
        db = self.store._db
        if exc_type is None:
            try:
                db.execute("UPDATE log_position SET last_applied_index = ?", (self.last_index,))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            self.store._last_index = self.last_index
        elif db.in_transaction:
            # SQLite may have rolled back already (on SQLITE_FULL, for one).
            db.execute("ROLLBACK")
        return False


def _require(value, expected: type, what: str) -> None:
    # A str id looked up as bytes would silently find nothing.
    if type(value) is not expected:
        raise TypeError(f"{what} must be {expected.__name__}, got {type(value).__name__} "
                        f"{value!r:.60}")


def _prefix_end(prefix: bytes) -> bytes | None:
    """The smallest byte string above every string that starts with prefix (None: no bound)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes((stripped[-1] + 1,))


def _create_private(path: str) -> None:
    """Create the database file 0600 before SQLite opens it: SQLite makes it
    with the umask's mode (0644 usually) and gives its -wal and -shm files the
    database file's mode, so this covers all three."""
    if path == ":memory:" or path.startswith("file:") or not path:
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
