"""A worker's log file: every line its tasks print, prefixed, bounded on disk.

    <session dir>/logs/worker-<pid>.log      the current file
    <session dir>/logs/worker-<pid>.log.1    the one before (rotated away)

When the current file would pass ``max_bytes`` (LIGHTRAY_WORKER_LOG_BYTES,
default 10 MiB) it becomes the ``.1`` file (replacing the older one), so a
chatty task never takes more than twice that on disk per worker. The files
go when the session directory does (the agent removes it at shutdown).
"""
from __future__ import annotations

import os

LOG_DIR = "logs"


def log_dir(session_dir: str) -> str:
    return os.path.join(session_dir, LOG_DIR)


def worker_log_path(session_dir: str, pid: int) -> str:
    return os.path.join(log_dir(session_dir), f"worker-{pid}.log")


class BoundedLog:
    """Appends lines to a file, rotating it at max_bytes (not thread-safe:
    its owner serializes writes)."""

    __slots__ = ("path", "max_bytes", "_file", "_size")

    def __init__(self, path: str, max_bytes: int):
        self.path = path
        self.max_bytes = max_bytes
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        self._file = None
        self._size = 0
        self._open()

    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._file = os.fdopen(fd, "ab", buffering=0)
        self._size = os.fstat(fd).st_size

    def write_lines(self, lines: list) -> None:
        """Write lines (str, no newline), then hand them to the OS (readers see them)."""
        data = ("\n".join(lines) + "\n").encode("utf-8", "replace")
        if self._size + len(data) > self.max_bytes and self._size:
            self._rotate()
        if len(data) > self.max_bytes:   # one batch larger than the bound: keep its end
            data = data[-self.max_bytes:]
        self._file.write(data)
        self._size += len(data)

    def _rotate(self) -> None:
        self._file.close()
        os.replace(self.path, self.path + ".1")
        self._open()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
