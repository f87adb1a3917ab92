"""A linearizability checker for histories of lightray.kv operations (Wing & Gong's
search, with Lowe's memo of visited configurations).

    history = [Op(key, "put", (b"1",), True, call=0.0, ret=0.2),
               Op(key, "get", (), b"1", call=0.3, ret=0.4),
               Op(key, "cas", (b"1", b"2"), None, call=0.5, ret=INFINITY)]   # outcome unknown
    check(history)          # None if linearizable, else the key whose history is not

A history is linearizable when its operations can be put in one order that
keeps real time (an operation that returned before another was called comes
first) and in which each takes effect on a register, in that order, with the
result it returned. Linearizability is local (Herlihy & Wing), so each key
is checked on its own. An operation whose outcome is unknown (its call timed
out: ret INFINITY, result None) may take effect at any point after its call,
or never; a read with an unknown outcome changes nothing and is left out.

The search: from a configuration (operations linearized so far, register
value), any operation not linearized yet that was called before the earliest
return among those not linearized may go next, if the register allows its
result. A configuration seen before is not searched again. Success when every
operation with a known outcome is linearized.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import NamedTuple

INFINITY = math.inf


class Op(NamedTuple):
    key: str
    kind: str          # "put" (args: value), "get" (), "cas" (expected, new), "delete" ()
    args: tuple
    result: object     # what it returned; None with ret INFINITY: unknown
    call: float
    ret: float         # INFINITY: it never returned an outcome (timed out)


def step(op: Op, value):
    """(allowed, new value): op applied to a register holding value."""
    known = op.ret != INFINITY
    if op.kind == "put":
        return (not known or op.result is True), op.args[0]
    if op.kind == "get":
        return (not known or op.result == value), value
    if op.kind == "delete":
        return (not known or op.result == (value is not None)), None
    if op.kind == "cas":
        expected, new = op.args
        holds = value == expected
        if known and op.result is not holds:
            return False, value
        return True, (new if holds else value)
    raise ValueError(f"unknown operation kind {op.kind!r}")


def check_key(ops: list, initial=None) -> bool:
    """Whether the operations on one key are linearizable from initial."""
    ops = sorted((op for op in ops if not (op.kind == "get" and op.ret == INFINITY)),
                 key=lambda op: op.call)
    count = len(ops)
    required = 0
    for index, op in enumerate(ops):
        if op.ret != INFINITY:
            required |= 1 << index
    by_return = sorted(range(count), key=lambda i: ops[i].ret)
    stack = [(0, initial)]
    seen = set()
    while stack:
        done, value = stack.pop()
        if done & required == required:
            return True
        if (done, value) in seen:
            continue
        seen.add((done, value))
        earliest_return = next(ops[i].ret for i in by_return if not done >> i & 1)
        for index in range(_lowest_unset(done), count):
            op = ops[index]
            if op.call > earliest_return:
                break       # called after something still unlinearized returned
            if done >> index & 1:
                continue
            allowed, after = step(op, value)
            if allowed:
                stack.append((done | 1 << index, after))
    return False


def check(history) -> str | None:
    """None when the history is linearizable, else the first key (sorted) whose
    operations are not."""
    by_key = defaultdict(list)
    for op in history:
        by_key[op.key].append(op)
    for key in sorted(by_key):
        if not check_key(by_key[key]):
            return key
    return None


def _lowest_unset(mask: int) -> int:
    return (~mask & (mask + 1)).bit_length() - 1
