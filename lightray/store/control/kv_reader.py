"""KVReader: lightray.kv's local reads, straight from a replica's control.db, read-only.

    client process ── ("locate",) ──▶ its agent: the path of its replica's control.db
                                      (while that replica is a voter), or None
    client process ── KVReader(path).get / .keys ──▶ SQLite (WAL: readers never block
                                      the agent's writes, and see whole transactions)

A local read answers from the same file the agent would read (its replica,
as far as it has applied the log), without a round trip through the agent:
some microseconds instead of a hundred. The reader checks that the file is
still the one it opened (a damaged replica is set aside and rebuilt under
the same name: lightray.store.control.replica); the client asks its agent
again every second, so a replica that stops being a voter stops being read.
"""
from __future__ import annotations

import os
import sqlite3
import threading
from urllib.parse import quote

from .store import _prefix_end


class KVReader:
    __slots__ = ("path", "inode", "_db", "_lock")

    def __init__(self, path: str):
        self.path = path
        self.inode = os.stat(path).st_ino
        self._db = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True,
                                   check_same_thread=False)
        self._lock = threading.Lock()      # one connection, any thread of the client

    def get(self, namespace: str, key: bytes):
        with self._lock:
            row = self._db.execute("SELECT value FROM kv WHERE namespace = ? AND key = ?",
                                   (namespace, key)).fetchone()
        return None if row is None else row[0]

    def keys(self, namespace: str, prefix: bytes) -> list:
        sql, params = "SELECT key FROM kv WHERE namespace = ? AND key >= ?", [namespace, prefix]
        end = _prefix_end(prefix)
        if end is not None:
            sql += " AND key < ?"
            params.append(end)
        with self._lock:
            return [row[0] for row in self._db.execute(sql + " ORDER BY key", params)]

    def current(self) -> bool:
        """Whether path is still the file this reader opened."""
        try:
            return os.stat(self.path).st_ino == self.inode
        except OSError:
            return False

    def close(self) -> None:
        with self._lock:
            self._db.close()
