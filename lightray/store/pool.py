"""Warm segments: freed segments kept for the agent's next pull or restore.

    object freed ──▶ segment renamed "<prefix>pool<n>" ──▶ nobody maps it? (write lease)
                          yes: kept (warm pages)          no: unlinked, as before
    pull / restore ──▶ take(size): the best-fitting warm segment, renamed to
                       "<segment>.pulling" / ".restoring" and truncated to size

Writing into a fresh shared-memory file makes the kernel find and zero every
page first; on this project's VMs that is most of a pull's cost (a 1 MB pushed
argument: about 0.5 ms of the 0.9 ms its task takes on the other node; first
touches beyond a couple of GiB in use run at a fraction of memcpy speed).
Reusing the pages of a segment just freed makes the write a plain copy, as in
an arena allocator (Ray's plasma) - but only if nobody can still read the old
bytes: a process may keep a NumPy view of a freed object, and must keep seeing
it unchanged.

Who still maps a segment: the kernel refuses a write lease (F_SETLEASE,
F_WRLCK) on a file while any other open file refers to it, and a mapping keeps
its file open even after its descriptor was closed. The segment is renamed
first, so nobody can open it by its old name after the check. Where leases are
unavailable the check fails and every freed segment is unlinked, as before.

Warm segments count against the store's capacity: the agent trims the pool
whenever live objects, reservations and pool together would exceed it. They
are kept only while pulls or restores happen (a node that never pulls or
restores gives freed memory straight back), and unlinked after IDLE_SECONDS.
"""
from __future__ import annotations

import fcntl
import os

from . import shm

MIN_BYTES = 256 << 10     # smaller segments are cheap to make afresh
MAX_SEGMENTS = 256
DEMAND_SECONDS = 5.0      # freed segments are kept this long after a take
IDLE_SECONDS = 10.0       # a warm segment unused this long is unlinked


def unshared(name: str) -> int | None:
    """The segment's size if no other open file or mapping refers to it."""
    try:
        fd = shm.open_segment(name, os.O_RDONLY, 0)
    except OSError:
        return None
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return os.fstat(fd).st_size
    except OSError:     # EAGAIN: someone has it open or mapped; EINVAL: no leases here
        return None
    finally:
        os.close(fd)


class WarmPool:
    """The agent's warm segments (used from the agent's thread only)."""

    def __init__(self, prefix: str):
        self._prefix = prefix
        self._count = 0
        self._segments: dict = {}     # pool name -> [size, time it was added]
        self.bytes = 0
        self._last_take = float("-inf")

    def release(self, name: str, limit: int, now: float) -> None:
        """A freed segment: keep it warm if it is wanted, the pool stays within
        limit bytes and nobody maps it; otherwise unlink it."""
        if (now - self._last_take > DEMAND_SECONDS
                or len(self._segments) >= MAX_SEGMENTS):
            shm.unlink(name)
            return
        self._count += 1
        pool_name = f"{self._prefix}pool{self._count}"
        try:
            shm.rename(name, pool_name)
        except FileNotFoundError:
            return
        except OSError:
            shm.unlink(name)
            return
        size = unshared(pool_name)
        if size is None or size < MIN_BYTES or self.bytes + size > limit:
            shm.unlink(pool_name)
            return
        self._segments[pool_name] = [size, now]
        self.bytes += size

    def take(self, size: int, now: float) -> str | None:
        """The name of a warm segment for a write of size bytes (the smallest
        one large enough, else the largest), no longer in the pool; or None."""
        self._last_take = now
        if size < MIN_BYTES or not self._segments:
            return None
        segments = self._segments
        best = min(segments, key=lambda name: (segments[name][0] < size,
                                               abs(segments[name][0] - size)))
        self.bytes -= self._segments.pop(best)[0]
        return best

    def trim(self, limit: int) -> None:
        """Unlink warm segments, oldest first, until they fit in limit bytes."""
        while self._segments and self.bytes > limit:   # (limit < 0: the store is over)
            name = next(iter(self._segments))
            self.bytes -= self._segments.pop(name)[0]
            shm.unlink(name)

    def expire(self, now: float) -> None:
        """Unlink the warm segments idle for IDLE_SECONDS."""
        for name in [n for n, (_, added) in self._segments.items()
                     if now - added > IDLE_SECONDS]:
            self.bytes -= self._segments.pop(name)[0]
            shm.unlink(name)

    def clear(self) -> None:
        for name in self._segments:
            shm.unlink(name)
        self._segments.clear()
        self.bytes = 0
