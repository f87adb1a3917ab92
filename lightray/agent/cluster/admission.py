"""What the agent takes from the mesh: the shape of every peer op, and who may send it. No I/O.

    Mesh.receive (identity is a node id, 1 frame of ops + at most 1 data frame)
      ──messages.decode (header, protocol version, unpickles to a list)
      ──check_ops: each op a tuple of a known kind, its arity, types and ids
      ──ClusterMembership.handle_peer: a stranger may only JOIN (admitted by
        the head when its protocol version is ours); everything else from a
        node that has not joined is held until the authority announces it
        (lightray.agent.cluster.early_ops), else dropped, as is a bad op:
        nothing it says reaches a handler or the control store before that

``check_ops`` raises ``messages.BadMessage`` naming the first problem. The
checks are about shape, not meaning: a handler still decides what an op
asks for (a FREE of an object it never pinned is a no-op), but it may index
and iterate what it gets without a guard.
"""
from __future__ import annotations

import re

from ...store.control.commands import FIELDS as CONTROL_FIELDS
from ...store.control.commands import validate as validate_command
from ...store.control.kv_requests import problem as kv_problem
from ...store.control.raft.codec import MAX_MESSAGE_BYTES as MAX_RAFT_BYTES
from ...transport import messages as m
from ...transport.messages import BadMessage
from ...observe.queries import check_query, check_reply

MAX_IDS = 1 << 16            # ids in one op at most
MAX_ID_BYTES = 64            # an object, task or actor id is 14-18 bytes
MAX_NAME = 256               # a node id, address, segment name, reason
MAX_SIZE = 1 << 48           # offsets and lengths of object bytes
SPEC_FIELDS = 13             # lightray.task_spec.TaskSpec

# A node's mesh address: HOST:PORT, HOST a DNS name (RFC 1123 labels), a
# dotted IPv4 address or an IPv6 address in brackets. Narrower than what
# ZeroMQ takes on purpose: an address it refuses (a space, a leading "_")
# would raise in the agent's loop when it connects to the node.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]{{2,45}}\]):([0-9]{{1,5}})")

# CONTROL may carry any control-store command; the node_* ones only from the
# head (the membership authority), which ClusterMembership checks: admission
# cannot, as it does not know who the head is.


class _Bad(Exception):
    pass


def _fail(what: str):
    raise _Bad(what)


def _id(value, what: str) -> None:
    if type(value) is not bytes or not 0 < len(value) <= MAX_ID_BYTES:
        _fail(f"{what} is not an id")


def _ids(value, what: str) -> None:
    if type(value) not in (list, tuple) or len(value) > MAX_IDS:
        _fail(f"{what} is not a list of ids")
    for item in value:
        _id(item, what)


def _text(value, what: str, optional: bool = False) -> None:
    if value is None and optional:
        return
    if type(value) is not str or len(value) > MAX_NAME:
        _fail(f"{what} is not a short text")


def _count(value, what: str, top: int = MAX_SIZE) -> None:
    if type(value) is not int or not 0 <= value <= top:
        _fail(f"{what} is not a count")


def _amounts(value, what: str) -> None:
    """A resource dict: name -> number."""
    if type(value) is not dict or len(value) > 256:
        _fail(f"{what} is not a dict of resource amounts")
    for name, amount in value.items():
        if type(name) is not str or type(amount) not in (int, float) or amount != amount:
            _fail(f"{what} is not a dict of resource amounts")


def _flat_dict(value, what: str) -> None:
    """A load dict: short text keys, plain values (it goes into the control store)."""
    if type(value) is not dict or len(value) > 64:
        _fail(f"{what} is not a load dict")
    for key, item in value.items():
        if type(key) is not str:
            _fail(f"{what} has a key that is not text")
        if type(item) is dict:
            _amounts(item, f"{what}[{key!r}]")
        elif item is not None and type(item) not in (bool, int, float, str):
            _fail(f"{what}[{key!r}] is a {type(item).__name__}")


def _payload(value, what: str) -> None:
    """(INLINE or ERROR, bytes), or a descriptor ("at"/"pushed", holder, layout)."""
    if type(value) is not tuple or not value:
        _fail(f"{what} is not a payload or descriptor")
    kind = value[0]
    if kind in ("at", "pushed"):
        if len(value) != 3:
            _fail(f"{what} is not a descriptor (kind, holder, layout)")
        _text(value[1], f"{what}'s holder")
        _layout(value[2], f"{what}'s layout")
    elif kind in ("wait", "unknown") and len(value) == 1:
        return
    elif kind in (0, 2):        # INLINE, ERROR (lightray.serialization)
        if len(value) != 2 or type(value[1]) not in (bytes, bytearray):
            _fail(f"{what} is not an inline payload")
    elif kind == 1:             # SHARED: only as a layout inside "at"
        _fail(f"{what} names a segment of another node directly")
    else:
        _fail(f"{what} is of an unknown kind {kind!r:.40}")


