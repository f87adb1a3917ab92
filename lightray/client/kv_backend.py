"""KVBackend: lightray.kv's requests from this process to its agent, retried until answered.

    lightray.kv.put(...) ── KVBackend.put ── (KV, request id, request) ──▶ the agent
        ◀── INFO_REPLY ("ok", result)                  done
        ◀── INFO_REPLY ("retry", why), or no answer     sent again (same token) until
            in ATTEMPT s                                the timeout: KVTimeoutError
        ◀── INFO_REPLY ("error", why)                  KVError

A write carries a token, (this process's writer id, a sequence number), and
every copy of it the same one: the control store applies a token once, so a
write resent after a leader change never happens twice. With it goes
done_below, the lowest sequence number this process still waits for: the
store forgets the tokens below it and never applies them any more
(lightray.store.control.kv_requests, writes.kv_write).

A local read (consistent=False) is served in this process when the agent's
own replica is a voter: from its control.db, read-only
(lightray.store.control.kv_reader), located again every LOCATE_EVERY
seconds; otherwise, or if that read fails, the agent serves it.
"""
from __future__ import annotations

import concurrent.futures
import itertools
import os
import sqlite3
import threading
import time

from .. import config
from ..exceptions import KVError, KVTimeoutError, RuntimeNotRunningError
from ..store.control.kv_reader import KVReader
from ..transport import messages as m

ATTEMPT = 3.0          # seconds one attempt waits for the agent's answer (it answers
                       # "retry" itself after 2 s: lightray.agent.control_kv)
_BACKOFF = (0.01, 0.02, 0.05, 0.1, 0.2)   # seconds between attempts answered "retry"
LOCATE_EVERY = 1.0     # seconds between asking the agent where its replica's file is


class KVBackend:
    """The interface lightray.kv calls (the local mode implements the same)."""

    def __init__(self, client):
        self.client = client                             # CoreClient
        self.writer = os.urandom(8) + client.client_id   # unique across the cluster
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._outstanding: set = set()                   # seqs of writes under way
        self._reader = None                              # KVReader of the agent's replica
        self._located_at = -LOCATE_EVERY                 # monotonic time of the last locate
        self._locate_lock = threading.Lock()

    # Keys are str here (as lightray.kv and the local mode's backend take them),
    # their UTF-8 bytes in the store.

    def put(self, namespace: str, key: str, value: bytes, overwrite: bool, timeout):
        mode = "put" if overwrite else "put_new"
        return self._write(mode, namespace, key.encode(), None, value, timeout, "put")

    def delete(self, namespace: str, key: str, timeout):
        return self._write("delete", namespace, key.encode(), None, None, timeout, "delete")

    def compare_and_set(self, namespace: str, key: str, expected, new, timeout):
        return self._write("cas", namespace, key.encode(), expected, new, timeout,
                           "compare_and_set")

    def get(self, namespace: str, key: str, consistent: bool, timeout):
        key = key.encode()
        if not consistent:
            reader = self._local_reader(timeout)
            if reader is not None:
                try:
                    return reader.get(namespace, key)
                except sqlite3.Error:
                    self._drop_reader(reader)
        return self._call(("get", namespace, key, consistent), timeout, "get")

    def list(self, namespace: str, prefix: str, consistent: bool, timeout):
        return [key.decode() for key in self._keys(namespace, prefix.encode(), consistent,
                                                   timeout)]

    def _keys(self, namespace: str, prefix: bytes, consistent: bool, timeout):
        if not consistent:
            reader = self._local_reader(timeout)
            if reader is not None:
                try:
                    return reader.keys(namespace, prefix)
                except sqlite3.Error:
                    self._drop_reader(reader)
        return self._call(("list", namespace, prefix, consistent), timeout, "list")

    def _local_reader(self, timeout):
        if time.monotonic() - self._located_at < LOCATE_EVERY:
            return self._reader
        with self._locate_lock:
            if time.monotonic() - self._located_at < LOCATE_EVERY:
                return self._reader
            try:
                path = self._call(("locate",), min(timeout or 5.0, 5.0), "get")
            except KVTimeoutError:
                path = None
            reader = self._reader
            if reader is not None and (reader.path != path or not reader.current()):
                self._drop_reader(reader)
                reader = None
            if reader is None and path is not None:
                try:
                    reader = self._reader = KVReader(path)
                except (OSError, sqlite3.Error):
                    reader = None
            self._located_at = time.monotonic()
            return reader

    def _drop_reader(self, reader) -> None:
        if self._reader is reader:
            self._reader = None
            self._located_at = -LOCATE_EVERY
        reader.close()

    def _write(self, mode, namespace, key, expected, value, timeout, what):
        with self._lock:
            seq = next(self._seq)
            self._outstanding.add(seq)
            done_below = min(self._outstanding)
        try:
            return self._call(("write", mode, namespace, key, expected, value, self.writer,
                               seq, done_below), timeout, what)
        finally:
            with self._lock:
                self._outstanding.discard(seq)

    def _call(self, request: tuple, timeout, what: str):
        budget = config.kv_timeout() if timeout is None else timeout
        deadline = time.monotonic() + budget
        why = "no answer yet"
        for attempt in itertools.count():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise KVTimeoutError(f"lightray.kv.{what}: no acknowledged answer in "
                                     f"{budget:g} s (last: {why}); a write may or may not "
                                     "have been applied")
            client = self.client
            if client.closed:
                raise RuntimeNotRunningError(f"lightray.kv.{what}: lightray stopped: "
                                             f"{client.dead_reason}")
            request_id, future = client.start_request(lambda rid: [(m.KV, rid, request)])
            try:
                answer = future.result(min(remaining, ATTEMPT))
            except concurrent.futures.TimeoutError:
                why = f"the agent did not answer in {min(remaining, ATTEMPT):.3g} s"
                continue
            finally:
                client.end_request(request_id)
            status, value = answer
            if status == "ok":
                return value
            if status == "error":
                raise KVError(f"lightray.kv.{what}: {value}")
            why = value
            time.sleep(min(_BACKOFF[min(attempt, len(_BACKOFF) - 1)],
                           max(0.0, deadline - time.monotonic())))
        raise AssertionError("unreachable")
