"""The control store's write vocabulary: command kinds, their fields, their results.

A command is a plain tuple ``(kind, field, ...)`` of str, bytes, int, float,
bool and None, so it pickles, travels in a message and can sit in a
replicated log. Every id and timestamp is a field: the writer (the head
agent, later the replication leader) chooses them, never the store, so that
replaying one sequence of commands on any replica builds the same state.

    writer ── validate(command) ──▶ log (later: replicated) ──▶ ControlStore.apply on each replica

`validate` is pure: it looks at nothing but the command, so every replica
accepts or rejects a command alike. A leader should validate before it
appends to the log; a command that passes can then never fail on a replica
for a reason other than the state it meets, and that outcome is a *result*
(below), not an exception, so every replica advances its log index alike.

Kinds and fields (ids: node and worker ids are str, the others bytes, as in
the rest of lightray; ``ts`` is seconds since the epoch, a finite float):

    node_register   node_id, address, resources_json, labels_json, ts
    node_heartbeat  node_id, load_json, ts
    node_dead       node_id, ts
    node_rejoin     node_id, incarnation, address, resources_json, ts
    actor_register  actor_id, name, namespace, node_id, state, owner, detached,
                    class_name, ts
    actor_update    actor_id, state, node_id, worker_id, incarnation, death_cause, ts
    actor_remove    actor_id, ts
    function_export function_id, function_bytes, ts
    job_start       job_id, driver_address, driver_pid, namespace, ts
    job_finish      job_id, ts
    kv_put          namespace, key, value, overwrite, ts
    kv_delete       namespace, key, ts
    kv_write        client, seq, done_below, namespace, key, mode, expected, value, ts
                    (an acknowledged write of lightray.kv; mode: put, put_new (only
                    if absent), delete, or cas (expected None: the key is absent;
                    value None: delete it). (client, seq) is its token: applied once)

Results (what `ControlStore.apply` returns):

    node_register   OK (new node), UPDATED (a live node registered again, e.g. after
                    the head restarted: address, resources, labels replaced), DEAD
                    (the id belongs to a dead node: refused, the agent needs a new id)
    node_heartbeat  OK, UNKNOWN (register first), DEAD (the node was declared dead)
    node_dead       OK, UNKNOWN, DEAD (already dead)
    node_rejoin     REJOINED (a dead node admitted again as a later incarnation: alive,
                    its incarnation kept as the label "incarnation"), UNKNOWN
    actor_register  (OK, actor_id), (TAKEN, id of the live actor holding the name),
                    (EXISTS, actor_id) (the id is registered already: a retry)
    actor_update    OK, UNKNOWN, DEAD (dead is final: refused), STALE (an older
                    incarnation than the stored one: ignored)
    actor_remove    OK, UNKNOWN
    function_export OK, EXISTS (the first bytes are kept; ids are content hashes)
    job_start       OK, EXISTS
    job_finish      OK, UNKNOWN, FINISHED (already)
    kv_put          True if written, False if the key exists and overwrite is False
    kv_delete       True if the key existed
    kv_write        True if it changed the key (put always; put_new if the key was
                    absent; delete if it existed; cas if the key held expected), else
                    False; a token applied before: that first result again

    any kind        ALREADY_APPLIED when given a log index the store applied before
"""
from __future__ import annotations

import json
import math

from ... import states

NODE_REGISTER = "node_register"
NODE_HEARTBEAT = "node_heartbeat"
NODE_DEAD = "node_dead"
NODE_REJOIN = "node_rejoin"
ACTOR_REGISTER = "actor_register"
ACTOR_UPDATE = "actor_update"
ACTOR_REMOVE = "actor_remove"
FUNCTION_EXPORT = "function_export"
JOB_START = "job_start"
JOB_FINISH = "job_finish"
KV_PUT = "kv_put"
KV_DELETE = "kv_delete"
KV_WRITE = "kv_write"
KV_MODES = frozenset(("put", "put_new", "delete", "cas"))

# Results.
OK, UPDATED, UNKNOWN, DEAD, STALE = "ok", "updated", "unknown", "dead", "stale"
TAKEN, EXISTS, FINISHED = "taken", "exists", "finished"
REJOINED = "rejoined"


