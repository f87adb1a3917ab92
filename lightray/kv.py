"""lightray.kv: a small key-value store kept by the cluster's replicated control store.

    import lightray
    lightray.init()
    lightray.kv.put("config/batch", b"64")          # True: acknowledged once committed
    lightray.kv.get("config/batch")                 # b"64" (from this node's replica)
    lightray.kv.get("config/batch", consistent=True)   # linearizable: through the leader
    lightray.kv.compare_and_set("config/batch", b"64", b"128")   # True if it held b"64"
    lightray.kv.list("config/")                     # ["config/batch"]
    lightray.kv.delete("config/batch")              # True if it existed

Keys are str (at most 64 KiB in UTF-8), values bytes. Every call works in a
driver and inside tasks and actors, alike; namespace None is the driver's
namespace (init(namespace=...)). A write returns only once a majority of the
control replicas has it on disk (it survives the loss of any minority); a
write that cannot be acknowledged within timeout (None: LIGHTRAY_KV_TIMEOUT,
30 s) raises KVTimeoutError (a GetTimeoutError), and may or may not have been
applied. A retry inside the runtime (after a leader change) is applied once.

Reads are local by default: fast, from the agent's own replica, possibly a
little behind the leader. consistent=True reads what every write acknowledged
before the call wrote (ReadIndex through the leader).
"""
from __future__ import annotations

import builtins

from . import runtime


def put(key: str, value: bytes, *, namespace: str | None = None, overwrite: bool = True,
        timeout: float | None = None) -> bool:
    """Stores value under key; False (and nothing changes) when overwrite is False
    and the key exists."""
    _key(key, "key")
    _value(value, "value")
    if type(overwrite) is not bool:
        raise TypeError(f"lightray.kv.put: overwrite must be a bool, got "
                        f"{type(overwrite).__name__}")
    namespace = _namespace(namespace)
    return _backend().put(namespace, key, bytes(value), overwrite, _timeout(timeout))


def get(key: str, *, namespace: str | None = None, consistent: bool = False,
        timeout: float | None = None) -> bytes | None:
    """The value under key, or None."""
    _key(key, "key")
    _flag(consistent, "consistent")
    namespace = _namespace(namespace)
    return _backend().get(namespace, key, consistent, _timeout(timeout))


def delete(key: str, *, namespace: str | None = None, timeout: float | None = None) -> bool:
    """Removes key; True if it existed."""
    _key(key, "key")
    namespace = _namespace(namespace)
    return _backend().delete(namespace, key, _timeout(timeout))


def list(prefix: str = "", *, namespace: str | None = None, consistent: bool = False,
         timeout: float | None = None) -> builtins.list:
    """The keys of namespace that start with prefix, sorted (by their UTF-8 bytes)."""
    _key(prefix, "prefix")
    _flag(consistent, "consistent")
    namespace = _namespace(namespace)
    return _backend().list(namespace, prefix, consistent, _timeout(timeout))


def compare_and_set(key: str, expected: bytes | None, new: bytes | None, *,
                    namespace: str | None = None, timeout: float | None = None) -> bool:
    """Atomically: if key holds expected (None: the key is absent), set it to new
    (None: delete it) and return True; else change nothing and return False."""
    _key(key, "key")
    if expected is not None:
        _value(expected, "expected")
        expected = bytes(expected)
    if new is not None:
        _value(new, "new")
        new = bytes(new)
    namespace = _namespace(namespace)
    return _backend().compare_and_set(namespace, key, expected, new, _timeout(timeout))


# ------------------------------------------------------------------ checks

_MAX_KEY_BYTES = 1 << 16
_MAX_VALUE_BYTES = 8 << 20


def _backend():
    return runtime.client_for_submission().kv_backend()


def _key(key, what: str) -> None:
    if type(key) is not str:
        raise TypeError(f"lightray.kv: {what} must be a str, got {type(key).__name__} "
                        f"{key!r:.60}")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"lightray.kv: {what} is not encodable as UTF-8: {key!r:.60}") \
            from None
    if len(encoded) > _MAX_KEY_BYTES:
        raise ValueError(f"lightray.kv: {what} has {len(encoded)} bytes in UTF-8, over "
                         f"the {_MAX_KEY_BYTES} allowed")


def _value(value, what: str) -> None:
    if type(value) is not bytes:
        raise TypeError(f"lightray.kv: {what} must be bytes, got {type(value).__name__} "
                        f"{value!r:.60}")
    if len(value) > _MAX_VALUE_BYTES:
        raise ValueError(f"lightray.kv: {what} has {len(value)} bytes, over the "
                         f"{_MAX_VALUE_BYTES} allowed")


def _flag(value, what: str) -> None:
    if type(value) is not bool:
        raise TypeError(f"lightray.kv: {what} must be a bool, got {type(value).__name__}")


def _namespace(namespace) -> str:
    if namespace is not None:
        if type(namespace) is not str or not namespace:
            raise TypeError(f"lightray.kv: namespace must be a non-empty str or None, got "
                            f"{namespace!r:.60}")
        try:
            namespace.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"lightray.kv: namespace is not encodable as UTF-8: "
                             f"{namespace!r:.60}") from None
        if len(namespace) > 1024:
            raise ValueError("lightray.kv: namespace is longer than 1024 characters")
    return runtime.namespace_for(namespace)


def _timeout(timeout):
    if timeout is None:
        return None
    if type(timeout) not in (int, float) or not timeout > 0:
        raise ValueError(f"lightray.kv: timeout must be a number of seconds > 0 or None, "
                         f"got {timeout!r:.60}")
    return float(timeout)