def _layout(value, what: str) -> None:
    """(segment name, size, inband length, offsets)."""
    if type(value) is not tuple or len(value) != 4:
        _fail(f"{what} is not a segment layout")
    _text(value[0], what)
    _count(value[1], f"{what}'s size")
    _count(value[2], f"{what}'s in-band length")
    if type(value[3]) not in (tuple, list) or len(value[3]) > MAX_IDS:
        _fail(f"{what}'s offsets are not a list")
    for item in value[3]:
        if type(item) not in (tuple, list) or not all(type(x) is int for x in item):
            _fail(f"{what}'s offsets are not (offset, length) pairs")


def _descriptors(value, what: str, count: int | None = None, holes: bool = True) -> None:
    """A list of payloads or descriptors; holes: None items allowed (an
    argument the sender did not describe; a result always is described)."""
    if type(value) is not list or len(value) > MAX_IDS:
        _fail(f"{what} is not a list")
    if count is not None and len(value) != count:
        _fail(f"{what} has {len(value)} items for {count} objects")
    for item in value:
        if item is not None:
            _payload(item, what)
        elif not holes:
            _fail(f"{what} has an item that is None")


def _spec(spec, what: str = "the task spec") -> None:
    if type(spec) is not tuple or len(spec) != SPEC_FIELDS:
        _fail(f"{what} is not a tuple of {SPEC_FIELDS} fields")
    _id(spec[0], f"{what}'s task id")
    if spec[1] is not None:
        _id(spec[1], f"{what}'s function id")
    _text(spec[2], f"{what}'s function name")
    if spec[3] is not None and type(spec[3]) is not bytes:
        _fail(f"{what}'s arguments are not bytes")
    _ids(spec[4], f"{what}'s dependencies")
    _ids(spec[5], f"{what}'s contained refs")
    if type(spec[4]) is not type(spec[5]):
        _fail(f"{what}'s dependencies and contained refs are of different kinds")
    _count(spec[6], f"{what}'s number of returns", 10_000)
    if spec[7] is not None:
        _amounts(spec[7], f"{what}'s resources")
    if type(spec[8]) is not int:
        _fail(f"{what}'s max_retries is not an int")
    _text(spec[10], f"{what}'s owner", optional=True)
    _count(spec[11], f"{what}'s attempts made")


def _node(node, what: str = "the node") -> None:
    if type(node) is not dict:
        _fail(f"{what} is not a dict")
    _text(node.get("node_id"), f"{what}'s node_id")
    address = node.get("address")
    _text(address, f"{what}'s address")
    shape = _ADDRESS.fullmatch(address)
    if shape is None or not 0 < int(shape.group(1)) < 65536:
        _fail(f"{what}'s address is not HOST:PORT ({address!r:.60})")
    _amounts(node.get("resources"), f"{what}'s resources")
    if node.get("incarnation") is not None:
        _count(node["incarnation"], f"{what}'s incarnation", 1 << 31)
    if node.get("load") is not None:
        _flat_dict(node["load"], f"{what}'s load")


# ------------------------------------------------------------- the ops

def _heartbeat(op):
    _arity(op, 2)
    _flat_dict(op[1], "the load")
    _amounts(op[1].get("available"), "the available resources")
    if type(op[1].get("hot")) is not bool:
        _fail("the load says not whether the node is hot")


def _forward(op):
    _arity(op, 4)
    _spec(op[1])
    if op[2] is not None and type(op[2]) is not bytes:
        _fail("the function is not bytes")
    _descriptors(op[3], "the argument descriptors", len(op[1][4]) + len(op[1][5]))


def _result(op):
    _arity(op, 3, 4)
    _id(op[1], "the task id")
    _descriptors(op[2], "the result descriptors", holes=False)
    if len(op) > 3 and op[3] is not None:
        inner = op[3]
        if type(inner) is not list or len(inner) != len(op[2]):
            _fail("the refs inside the results are not one list per result")
        for refs in inner:
            if type(refs) is not list or len(refs) > MAX_IDS:
                _fail("the refs inside a result are not a list")
            for pair in refs:
                if type(pair) is not tuple or len(pair) != 2:
                    _fail("a ref inside a result is not (id, descriptor)")
                _id(pair[0], "a ref inside a result")
                if pair[1] is not None:
                    _payload(pair[1], "a ref inside a result")


