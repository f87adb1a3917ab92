"""The control store's SQLite schema, its version, and the checks made on opening.

Tables hold nothing the writer did not choose: no AUTOINCREMENT, no
CURRENT_TIMESTAMP, no random(), so one command sequence gives one state on
every replica. Small, hot rows (nodes, actors, jobs) live in WITHOUT ROWID
tables clustered on their id, which makes a heartbeat one B-tree lookup;
tables whose rows can be large (functions, kv values) keep a rowid, as the
SQLite documentation advises for rows over a twentieth of a page. Their
rowids, too, follow only from the command sequence, and a snapshot copies
pages, so they match across replicas; `TABLES` orders every dump by primary
key all the same.
"""
from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 2   # 2: write_tokens (acknowledged kv writes applied once)

_DDL = (
    """
CREATE TABLE schema_version (
    version INTEGER PRIMARY KEY
) WITHOUT ROWID
""",
    """
CREATE TABLE log_position (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 0),
    last_applied_index INTEGER NOT NULL     -- log index of the last command applied
) WITHOUT ROWID
""",
    """
CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    resources_json TEXT NOT NULL,           -- {resource name: total quantity}
    labels_json TEXT NOT NULL,              -- {label: value}
    load_json TEXT,                         -- what the last heartbeat reported
    alive INTEGER NOT NULL,                 -- 1 until node_dead; never back to 1
    registered_at REAL NOT NULL,
    last_heartbeat_at REAL NOT NULL,        -- registration counts as a heartbeat
    died_at REAL
) WITHOUT ROWID
""",
    """
CREATE TABLE actors (
    actor_id BLOB PRIMARY KEY,
    name TEXT,
    namespace TEXT,
    node_id TEXT,                           -- NULL while not placed
    state TEXT NOT NULL,                    -- pending, alive, restarting, dead
    owner BLOB,
    detached INTEGER NOT NULL,
    class_name TEXT NOT NULL,
    worker_id TEXT,
    incarnation INTEGER NOT NULL,           -- restarts so far; updates never lower it
    death_cause TEXT,
    registered_at REAL NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID
""",
    """
-- A name belongs to at most one actor that is not dead. The store checks
-- before writing, to answer "taken"; this index is the guarantee.
CREATE UNIQUE INDEX live_actor_names ON actors (namespace, name)
    WHERE name IS NOT NULL AND state != 'dead'
""",
    """
CREATE INDEX actors_by_node ON actors (node_id, actor_id)
""",
    """
CREATE TABLE functions (
    function_id BLOB PRIMARY KEY,
    function_bytes BLOB NOT NULL,
    exported_at REAL NOT NULL
)
""",
    """
CREATE TABLE jobs (
    job_id BLOB PRIMARY KEY,
    driver_address TEXT NOT NULL,
    driver_pid INTEGER NOT NULL,
    namespace TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL                        -- NULL while the job runs
) WITHOUT ROWID
""",
    """
CREATE TABLE kv (
    namespace TEXT NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (namespace, key)
)
""",
    """
-- The writes of kv_write commands already applied, by their token (the
-- client that sent it and its sequence number): a retry of the same write
-- (resent after a leader change) gets the first result and changes nothing.
-- A client's rows below its done_below (every write it no longer waits for)
-- are deleted by its next write, so the table stays small.
CREATE TABLE write_tokens (
    client BLOB NOT NULL,
    seq INTEGER NOT NULL,
    result INTEGER NOT NULL,
    PRIMARY KEY (client, seq)
) WITHOUT ROWID
""",
    """
-- Per client, the lowest sequence number it may still send: a token below
-- it (a copy of an abandoned write, arriving late) is never applied.
CREATE TABLE write_floors (
    client BLOB PRIMARY KEY,
    done_below INTEGER NOT NULL
) WITHOUT ROWID
""",
)

TABLES = {
    "schema_version": "version",
    "log_position": "singleton",
    "nodes": "node_id",
    "actors": "actor_id",
    "functions": "function_id",
    "jobs": "job_id",
    "kv": "namespace, key",
    "write_tokens": "client, seq",
    "write_floors": "client",
}
"""table -> its primary key columns: the order of `ControlStore.dump`."""


class NotAControlStore(ValueError):
    """The database (a file or a snapshot) is not a control store of this schema."""


def create_or_check(db: sqlite3.Connection) -> None:
    """Creates the schema in an empty database, or checks an existing one's version.

    Raises NotAControlStore when the database holds other tables or another
    schema version: there are no migrations yet, and guessing would corrupt
    cluster state.
    """
    tables = {row[0] for row in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        db.execute("BEGIN")
        for statement in _DDL:
            db.execute(statement)
        db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
        db.execute("INSERT INTO log_position VALUES (0, 0)")
        db.execute("COMMIT")
        return
    check_version(db, "the database")


def check_version(db: sqlite3.Connection, what: str) -> None:
    """Raises NotAControlStore unless db holds this schema, at this version."""
    tables = {row[0] for row in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "schema_version" not in tables:
        raise NotAControlStore(f"{what} is not a lightray control store "
                               f"(it has tables {sorted(tables)}, no schema_version)")
    versions = [row[0] for row in db.execute("SELECT version FROM schema_version")]
    if versions != [SCHEMA_VERSION]:
        raise NotAControlStore(f"{what} has control store schema version {versions}, this "
                               f"lightray reads version {SCHEMA_VERSION} only")
    missing = set(TABLES) - tables
    if missing:
        raise NotAControlStore(f"{what} lacks control store tables {sorted(missing)}")
