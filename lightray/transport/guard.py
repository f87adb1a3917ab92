"""Rate-limited reports of refused peers and malformed messages.

A hostile or broken peer can send thousands of bad frames a second; logging a
traceback for each would fill the disk and slow the loop that must keep serving
everyone else. ``RefusalLog`` says the first refusal of each key (a peer, a
kind of malformed message) at once, then stays quiet about that key for a
minute and counts; the next report for it carries how many were suppressed.

Reports go to the "lightray.refusals" logger (lightray.log) at WARNING, or,
given an fd, straight to it; each is one ``os.write`` of one line in lightray's
own processes, so lines of concurrent processes sharing a log file never
interleave mid-line.
"""
from __future__ import annotations

import os
import time

from ..log import PREFIXED, get_logger

_log = get_logger("refusals")

QUIET_PERIOD = 60.0     # seconds between two reports of the same key
MAX_KEYS = 4096         # keys remembered at most (a flood of new keys must not grow memory)


class RefusalLog:
    """Once-per-key-per-period reports, the rest counted."""

    def __init__(self, who: str, *, period: float = QUIET_PERIOD, clock=time.monotonic,
                 fd: int | None = None):
        self.who = who
        self.period = period
        self.clock = clock
        self.fd = fd
        self.last_report: dict = {}    # key -> time of its last report
        self.suppressed: dict = {}     # key -> refusals since then, not reported
        self.total = 0                 # every refusal ever noted

    def note(self, key, what: str) -> bool:
        """Count one refusal of key; report it unless one was reported within the period.
        True if this call wrote a line."""
        self.total += 1
        now = self.clock()
        last = self.last_report.get(key)
        if last is not None and now - last < self.period:
            self.suppressed[key] = self.suppressed.get(key, 0) + 1
            return False
        if last is None and len(self.last_report) >= MAX_KEYS:
            self._forget_oldest()
        self.last_report[key] = now
        more = self.suppressed.pop(key, 0)
        tail = f" ({more} more since the last report)" if more else ""
        self._write(f"{self.who}: {what}{tail}\n")
        return True

    def _forget_oldest(self) -> None:
        oldest = min(self.last_report, key=self.last_report.get)
        del self.last_report[oldest]
        self.suppressed.pop(oldest, None)

    def _write(self, line: str) -> None:
        if self.fd is None:
            _log.warning("%s", line.rstrip("\n"), extra={PREFIXED: True})
            return
        try:
            os.write(self.fd, line.encode("utf-8", "replace"))
        except (OSError, ValueError):
            pass   # no log to write to: refusing still works


def describe_peer(identity) -> str:
    """A printable, bounded name for a peer identity of any bytes."""
    if isinstance(identity, (bytes, bytearray, memoryview)):
        text = bytes(identity[:64]).decode("utf-8", "backslashreplace")
    else:
        text = str(identity)[:64]
    return text.encode("unicode_escape").decode("ascii")   # no newline, no control byte
