"""Checking what arrives on the agent's ipc socket before the state sees it.

    DEALER (driver, worker) ──frame──▶ ROUTER ──▶ Intake.read ──valid ops──▶ AgentState
                                                        └── bad: dropped, RefusalLog (one
                                                            line per kind and minute, counted)

Only this user's processes can reach the socket (it is 0600 in a 0700
directory), so a bad message is a bug or a confused process, not an
attacker's code; still, it must neither stop the agent nor leave its tables
half-updated. So each op is checked for shape before any of it is applied:
its code is known, its length fits, ids are bytes of the right length, lists
are lists, payloads are payloads, and a shared-memory layout names a segment
of this agent's own prefix (the agent unlinks what it names, so a path there
would be a file deleted). A frame that does not unpickle to a list of tuples
is dropped as a whole; a bad op alone is dropped from its frame.

Cheap on purpose: one dict lookup and one function of plain type tests per
op; loops only over lists of ids (each id is stored, so each is checked).
"""
from __future__ import annotations

from .. import task_spec as ts
from ..ids import OBJECT_ID_BYTES, TASK_ID_BYTES
from ..serialization import ERROR, INLINE, SHARED
from ..transport import messages as m
from ..transport.guard import RefusalLog, describe_peer

_MAX_RETURNS = 0xFFFF     # num_returns below the actor-handle suffix (lightray.ids)
_NUMBER = (int, float)
_INFINITY = float("inf")


def _object_ids(value) -> bool:
    return type(value) is list and all(
        type(i) is bytes and len(i) == OBJECT_ID_BYTES for i in value)


def _task_ids(value) -> bool:
    return type(value) is list and all(type(i) is bytes and len(i) == TASK_ID_BYTES
                                       for i in value)


def _nonempty_bytes(value) -> bool:
    return type(value) is bytes and len(value) > 0


def _object_id(value) -> bool:
    return type(value) is bytes and len(value) == OBJECT_ID_BYTES


def _task_id(value) -> bool:
    return type(value) is bytes and len(value) == TASK_ID_BYTES


def _optional_task_id(value) -> bool:
    return value is None or (type(value) is bytes and len(value) == TASK_ID_BYTES)


def _request(value) -> bool:
    """{name: amount}, amounts finite and >= 0 (NaN fails both comparisons)."""
    return type(value) is dict and all(
        type(k) is str and type(v) in _NUMBER and 0 <= v < _INFINITY for k, v in value.items())


def _strategy(value) -> bool:
    return value is None or type(value) is str or (
        type(value) is tuple and len(value) == 3 and type(value[1]) is str)


def task_spec(spec) -> bool:
    """A TaskSpec tuple (lightray.task_spec) with fields of the right types."""
    return (type(spec) is tuple and len(spec) == 13
            and _task_id(spec[ts.TASK_ID])
            and (spec[ts.FUNCTION_ID] is None or type(spec[ts.FUNCTION_ID]) is bytes)
            and type(spec[ts.FUNCTION_NAME]) is str
            and (spec[ts.ARGS] is None or type(spec[ts.ARGS]) is bytes)
            and _object_ids(spec[ts.DEPS]) and _object_ids(spec[ts.CONTAINED])
            and type(spec[ts.NUM_RETURNS]) is int and 0 <= spec[ts.NUM_RETURNS] < _MAX_RETURNS
            and _request(spec[ts.RESOURCES])     # a task's or actor's is a dict, maybe empty
            and type(spec[ts.MAX_RETRIES]) is int
            and (spec[ts.OWNER] is None or type(spec[ts.OWNER]) is str)
            and type(spec[ts.ATTEMPTS_MADE]) is int
            and _strategy(spec[ts.STRATEGY]))


