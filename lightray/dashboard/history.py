"""Task counts by state over time: the one thing the dashboard remembers. No I/O.

    sampler thread ──record(taken_at, by_state)──▶ TaskHistory (a bounded ring)
    HTTP handlers  ──as_json()──▶ [[taken_at, {state: count}], ...], oldest first
"""
from __future__ import annotations

import collections
import threading

HISTORY_SAMPLES = 600      # 10 minutes at the default interval of 1 s


class TaskHistory:
    __slots__ = ("_samples", "_lock")

    def __init__(self, maxlen: int = HISTORY_SAMPLES):
        self._samples = collections.deque(maxlen=maxlen)   # (taken_at, {state: count})
        self._lock = threading.Lock()                      # sampler writes, handlers read

    def record(self, taken_at: float, by_state: dict) -> None:
        with self._lock:
            self._samples.append((taken_at, dict(by_state)))

    def as_json(self) -> list:
        with self._lock:
            return [[taken_at, counts] for taken_at, counts in self._samples]

    def __len__(self) -> int:
        return len(self._samples)