def _free(op):
    _arity(op, 2)
    _ids(op[1], "the freed objects")


def _pull(op):
    _arity(op, 5)
    _id(op[1], "the object id")
    _text(op[2], "the segment name")
    _count(op[3], "the offset")
    _count(op[4], "the length")


def _pull_data(op):
    _arity(op, 4, 5)
    _id(op[1], "the object id")
    _count(op[2], "the offset")
    _count(op[3], "the length")
    if len(op) > 4 and type(op[4]) is not bool:
        _fail("pushed is not a bool")


def _pull_retry(op):
    _arity(op, 4)
    _id(op[1], "the object id")
    _count(op[2], "the offset")
    _count(op[3], "the length")


def _pull_failed(op):
    _arity(op, 3)
    _id(op[1], "the object id")
    if type(op[2]) is not str:
        _fail("the reason is not text")


def _forward_cancel(op):
    _arity(op, 3, 4)
    _id(op[1], "the object id")
    if type(op[2]) is not bool:
        _fail("force is not a bool")
    if len(op) > 3 and type(op[3]) is not bool:
        _fail("recursive is not a bool")


def _join(op):
    _arity(op, 2)
    _node(op[1])


def _members(op):
    _arity(op, 2)
    if type(op[1]) is not list or len(op[1]) > 4096:
        _fail("the members are not a list")
    for node in op[1]:
        _node(node, "a member")


def _node_joined(op):
    _arity(op, 2)
    _node(op[1])


def _node_dead(op):
    _arity(op, 4)
    _text(op[1], "the node id")
    if op[2] is not None and type(op[2]) is not str:
        _fail("the reason is not text")
    _count(op[3], "the incarnation", 1 << 31)


def _leaving(op):
    _arity(op, 1)


# ACTOR_RELAY messages: kind -> (smallest, largest arity)
_RELAYS = {"create": (5, 5), "state": (6, 6), "subscribe": (1, 1), "unknown": (1, 1),
           "kill": (2, 2), "lookup": (4, 4), "found": (3, 3)}


def _actor_relay(op):
    _arity(op, 3)
    if type(op[1]) is not bytes or len(op[1]) > MAX_ID_BYTES:
        _fail("the actor id is not an id")
    message = op[2]
    if type(message) is not tuple or not message or message[0] not in _RELAYS:
        _fail("the relayed message is not of a known kind")
    low, high = _RELAYS[message[0]]
    if not low <= len(message) <= high:
        _fail(f"a {message[0]!r} relay has {len(message)} items")
    kind = message[0]
    if kind == "create":
        _spec(message[1], "the actor's constructor spec")
        if type(message[2]) is not bytes:
            _fail("the actor's class is not bytes")
        spec = message[1]
        _descriptors(message[3], "the constructor's argument descriptors",
                     len(spec[4]) + len(spec[5]))
        if type(message[4]) is not dict:
            _fail("the actor's description is not a dict")
    elif kind == "state":
        _count(message[1], "the incarnation")
        _text(message[2], "the actor state")
        if message[5] is not None:
            _text(message[5], "the class name")
    elif kind == "kill":
        if type(message[1]) is not bool:
            _fail("no_restart is not a bool")
    elif kind == "lookup":
        if type(message[1]) is not int:
            _fail("the lookup's request id is not an int")
        _text(message[2], "the namespace", optional=True)
        _text(message[3], "the name")
    elif kind == "found":
        if type(message[1]) is not int:
            _fail("the answer's request id is not an int")


def _describe(op):
    _arity(op, 3)
    if type(op[1]) is not int:
        _fail("the request id is not an int")
    _ids(op[2], "the objects")


def _described(op):
    _arity(op, 3)
    if type(op[1]) is not int:
        _fail("the request id is not an int")
    if type(op[2]) is not list or len(op[2]) > MAX_IDS:
        _fail("the answers are not a list")
    for pair in op[2]:
        if type(pair) is not tuple or len(pair) != 2:
            _fail("an answer is not (id, descriptor)")
        _id(pair[0], "an answer's object id")
        _payload(pair[1], "an answer")


