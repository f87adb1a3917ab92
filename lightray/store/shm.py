"""POSIX shared-memory segments holding serialized objects.

    producer (driver put / worker return)          reader (any process, same host)
    ─────────────────────────────────────          ───────────────────────────────
    create_segment(name, size) + pwrite  ──name──▶  attach(name) -> read-only mmap
                           agent: unlink(name) once the object is freed

These are the segments ``multiprocessing.shared_memory`` makes (shm_open on
/dev/shm), driven through ``_posixshmem`` directly for two reasons: before
Python 3.13 ``SharedMemory`` registers every segment it touches with the
``resource_tracker``, which unlinks it when *that* process exits (so a reader
would destroy the producer's object), and it would start a tracker process in
every worker. Ownership here is explicit instead: the agent unlinks.

Layout of a segment: the in-band pickle bytes, then every out-of-band buffer,
each starting on a 64-byte boundary so numpy views are aligned. A reader maps
the segment read-only: arrays built on it are read-only views, with no copy.
Unlinking does not disturb a process that still maps the segment; its memory
goes back to the system when the last mapping closes.

A name with a "/" in it is a plain file at that path instead: the agent falls
back to a directory on disk when /dev/shm is smaller than the store's
capacity (containers often give it 64 MB). Everything else is the same.
"""
from __future__ import annotations

import mmap
import os

from ..config import segment_prefix

try:
    import _posixshmem
except ImportError:  # pragma: no cover - non-POSIX platforms
    _posixshmem = None

ALIGN = 64


def shm_prefix(session: str) -> str:
    """The name prefix of every segment of one session: one ``rm`` pattern."""
    return f"{segment_prefix()}{session}_"


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


class SegmentLayout(tuple):
    """(name, total_size, inband_len, ((offset, length), ...)) — small and picklable."""

    __slots__ = ()


def plan_layout(inband_len: int, buffer_lengths) -> tuple:
    """Offsets of the in-band part and each buffer, and the total size."""
    offsets = []
    position = _aligned(inband_len)
    for length in buffer_lengths:
        offsets.append((position, length))
        position = _aligned(position + length)
    return max(position, 1), tuple(offsets)


def _write_all(fd: int, data, offset: int) -> None:
    view = memoryview(data).cast("B") if not isinstance(data, (bytes, bytearray)) else data
    total = len(view)
    written = 0
    while written < total:
        # pwrite into fresh tmpfs pages is measurably faster here than
        # faulting the pages in through a mapping and memcpy-ing.
        written += os.pwrite(fd, view[written:written + (1 << 30)], offset + written)


def open_segment(name: str, flags: int, mode: int = 0o600) -> int:
    """A file descriptor on the segment (shared memory, or a file for a path).
    Opening with O_CREAT makes sure the segment is this user's and 0600
    (/dev/shm is writable by every user: one could have made the name first)."""
    if "/" in name:
        fd = os.open(name, flags | os.O_NOFOLLOW, mode)
    else:
        fd = _posixshmem.shm_open("/" + name, flags, mode)
    if flags & os.O_CREAT:
        _make_private(fd, name)
    return fd


def _make_private(fd: int, name: str) -> None:
    info = os.fstat(fd)
    if info.st_uid != os.geteuid():
        os.close(fd)
        raise PermissionError(f"segment {name} belongs to uid {info.st_uid}, not to this "
                              "user: another user made it first; not writing into it")
    if info.st_mode & 0o777 != 0o600:
        os.fchmod(fd, 0o600)


def create_segment(name: str, inband, buffers) -> tuple:
    """Write a new segment; returns its layout tuple."""
    buffer_views = [memoryview(b).cast("B") for b in buffers]
    size, offsets = plan_layout(len(inband), [len(v) for v in buffer_views])
    fd = open_segment(name, os.O_CREAT | os.O_EXCL | os.O_RDWR)
    try:
        os.ftruncate(fd, size)
        _write_all(fd, inband, 0)
        for (offset, _), view in zip(offsets, buffer_views):
            _write_all(fd, view, offset)
    except BaseException:
        os.close(fd)
        unlink(name)
        raise
    os.close(fd)
    return (name, size, len(inband), offsets)


def attach(layout) -> tuple:
    """Map a segment read-only: returns (mmap, inband view, buffer views)."""
    name, size, inband_len, offsets = layout
    fd = open_segment(name, os.O_RDONLY, 0)
    try:
        mapping = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    view = memoryview(mapping)
    return mapping, view[:inband_len], [view[o:o + n] for o, n in offsets]


def rename(old: str, new: str) -> None:
    """Give a segment another name at once (Linux: shared memory is /dev/shm)."""
    if "/" in old:
        os.rename(old, new)
    else:
        os.rename(f"/dev/shm/{old}", f"/dev/shm/{new}")


def adopt(warm: str | None, name: str) -> bool:
    """Give the warm segment warm (lightray.store.pool) the name name, to be
    written over; False if there is none."""
    if warm is None:
        return False
    try:
        rename(warm, name)
        return True
    except FileNotFoundError:
        return False


def unlink(name: str) -> None:
    try:
        if "/" in name:
            os.unlink(name)
        else:
            _posixshmem.shm_unlink("/" + name)
    except FileNotFoundError:
        pass


def list_segments(prefix: str) -> list:
    """Names of the segments starting with prefix (a path prefix: files)."""
    directory, start = os.path.split(prefix) if "/" in prefix else ("/dev/shm", prefix)
    try:
        names = [n for n in os.listdir(directory) if n.startswith(start)]
    except FileNotFoundError:
        return []
    return [os.path.join(directory, n) for n in names] if "/" in prefix else names


def unlink_all(prefix: str) -> int:
    names = list_segments(prefix)
    for name in names:
        unlink(name)
    return len(names)


def shm_free_bytes() -> int:
    try:
        st = os.statvfs("/dev/shm")
        return st.f_bavail * st.f_frsize
    except OSError:  # pragma: no cover
        return 0
