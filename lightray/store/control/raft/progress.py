"""What a leader knows about each follower's log: match, next, and how to send to it.

    PROBE      one append in flight at a time; a rejection moves next back
    REPLICATE  appends stream (up to MAX_INFLIGHT unanswered), next runs ahead
    SNAPSHOT   next is below the leader's first index: a snapshot is on its way;
               after SNAPSHOT_RETRY ticks without an answer it is sent again

match only grows (an answer older than what is known changes nothing);
next > match always.
"""
from __future__ import annotations

from collections import deque

PROBE, REPLICATE, SNAPSHOT = "probe", "replicate", "snapshot"
MAX_INFLIGHT = 64


class Progress:
    __slots__ = ("match", "next", "state", "paused", "inflight", "recent_active",
                 "snapshot_wait")

    def __init__(self, next_index: int):
        self.match = 0
        self.next = next_index
        self.state = PROBE
        self.paused = False            # PROBE: an append is out, wait for its answer
        self.inflight: deque = deque()  # REPLICATE: last index of each unanswered append
        self.recent_active = False     # heard from since the last quorum check
        self.snapshot_wait = 0         # SNAPSHOT: ticks left before sending it again

    def become_probe(self) -> None:
        self.state = PROBE
        self.next = self.match + 1
        self.paused = False
        self.inflight.clear()

    def become_replicate(self) -> None:
        self.state = REPLICATE
        self.next = self.match + 1
        self.paused = False
        self.inflight.clear()

    def become_snapshot(self, wait_ticks: int) -> None:
        self.state = SNAPSHOT
        self.paused = True
        self.inflight.clear()
        self.snapshot_wait = wait_ticks

    def acknowledged(self, index: int) -> bool:
        """A successful answer up to index; True if it told something new."""
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        if index <= self.match:
            return False
        self.match = index
        self.next = max(self.next, index + 1)
        self.paused = False
        return True

    def can_send(self) -> bool:
        if self.state == PROBE:
            return not self.paused
        if self.state == REPLICATE:
            return len(self.inflight) < MAX_INFLIGHT
        return False

    def sent(self, last_index: int) -> None:
        if self.state == REPLICATE:
            self.next = last_index + 1
            self.inflight.append(last_index)
        elif self.state == PROBE:
            self.paused = True

    def __repr__(self) -> str:
        return f"Progress({self.state} match={self.match} next={self.next})"
