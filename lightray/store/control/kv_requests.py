"""lightray.kv's requests as they travel to the control store: their shapes, the
command a write becomes, and how a read is served. Pure: no I/O.

    client ── (KV, request id, request) ──▶ its agent ── KV_REQUEST ──▶ the leader
    request:  ("write", mode, namespace, key, expected, value, client, seq, done_below)
              ("get", namespace, key, consistent)
              ("list", namespace, prefix, consistent)
              ("locate",)   this agent's own replica file, for local reads in the
                            client's process (lightray.store.control.kv_reader); never
                            sent on
    answer:   ("ok", result)   bool for a write, bytes or None for get, [bytes] for list
              ("retry", why)   not served now (no leader, a leader change): send it again,
                               the same token (client, seq) with it (applied once)
              ("error", why)   a request no agent will ever serve (it names the problem)

`problem(request)` is the one shape check, used on the ipc socket (a local
process) and on the mesh (a peer forwarding for its clients): whatever
arrives, a handler may index it without a guard. A write becomes a kv_write
command (lightray.store.control.commands), so what it does is decided where
every replica decides alike: when the command is applied.
"""
from __future__ import annotations

from .commands import KV_MODES, KV_WRITE

WRITE, GET, LIST, LOCATE = "write", "get", "list", "locate"
OK, RETRY, ERROR = "ok", "retry", "error"
MAX_KEY_BYTES = 1 << 16          # a key (or prefix) in bytes, UTF-8 encoded
MAX_VALUE_BYTES = 8 << 20        # a value: the mesh's messages stay well under its limits
MAX_ID_BYTES = 64

# Actor names held across the cluster (lightray.client.actor_names): key
# namespace + "\0" + name, value the holder's actor id. Reserved: no user kv here.
ACTOR_NAMES = "lightray/actor-names"


def actor_name_key(namespace: str, name: str) -> bytes:
    return f"{namespace}\0{name}".encode("utf-8")


def name_release(actor_id: bytes, namespace: str, name: str) -> tuple:
    """The kv_write an agent sends (fire and forget) when a named actor dies: the
    name is freed if this actor still holds it. Its token is the actor's own (one
    release per actor); the timestamp None is chosen by the leader."""
    return (KV_WRITE, b"name-release:" + actor_id, 0, 0, ACTOR_NAMES,
            actor_name_key(namespace, name), "cas", actor_id, None, None)


def problem(request) -> str | None:
    """None when request is a kv request of the right shape, else what is wrong."""
    if type(request) is not tuple or not request or type(request[0]) is not str:
        return "a kv request is a tuple (kind, ...)"
    kind = request[0]
    if kind == LOCATE:
        return None if len(request) == 1 else "a kv locate has no fields"
    if kind == WRITE:
        if len(request) != 9:
            return "a kv write has 8 fields"
        _, mode, namespace, key, expected, value, client, seq, done_below = request
        if mode not in KV_MODES:
            return f"unknown kv write mode {mode!r:.40}"
        if type(client) is not bytes or not 0 < len(client) <= MAX_ID_BYTES:
            return "a kv write's client is not an id"
        if type(seq) is not int or type(done_below) is not int or not 0 <= done_below <= seq:
            return "a kv write's sequence numbers are not 0 <= done_below <= seq"
        if seq >= 1 << 63:
            return "a kv write's sequence number is out of range"
        for what, blob in (("expected", expected), ("value", value)):
            if blob is not None and (type(blob) is not bytes or len(blob) > MAX_VALUE_BYTES):
                return f"a kv write's {what} is not bytes of at most {MAX_VALUE_BYTES}"
    elif kind in (GET, LIST):
        if len(request) != 4:
            return f"a kv {kind} has 3 fields"
        if type(request[3]) is not bool:
            return f"a kv {kind}'s consistent flag is not a bool"
        namespace, key = request[1], request[2]
    else:
        return f"unknown kv request kind {kind!r:.40}"
    if type(namespace) is not str or len(namespace) > 1024:
        return "a kv namespace is a str of at most 1024 characters"
    if type(key) is not bytes or len(key) > MAX_KEY_BYTES:
        return f"a kv key is bytes of at most {MAX_KEY_BYTES}"
    return None


def command_for(request: tuple, ts: float) -> tuple:
    """The kv_write command a write request becomes (ts chosen by the leader)."""
    _, mode, namespace, key, expected, value, client, seq, done_below = request
    return (KV_WRITE, client, seq, done_below, namespace, key, mode, expected, value, ts)


def serve_read(store, request: tuple):
    """The answer to a get or list, from store (a ControlStore) as it is now."""
    kind, namespace, key, _ = request
    if kind == GET:
        return (OK, store.kv_get(namespace, key))
    return (OK, store.kv_keys(namespace, key))


def is_write(request: tuple) -> bool:
    return request[0] == WRITE


def is_consistent(request: tuple) -> bool:
    return request[0] != WRITE and request[3]