def _control(op):
    _arity(op, 2)
    if type(op[1]) is not list or len(op[1]) > MAX_IDS:
        _fail("the commands are not a list")
    for command in op[1]:
        if type(command) not in (tuple, list) or not command:
            _fail("a command is not a non-empty tuple")
        if command[0] not in CONTROL_FIELDS:
            _fail(f"a peer may not send the command {command[0]!r:.40}")
        stamped = tuple(command) if command[-1] is not None else tuple(command[:-1]) + (0.0,)
        try:
            validate_command(stamped)
        except (TypeError, ValueError) as error:
            _fail(f"a command is malformed: {error}")


def _raft(op):
    # Only the shape: the bytes are decoded (and garbage dropped) by the replica.
    _arity(op, 2)
    if type(op[1]) is not bytes:
        _fail("the Raft message is not bytes")
    if len(op[1]) > MAX_RAFT_BYTES:
        _fail(f"the Raft message has {len(op[1])} bytes, over {MAX_RAFT_BYTES}")


def _kv_request(op):
    _arity(op, 3)
    if type(op[1]) is not int:
        _fail("the request id is not an int")
    why = kv_problem(op[2])
    if why is not None:
        _fail(why)


def _kv_reply(op):
    _arity(op, 3)
    if type(op[1]) is not int:
        _fail("the request id is not an int")
    answer = op[2]
    if type(answer) is not tuple or len(answer) != 2 or answer[0] not in ("ok", "retry", "error"):
        _fail("the answer is not (status, value)")


def _state_query(op):
    why = check_query(op)
    if why is not None:
        _fail(why)


def _state_reply(op):
    why = check_reply(op)
    if why is not None:
        _fail(why)


def _join_refused(op):
    _arity(op, 2)
    if type(op[1]) is not str:
        _fail("the reason is not text")


def _arity(op, low: int, high: int | None = None) -> None:
    if not low <= len(op) <= (high or low):
        _fail(f"it has {len(op) - 1} fields")


CHECKS = {m.HEARTBEAT: _heartbeat, m.FORWARD: _forward, m.RESULT: _result, m.FREE: _free,
          m.PULL: _pull, m.PULL_DATA: _pull_data, m.PULL_RETRY: _pull_retry,
          m.PULL_FAILED: _pull_failed, m.FORWARD_CANCEL: _forward_cancel, m.JOIN: _join,
          m.MEMBERS: _members, m.NODE_JOINED: _node_joined, m.NODE_DEAD: _node_dead,
          m.LEAVING: _leaving, m.ACTOR_RELAY: _actor_relay, m.DESCRIBE: _describe,
          m.DESCRIBED: _described, m.CONTROL: _control, m.JOIN_REFUSED: _join_refused,
          m.RAFT: _raft, m.KV_REQUEST: _kv_request, m.KV_REPLY: _kv_reply,
          m.JOIN_VIA: _join, m.STATE_QUERY: _state_query, m.STATE_REPLY: _state_reply}
"""op code -> its shape check: the only ops a peer may send."""

_NAMES = {code: name for name, code in vars(m).items()
          if name.isupper() and type(code) is int and code in CHECKS}


def check_ops(ops: list, data_length: int | None) -> None:
    """BadMessage unless every op is a peer op of the right shape; data_length:
    the size of the raw frame that came along (only behind one PULL_DATA, first,
    of exactly its length)."""
    if not ops:
        raise BadMessage("it holds no op")
    for index, op in enumerate(ops):
        if type(op) is not tuple or not op:
            raise BadMessage(f"op {index} is not a tuple")
        check = CHECKS.get(op[0]) if type(op[0]) is int else None
        if check is None:
            raise BadMessage(f"op {index} is of no kind a peer sends ({op[0]!r:.40})")
        try:
            check(op)
        except _Bad as problem:
            raise BadMessage(f"{_NAMES[op[0]]} (op {index}): {problem}") from None
        except (TypeError, ValueError, AttributeError, KeyError) as error:
            raise BadMessage(f"{_NAMES[op[0]]} (op {index}) is malformed "
                             f"({type(error).__name__})") from None
    if data_length is not None:
        first = ops[0]
        if first[0] != m.PULL_DATA or first[3] != data_length:
            raise BadMessage("a data frame that does not follow a PULL_DATA of its length")
    elif any(op[0] == m.PULL_DATA for op in ops):
        raise BadMessage("a PULL_DATA without its data frame")


def from_stranger_allowed(ops: list) -> bool:
    """What a node that has not joined may say: JOIN alone (or LEAVING: it gave up)."""
    return all(op[0] == m.JOIN or op[0] == m.LEAVING for op in ops)
