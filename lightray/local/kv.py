"""The key-value store behind lightray.kv in local mode: a dict in memory.

The interface of lightray.client.kv_backend.KVBackend (lightray.kv calls it
through ``client.kv_backend()`` and checks the arguments first): namespace a
str, keys and values bytes, list() the keys sorted by their bytes. There is
one copy and one lock, so every read is consistent; ``consistent`` and
``timeout`` only get checked.
"""
from __future__ import annotations

import threading


def _check(namespace, key, timeout, what: str = "key") -> None:
    if not isinstance(namespace, str):
        raise TypeError(f"kv namespace must be a str, got {type(namespace).__name__}")
    if not isinstance(key, bytes):
        raise TypeError(f"kv {what} must be bytes (UTF-8), got {type(key).__name__}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or timeout < 0):
        raise ValueError(f"timeout must be None or a number >= 0, got {timeout!r}")


def _check_value(value, what: str = "value") -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"kv {what} must be bytes, got {type(value).__name__}")


class LocalKV:
    """Thread-safe in-memory key-value store, by namespace."""

    def __init__(self):
        self._lock = threading.Lock()
        self._data: dict = {}           # (namespace, key) -> value

    def put(self, namespace: str, key: bytes, value: bytes, overwrite: bool, timeout) -> bool:
        """Store value; False (and nothing changed) if key exists and not overwrite."""
        _check(namespace, key, timeout)
        _check_value(value)
        with self._lock:
            if not overwrite and (namespace, key) in self._data:
                return False
            self._data[(namespace, key)] = value
            return True

    def get(self, namespace: str, key: bytes, consistent: bool, timeout):
        """The value of key, or None."""
        _check(namespace, key, timeout)
        with self._lock:
            return self._data.get((namespace, key))

    def delete(self, namespace: str, key: bytes, timeout) -> bool:
        """Remove key; whether it was there."""
        _check(namespace, key, timeout)
        with self._lock:
            return self._data.pop((namespace, key), None) is not None

    def list(self, namespace: str, prefix: bytes, consistent: bool, timeout) -> list:
        """The keys of namespace starting with prefix, sorted."""
        _check(namespace, prefix, timeout, "prefix")
        with self._lock:
            return sorted(k for ns, k in self._data if ns == namespace and k.startswith(prefix))

    def compare_and_set(self, namespace: str, key: bytes, expected, new, timeout) -> bool:
        """Set key to new only if its value is expected now (None: absent;
        new None: delete it); whether it was set."""
        _check(namespace, key, timeout)
        if expected is not None:
            _check_value(expected, "expected value")
        if new is not None:
            _check_value(new, "new value")
        with self._lock:
            if self._data.get((namespace, key)) != expected:
                return False
            if new is None:
                self._data.pop((namespace, key), None)
            else:
                self._data[(namespace, key)] = new
            return True
