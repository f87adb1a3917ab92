"""Copying objects between the store and the spill directory, off the agent's thread.

    agent thread ──job (spill | restore | remove)──▶ SpillIO thread: sendfile segment <-> file
                 ◀──(kind, object id, error)── results + inproc wake-up (PUSH -> agent's PULL)

Removing spill files happens here too: deleting a large file can take tens
of milliseconds, which the agent's thread must not spend.

A spill file holds the segment's bytes unchanged, so a restored segment has
the very layout (name, size, offsets) it had: every payload already handed
out stays valid. The copy is ``os.sendfile`` in 64 MiB steps, which moves
pages inside the kernel in large sequential writes, without passing through
Python. The agent decides what to spill and when (lightray.agent.store); this
module only moves bytes.
"""
from __future__ import annotations

import collections
import os
import queue
import threading
import time

import zmq

from . import shm
from ..log import get_logger

_log = get_logger("spill")

_STEP = 64 << 20
SPILL, RESTORE, REMOVE, STOP = "spill", "restore", "remove", "stop"


def copy_segment_to_file(layout, path: str) -> None:
    name, size = layout[0], layout[1]
    source = shm.open_segment(name, os.O_RDONLY, 0)
    try:
        target = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
        os.fchmod(target, 0o600)    # explicit: never what the umask happens to leave
        try:
            _copy(source, target, size)
        except BaseException:
            os.close(target)
            _remove(path)
            raise
        os.close(target)
    finally:
        os.close(source)


def copy_file_to_segment(path: str, layout, warm: str | None = None) -> None:
    """Write the segment under a temporary name and rename it when complete:
    a reader holding the payload maps it by name, and must never see it half
    written. warm: a warm segment to write into (lightray.store.pool)."""
    name, size = layout[0], layout[1]
    partial = name + ".restoring"
    source = os.open(path, os.O_RDONLY)
    try:
        flags = os.O_CREAT | os.O_EXCL | os.O_RDWR
        if shm.adopt(warm, partial):
            flags = os.O_RDWR      # keep its pages (lightray.store.pool)
        target = shm.open_segment(partial, flags)
        try:
            os.ftruncate(target, size)
            _copy(source, target, size)
            shm.rename(partial, name)
        except BaseException:
            os.close(target)
            shm.unlink(partial)
            raise
        os.close(target)
    finally:
        os.close(source)


def _copy(source: int, target: int, size: int) -> None:
    offset = 0
    while offset < size:
        sent = os.sendfile(target, source, offset, min(_STEP, size - offset))
        if sent == 0:
            raise OSError(f"short copy: {offset} of {size} bytes")
        offset += sent


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def remove_files(paths) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as error:   # never take the agent down for a spill file
            _log.warning("could not remove spill file %s: %s", path, error)


class SpillIO:
    """One thread doing the agent's spill and restore copies, in order."""

    def __init__(self, context: zmq.Context, wake_address: str):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._done: collections.deque = collections.deque()
        self._context = context
        self._wake_address = wake_address
        self._stopping = False
        self.busy_seconds = {SPILL: 0.0, RESTORE: 0.0}   # time spent copying, by kind
        self._thread = threading.Thread(target=self._run, name="lightray-spill", daemon=True)
        self._thread.start()

    def submit(self, kind: str, object_id: bytes, layout, path: str,
               warm: str | None = None) -> None:
        """A spill, or a restore (into the warm segment warm, if given)."""
        self._jobs.put((kind, object_id, layout, path, warm))

    def remove(self, paths) -> None:
        """Delete these spill files (no completion is reported)."""
        self._jobs.put((REMOVE, None, None, list(paths), None))

    def completed(self) -> list:
        """(kind, object id, error or None) of the jobs finished since last asked."""
        done = []
        while self._done:
            done.append(self._done.popleft())
        return done

    def stop(self) -> None:
        """Finish the copy under way, skip the rest (the agent is stopping)."""
        self._stopping = True
        self._jobs.put((STOP, None, None, None, None))
        self._thread.join(timeout=30)

    def _run(self) -> None:
        wake = self._context.socket(zmq.PUSH)
        wake.setsockopt(zmq.LINGER, 0)
        wake.connect(self._wake_address)
        try:
            while True:
                kind, object_id, layout, path, warm = self._jobs.get()
                if kind == STOP or self._stopping:
                    return
                if kind == REMOVE:
                    remove_files(path)
                    continue
                error = None
                started = time.perf_counter()
                try:
                    if kind == SPILL:
                        copy_segment_to_file(layout, path)
                    else:
                        copy_file_to_segment(path, layout, warm)
                except OSError as failure:
                    error = failure
                self.busy_seconds[kind] += time.perf_counter() - started
                self._done.append((kind, object_id, error))
                try:
                    wake.send(b"", zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass
        finally:
            wake.close()
