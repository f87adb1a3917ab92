"""How each command changes the control store: one function per command kind.

Every function runs inside the transaction ControlStore opened, takes the
fields of a command `lightray.store.control.commands.validate` accepted, and
returns the command's result. It reads only the database and its arguments,
so the same command meets the same state and does the same thing on every
replica. A conflict with the state (a taken name, an unknown id, a dead
node) is a result, never an exception: every replica must get past a
committed command alike.

Node liveness:   (unknown) ─register─▶ alive ─node_dead─▶ dead ─node_rejoin─▶ alive
                 (a node id's incarnation only grows: a rejoined node is a new one)
Actor states:    pending ◀─▶ alive ◀─▶ restarting ─▶ dead         (final)
                 dead frees the actor's name; actor_remove deletes the row.
"""
from __future__ import annotations

import json
import sqlite3

from . import commands as c


def node_register(db: sqlite3.Connection, node_id: str, address: str, resources_json: str,
                  labels_json: str, ts: float):
    row = db.execute("SELECT alive FROM nodes WHERE node_id = ?", (node_id,)).fetchone()
    if row is None:
        db.execute("INSERT INTO nodes VALUES (?, ?, ?, ?, NULL, 1, ?, ?, NULL)",
                   (node_id, address, resources_json, labels_json, ts, ts))
        return c.OK
    if not row[0]:
        # Peers have already acted on its death (actors moved, objects lost):
        # the agent must come back as a new node.
        return c.DEAD
    db.execute("UPDATE nodes SET address = ?, resources_json = ?, labels_json = ?, "
               "last_heartbeat_at = ? WHERE node_id = ?",
               (address, resources_json, labels_json, ts, node_id))
    return c.UPDATED


def node_rejoin(db: sqlite3.Connection, node_id: str, incarnation: int, address: str,
                resources_json: str, ts: float):
    """The membership authority admitted a dead node again, as a later
    incarnation (its peers acted on the death of the earlier one already)."""
    if not db.execute("UPDATE nodes SET alive = 1, address = ?, resources_json = ?, "
                      "labels_json = ?, last_heartbeat_at = ?, died_at = NULL "
                      "WHERE node_id = ?",
                      (address, resources_json, json.dumps({"incarnation": str(incarnation)}),
                       ts, node_id)).rowcount:
        return c.UNKNOWN
    return c.REJOINED


def node_heartbeat(db: sqlite3.Connection, node_id: str, load_json: str, ts: float):
    # The common case in one statement: thousands of these arrive per second.
    if db.execute("UPDATE nodes SET load_json = ?, last_heartbeat_at = ? "
                  "WHERE node_id = ? AND alive = 1", (load_json, ts, node_id)).rowcount:
        return c.OK
    return _node_missing_or_dead(db, node_id)


def node_dead(db: sqlite3.Connection, node_id: str, ts: float):
    if db.execute("UPDATE nodes SET alive = 0, died_at = ? WHERE node_id = ? AND alive = 1",
                  (ts, node_id)).rowcount:
        return c.OK
    return _node_missing_or_dead(db, node_id)


def _node_missing_or_dead(db: sqlite3.Connection, node_id: str):
    known = db.execute("SELECT 1 FROM nodes WHERE node_id = ?", (node_id,)).fetchone()
    return c.DEAD if known else c.UNKNOWN


def actor_register(db: sqlite3.Connection, actor_id: bytes, name, namespace, node_id,
                   state: str, owner, detached: bool, class_name: str, ts: float):
    if db.execute("SELECT 1 FROM actors WHERE actor_id = ?", (actor_id,)).fetchone():
        return (c.EXISTS, actor_id)
    if name is not None and state != c.ACTOR_DEAD:
        holder = _live_actor_named(db, namespace, name)
        if holder is not None:
            return (c.TAKEN, holder)
    db.execute("INSERT INTO actors VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, 0, NULL, ?, ?)",
               (actor_id, name, namespace, node_id, state, owner, int(detached), class_name,
                ts, ts))
    return (c.OK, actor_id)


def _live_actor_named(db: sqlite3.Connection, namespace: str, name: str):
    row = db.execute("SELECT actor_id FROM actors WHERE namespace = ? AND name = ? "
                     "AND state != 'dead'", (namespace, name)).fetchone()
    return None if row is None else row[0]


def actor_update(db: sqlite3.Connection, actor_id: bytes, state: str, node_id, worker_id,
                 incarnation: int, death_cause, ts: float):
    row = db.execute("SELECT state, incarnation FROM actors WHERE actor_id = ?",
                     (actor_id,)).fetchone()
    if row is None:
        return c.UNKNOWN
    if row[0] == c.ACTOR_DEAD:
        return c.DEAD
    if incarnation < row[1]:
        # A report from before a restart, delivered late.
        return c.STALE
    # No name check: an update never takes a name, and a live actor already holds its own.
    db.execute("UPDATE actors SET state = ?, node_id = ?, worker_id = ?, incarnation = ?, "
               "death_cause = ?, updated_at = ? WHERE actor_id = ?",
               (state, node_id, worker_id, incarnation, death_cause, ts, actor_id))
    return c.OK