class _AlreadyApplied:
    """The result of a command whose log index the store has applied before.

    Its original result is not kept: a replica replaying its log needs none,
    and the writer that waited for it got it the first time.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "ALREADY_APPLIED"

    def __reduce__(self) -> str:
        return "ALREADY_APPLIED"     # unpickles as this module's singleton


ALREADY_APPLIED = _AlreadyApplied()

# Actor states, named in lightray.states (the agent's). Every state but DEAD holds the name.
ACTOR_PENDING, ACTOR_ALIVE, ACTOR_RESTARTING, ACTOR_DEAD = (
    states.PENDING, states.ALIVE, states.RESTARTING, states.DEAD)
ACTOR_STATES = frozenset((ACTOR_PENDING, ACTOR_ALIVE, ACTOR_RESTARTING, ACTOR_DEAD))

_INT64_MAX = 2 ** 63 - 1   # SQLite's INTEGER range


# ------------------------------------------------------------------ field checks
#
# Each takes (kind, field name, value) and returns the value to store, or raises
# TypeError (wrong type) / ValueError (right type, wrong value) naming both.

def _type_name(value) -> str:
    return type(value).__name__


def _text(kind: str, field: str, value):
    if type(value) is not str:
        raise TypeError(f"{kind}: {field} must be str, got {_type_name(value)} {value!r:.60}")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{kind}: {field} is not encodable as UTF-8: {value!r:.60}") from None
    return value


def _id_text(kind: str, field: str, value):
    if not _text(kind, field, value):
        raise ValueError(f"{kind}: {field} must not be empty")
    return value


def _optional_text(kind: str, field: str, value):
    return None if value is None else _text(kind, field, value)


def _optional_id_text(kind: str, field: str, value):
    return None if value is None else _id_text(kind, field, value)


def _blob(kind: str, field: str, value):
    if type(value) is not bytes:
        raise TypeError(f"{kind}: {field} must be bytes, got {_type_name(value)} {value!r:.60}")
    return value


def _id_blob(kind: str, field: str, value):
    if not _blob(kind, field, value):
        raise ValueError(f"{kind}: {field} must not be empty")
    return value


def _optional_blob(kind: str, field: str, value):
    return None if value is None else _blob(kind, field, value)


def _flag(kind: str, field: str, value):
    if type(value) is not bool:
        raise TypeError(f"{kind}: {field} must be bool, got {_type_name(value)} {value!r:.60}")
    return value


def _count(kind: str, field: str, value):
    if type(value) is not int:
        raise TypeError(f"{kind}: {field} must be int, got {_type_name(value)} {value!r:.60}")
    if not 0 <= value <= _INT64_MAX:
        raise ValueError(f"{kind}: {field} must be in [0, 2**63), got {value}")
    return value


def _timestamp(kind: str, field: str, value):
    # Floats only in the store: an int and the equal float would dump differently.
    if type(value) is int:
        try:
            value = float(value)
        except OverflowError:
            raise ValueError(f"{kind}: {field} is out of range: {value}") from None
    elif type(value) is not float:
        raise TypeError(f"{kind}: {field} must be a float (seconds), got "
                        f"{_type_name(value)} {value!r:.60}")
    if not math.isfinite(value):
        # SQLite would store NaN as NULL.
        raise ValueError(f"{kind}: {field} must be finite, got {value}")
    return value


def _actor_state(kind: str, field: str, value):
    _text(kind, field, value)
    if value not in ACTOR_STATES:
        raise ValueError(f"{kind}: {field} must be one of {sorted(ACTOR_STATES)}, got {value!r}")
    return value


def _kv_mode(kind: str, field: str, value):
    _text(kind, field, value)
    if value not in KV_MODES:
        raise ValueError(f"{kind}: {field} must be one of {sorted(KV_MODES)}, got {value!r}")
    return value


def _json_object(kind: str, field: str, value) -> dict:
    _text(kind, field, value)
    try:
        decoded = json.loads(value)
    except ValueError as exc:
        raise ValueError(f"{kind}: {field} is not valid JSON ({exc}): {value!r:.60}") from None
    if type(decoded) is not dict:
        raise ValueError(f"{kind}: {field} must be a JSON object, got {value!r:.60}")
    return decoded


def _any_json_object(kind: str, field: str, value):
    _json_object(kind, field, value)
    return value


def _resources_json(kind: str, field: str, value):
    for name, quantity in _json_object(kind, field, value).items():
        if (type(quantity) not in (int, float) or not math.isfinite(quantity)
                or quantity < 0):
            raise ValueError(f"{kind}: {field}: resource {name!r} must be a finite number "
                             f">= 0, got {quantity!r}")
    return value


def _labels_json(kind: str, field: str, value):
    for name, label in _json_object(kind, field, value).items():
        if type(label) is not str:
            raise ValueError(f"{kind}: {field}: label {name!r} must be a string, got {label!r}")
    return value


# ------------------------------------------------------------------ the table

FIELDS: dict = {
    NODE_REGISTER: (("node_id", _id_text), ("address", _id_text),
                    ("resources_json", _resources_json), ("labels_json", _labels_json),
                    ("ts", _timestamp)),
    NODE_HEARTBEAT: (("node_id", _id_text), ("load_json", _any_json_object),
                     ("ts", _timestamp)),
    NODE_DEAD: (("node_id", _id_text), ("ts", _timestamp)),
    NODE_REJOIN: (("node_id", _id_text), ("incarnation", _count), ("address", _id_text),
                  ("resources_json", _resources_json), ("ts", _timestamp)),
    ACTOR_REGISTER: (("actor_id", _id_blob), ("name", _optional_id_text),
                     ("namespace", _optional_text), ("node_id", _optional_id_text),
                     ("state", _actor_state), ("owner", _optional_blob),
                     ("detached", _flag), ("class_name", _text), ("ts", _timestamp)),
    ACTOR_UPDATE: (("actor_id", _id_blob), ("state", _actor_state),
                   ("node_id", _optional_id_text), ("worker_id", _optional_id_text),
                   ("incarnation", _count), ("death_cause", _optional_text),
                   ("ts", _timestamp)),
    ACTOR_REMOVE: (("actor_id", _id_blob), ("ts", _timestamp)),
    FUNCTION_EXPORT: (("function_id", _id_blob), ("function_bytes", _blob),
                      ("ts", _timestamp)),
    JOB_START: (("job_id", _id_blob), ("driver_address", _text), ("driver_pid", _count),
                ("namespace", _text), ("ts", _timestamp)),
    JOB_FINISH: (("job_id", _id_blob), ("ts", _timestamp)),
    KV_PUT: (("namespace", _text), ("key", _blob), ("value", _blob), ("overwrite", _flag),
             ("ts", _timestamp)),
    KV_DELETE: (("namespace", _text), ("key", _blob), ("ts", _timestamp)),
    KV_WRITE: (("client", _id_blob), ("seq", _count), ("done_below", _count),
               ("namespace", _text), ("key", _blob), ("mode", _kv_mode),
               ("expected", _optional_blob), ("value", _optional_blob), ("ts", _timestamp)),
}
"""kind -> ((field name, check), ...): the one definition of every command's shape."""