class Checks:
    """The per-op checks of one agent (payload checks need its segment prefix)."""

    def __init__(self, segment_prefix: str):
        self.segment_prefix = segment_prefix
        payload, optional_payload, contained = self.payload, self.optional_payload, _object_ids

        def payloads(value) -> bool:
            return type(value) is list and all(payload(p) for p in value)

        def contained_lists(value) -> bool:
            return type(value) is list and all(_object_ids(c) for c in value)

        # op code -> (shortest, longest, test of the whole op)
        self.table = {
            # Ids the control store keeps (job, function) must not be empty: it
            # would refuse them, with a line per message.
            m.HELLO: (5, 5, lambda op: _nonempty_bytes(op[1]) and op[2] in ("driver", "worker")
                      and type(op[3]) is int and (op[4] is None or type(op[4]) is str)),
            m.INC: (2, 2, lambda op: _object_ids(op[1])),
            m.DEC: (2, 2, lambda op: _object_ids(op[1])),
            m.SUBSCRIBE: (2, 2, lambda op: _object_ids(op[1])),
            m.SUBMIT: (2, 3, lambda op: task_spec(op[1])),
            m.EXPORT: (3, 3, lambda op: _nonempty_bytes(op[1]) and type(op[2]) is bytes),
            m.PUT: (4, 5, lambda op: _object_id(op[1]) and payload(op[2])
                    and contained(op[3])),
            m.CANCEL: (3, 4, lambda op: _object_id(op[1]) and type(op[2]) is bool
                       and (len(op) < 4 or type(op[3]) is bool)),
            m.DONE: (5, 5, lambda op: _task_id(op[1]) and payloads(op[2])
                     and contained_lists(op[3]) and len(op[2]) == len(op[3])),
            m.BLOCKED: (3, 3, lambda op: _optional_task_id(op[1]) and _task_ids(op[2])),
            m.UNBLOCKED: (2, 2, lambda op: _optional_task_id(op[1])),
            m.RETURNED: (2, 2, lambda op: _task_ids(op[1])),
            m.INFO: (3, 3, lambda op: type(op[1]) is int and _info_request(op[2])),
            m.TASK_EVENTS: (2, 2, lambda op: type(op[1]) is list),
            m.SHUTDOWN: (1, 1, None),
            m.GOODBYE: (1, 1, None),
            m.LEASE_REQUEST: (2, 2, lambda op: _request(op[1])),
            m.LEASE_RETURN: (2, 2, lambda op: type(op[1]) is str),
            m.REGISTER: (4, 4, lambda op: _object_id(op[1]) and optional_payload(op[2])
                         and contained(op[3])),
            m.DIRECT_RESULT: (5, 5, lambda op: type(op[1]) is bytes and _object_id(op[2])
                              and payload(op[3]) and contained(op[4])),
            m.DIRECT_CANCEL: (4, 5, lambda op: type(op[1]) is str and _task_id(op[2])
                              and type(op[3]) is bool and (len(op) < 5 or type(op[4]) is bool)),
            m.ACTOR_CREATE: (4, 4, lambda op: type(op[1]) is int and task_spec(op[2])
                             and type(op[3]) is dict),
            m.ACTOR_SUBSCRIBE: (2, 2, lambda op: _task_id(op[1])),
            m.ACTOR_KILL: (3, 4, lambda op: _task_id(op[1]) and type(op[2]) is bool
                           and (len(op) == 3 or type(op[3]) is str)),
            m.ACTOR_READY: (3, 4, lambda op: _task_id(op[1]) and optional_payload(op[2])),
            m.RESERVE: (4, 4, lambda op: type(op[1]) is int and type(op[2]) is int
                        and _object_id(op[3])),
            m.RESTORE: (3, 3, lambda op: type(op[1]) is int and _object_id(op[2])),
            m.ADOPT_FROM: (4, 5, lambda op: type(op[1]) is int and type(op[2]) is str
                           and _object_ids(op[3])),
            m.HAND_OVER: (3, 3, lambda op: type(op[1]) is str and _object_ids(op[2])),
            # A malformed request is answered with the problem (control_kv), not dropped.
            m.KV: (3, 3, lambda op: type(op[1]) is int),
        }

    def payload(self, value) -> bool:
        """(INLINE | ERROR, bytes), or (SHARED, layout) of one of this agent's segments."""
        if type(value) is not tuple or len(value) != 2:
            return False
        kind, body = value
        if kind == INLINE or kind == ERROR:
            return type(body) is bytes
        return kind == SHARED and self.layout(body)

    def optional_payload(self, value) -> bool:
        return value is None or self.payload(value)

    def layout(self, value) -> bool:
        """(name, size, inband length, ((offset, length), ...)) naming our own segment."""
        if not isinstance(value, tuple) or len(value) != 4:
            return False
        name, size, inband, offsets = value
        prefix = self.segment_prefix
        return (type(name) is str and name.startswith(prefix)
                and "/" not in name[len(prefix):] and type(size) is int and size >= 0
                and type(inband) is int and 0 <= inband <= size
                and isinstance(offsets, tuple))


def _info_request(what) -> bool:
    return type(what) is str or (type(what) is tuple and len(what) == 3
                                 and type(what[1]) is str)


class Intake:
    """Decodes and checks frames from the ipc socket; reports what it drops."""

    def __init__(self, segment_prefix: str, log: RefusalLog | None = None):
        self.table = Checks(segment_prefix).table
        self.log = log or RefusalLog("lightray-agent")

    def read(self, identity: bytes, frame) -> list | None:
        """The frame's valid ops (a new list only if some were dropped), or
        None when the frame is not a message of this protocol (messages.decode)."""
        try:
            ops = m.decode(frame)
        except m.BadMessage as error:
            problem = str(error)
            # One key per kind of problem, not per value: a frame's version
            # byte takes 255 values other than ours.
            kind = "another version" if error.version is not None else problem.split(" (")[0]
            self.log.note(("bad frame", kind),
                          f"dropped a frame from {describe_peer(identity)}: {problem}")
            return None
        valid = self.valid
        for position, op in enumerate(ops):
            if not valid(op):
                return self._filtered(identity, ops, position)
        return ops

    def valid(self, op) -> bool:
        if type(op) is not tuple or not op or type(op[0]) is not int:
            return False
        entry = self.table.get(op[0])
        if entry is None or not entry[0] <= len(op) <= entry[1]:
            return False
        try:
            return entry[2] is None or entry[2](op)
        except Exception:   # a check tripped on a value it did not expect: not valid
            return False

    def _filtered(self, identity: bytes, ops: list, first_bad: int) -> list:
        kept = ops[:first_bad]
        for op in ops[first_bad:]:
            if self.valid(op):
                kept.append(op)
            else:
                self._report(identity, op)
        return kept

    def _report(self, identity: bytes, op) -> None:
        code = op[0] if type(op) is tuple and op else None
        if type(code) is not int or type(op) is not tuple:
            kind = f"a {type(op).__name__} that is not an op"
            code = ("not an op", type(op).__name__)
        elif code not in self.table:
            kind = f"unknown op code {code}"
            code = "unknown op"
        else:
            kind = f"malformed op {code} (length {len(op)})"
        self.log.note(("bad op", code), f"dropped {kind} from {describe_peer(identity)}")