def actor_remove(db: sqlite3.Connection, actor_id: bytes, ts: float):
    if db.execute("DELETE FROM actors WHERE actor_id = ?", (actor_id,)).rowcount:
        return c.OK
    return c.UNKNOWN


def function_export(db: sqlite3.Connection, function_id: bytes, function_bytes: bytes,
                    ts: float):
    # Ids are content hashes: a second export of an id is the same function.
    if db.execute("INSERT OR IGNORE INTO functions VALUES (?, ?, ?)",
                  (function_id, function_bytes, ts)).rowcount:
        return c.OK
    return c.EXISTS


def job_start(db: sqlite3.Connection, job_id: bytes, driver_address: str, driver_pid: int,
              namespace: str, ts: float):
    if db.execute("INSERT OR IGNORE INTO jobs VALUES (?, ?, ?, ?, ?, NULL)",
                  (job_id, driver_address, driver_pid, namespace, ts)).rowcount:
        return c.OK
    return c.EXISTS


def job_finish(db: sqlite3.Connection, job_id: bytes, ts: float):
    if db.execute("UPDATE jobs SET finished_at = ? WHERE job_id = ? AND finished_at IS NULL",
                  (ts, job_id)).rowcount:
        return c.OK
    known = db.execute("SELECT 1 FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    return c.FINISHED if known else c.UNKNOWN


def kv_put(db: sqlite3.Connection, namespace: str, key: bytes, value: bytes, overwrite: bool,
           ts: float) -> bool:
    if overwrite:
        db.execute("INSERT INTO kv VALUES (?, ?, ?, ?) ON CONFLICT (namespace, key) "
                   "DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                   (namespace, key, value, ts))
        return True
    return bool(db.execute("INSERT OR IGNORE INTO kv VALUES (?, ?, ?, ?)",
                           (namespace, key, value, ts)).rowcount)


def kv_delete(db: sqlite3.Connection, namespace: str, key: bytes, ts: float) -> bool:
    return bool(db.execute("DELETE FROM kv WHERE namespace = ? AND key = ?",
                           (namespace, key)).rowcount)


def kv_write(db: sqlite3.Connection, client: bytes, seq: int, done_below: int,
             namespace: str, key: bytes, mode: str, expected, value, ts: float) -> bool:
    row = db.execute("SELECT result FROM write_tokens WHERE client = ? AND seq = ?",
                     (client, seq)).fetchone()
    if row is not None:
        return bool(row[0])          # a retry of a write applied before
    row = db.execute("SELECT done_below FROM write_floors WHERE client = ?",
                     (client,)).fetchone()
    floor = 0 if row is None else row[0]
    if seq < floor:
        return False                 # its client gave up on it: never applied
    if done_below > floor:
        db.execute("INSERT INTO write_floors VALUES (?, ?) ON CONFLICT (client) "
                   "DO UPDATE SET done_below = excluded.done_below", (client, done_below))
        db.execute("DELETE FROM write_tokens WHERE client = ? AND seq < ?",
                   (client, done_below))
    current = db.execute("SELECT value FROM kv WHERE namespace = ? AND key = ?",
                         (namespace, key)).fetchone()
    current = None if current is None else current[0]
    if mode == "put_new":
        changed = current is None
    elif mode == "delete":
        changed, value = current is not None, None
    elif mode == "cas":
        changed = current == expected
    else:
        changed = True
    if changed:
        if value is None:
            db.execute("DELETE FROM kv WHERE namespace = ? AND key = ?", (namespace, key))
        else:
            db.execute("INSERT INTO kv VALUES (?, ?, ?, ?) ON CONFLICT (namespace, key) "
                       "DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                       (namespace, key, value, ts))
    db.execute("INSERT INTO write_tokens VALUES (?, ?, ?)", (client, seq, int(changed)))
    return changed


BY_KIND = {
    c.NODE_REGISTER: node_register,
    c.NODE_HEARTBEAT: node_heartbeat,
    c.NODE_DEAD: node_dead,
    c.NODE_REJOIN: node_rejoin,
    c.ACTOR_REGISTER: actor_register,
    c.ACTOR_UPDATE: actor_update,
    c.ACTOR_REMOVE: actor_remove,
    c.FUNCTION_EXPORT: function_export,
    c.JOB_START: job_start,
    c.JOB_FINISH: job_finish,
    c.KV_PUT: kv_put,
    c.KV_DELETE: kv_delete,
    c.KV_WRITE: kv_write,
}
assert set(BY_KIND) == c.KINDS, "every command kind needs a write and a field table"