KINDS = frozenset(FIELDS)


def validate(command) -> tuple:
    """Checks a command's kind, arity and field types; returns it as a tuple.

    A list is taken as the tuple it stands for (some decoders make lists).
    Raises ValueError for an unknown kind or a bad value, TypeError for a
    command that is not a tuple, has the wrong number of fields, or a field
    of the wrong type; every message names the kind and the field. Pure and
    cheap (a heartbeat costs a few microseconds), so a leader can run it
    before appending to the log and every replica reaches the same verdict.
    The returned tuple is what the store applies: timestamps given as int
    become float, nothing else changes.
    """
    if type(command) is list:
        command = tuple(command)
    if type(command) is not tuple or not command:
        raise TypeError(f"a control store command is a non-empty tuple (kind, fields...), "
                        f"got {_type_name(command)} {command!r:.80}")
    kind = command[0]
    fields = FIELDS.get(kind) if type(kind) is str else None
    if fields is None:
        raise ValueError(f"unknown control store command kind {kind!r}; known kinds: "
                         f"{', '.join(sorted(KINDS))}")
    if len(command) != len(fields) + 1:
        names = ", ".join(name for name, _ in fields)
        raise TypeError(f"{kind} takes {len(fields)} fields ({names}), got {len(command) - 1}")
    checked = [kind]
    for (name, check), value in zip(fields, command[1:]):
        checked.append(check(kind, name, value))
    if kind == ACTOR_REGISTER and command[2] is not None and not command[3]:
        raise ValueError(f"{kind}: a named actor needs a namespace (name {command[2]!r})")
    if kind == KV_WRITE:
        _check_kv_write(checked)
    return tuple(checked)


def _check_kv_write(command: list) -> None:
    mode, expected, value = command[6], command[7], command[8]
    if mode in ("put", "put_new") and value is None:
        raise ValueError(f"{KV_WRITE}: mode {mode!r} needs a value")
    if mode in ("put", "put_new", "delete") and expected is not None:
        raise ValueError(f"{KV_WRITE}: only mode 'cas' takes an expected value")
    if mode == "delete" and value is not None:
        raise ValueError(f"{KV_WRITE}: mode 'delete' takes no value")
