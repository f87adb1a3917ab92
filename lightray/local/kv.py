"""The key-value store behind lightray.kv in local mode: a dict in memory.

Same methods as the cluster's backend (lightray.kv calls them through
``client.kv_backend()``); values are bytes, keys str, each namespace apart.
There is one copy and one lock, so every read is consistent and the
``consistent`` and ``timeout`` arguments only get checked.
"""
from __future__ import annotations

import threading


def _check(namespace, key, timeout) -> None:
    if not isinstance(namespace, str):
        raise TypeError(f"kv namespace must be a str, got {type(namespace).__name__}")
    if not isinstance(key, str):
        raise TypeError(f"kv key must be a str, got {type(key).__name__}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or timeout < 0):
        raise ValueError(f"timeout must be None or a number >= 0, got {timeout!r}")


def _check_value(value, what: str = "value") -> None:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"kv {what} must be bytes, got {type(value).__name__}")


class LocalKV:
    """Thread-safe in-memory key-value store, by namespace."""

    def __init__(self):
        self._lock = threading.Lock()
        self._data: dict = {}           # (namespace, key) -> bytes

    def put(self, namespace: str, key: str, value: bytes, overwrite: bool = True,
            timeout=None) -> bool:
        """Store value; False (and nothing changed) if key exists and not overwrite."""
        _check(namespace, key, timeout)
        _check_value(value)
        with self._lock:
            if not overwrite and (namespace, key) in self._data:
                return False
            self._data[(namespace, key)] = bytes(value)
            return True

    def get(self, namespace: str, key: str, consistent: bool = True, timeout=None):
        """The value of key, or None."""
        _check(namespace, key, timeout)
        with self._lock:
            return self._data.get((namespace, key))

    def delete(self, namespace: str, key: str, timeout=None) -> bool:
        """Remove key; whether it was there."""
        _check(namespace, key, timeout)
        with self._lock:
            return self._data.pop((namespace, key), None) is not None

    def list(self, namespace: str, prefix: str = "", consistent: bool = True,
             timeout=None) -> list:
        """The keys of namespace starting with prefix, sorted."""
        _check(namespace, prefix, timeout)
        with self._lock:
            return sorted(k for ns, k in self._data if ns == namespace and k.startswith(prefix))

    def compare_and_set(self, namespace: str, key: str, expected, new, timeout=None) -> bool:
        """Set key to new only if its value is expected now (None: absent;
        new None: delete it); whether it was set."""
        _check(namespace, key, timeout)
        if expected is not None:
            _check_value(expected, "expected value")
        if new is not None:
            _check_value(new, "new value")
        with self._lock:
            if self._data.get((namespace, key)) != (None if expected is None else bytes(expected)):
                return False
            if new is None:
                self._data.pop((namespace, key), None)
            else:
                self._data[(namespace, key)] = bytes(new)
            return True
