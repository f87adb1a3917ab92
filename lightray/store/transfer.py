"""The bytes of objects moving between nodes: reading chunks to send, writing chunks received.

    holder: PULL(offset, length) ──▶ ChunkReader.view(segment, offset, length)
            ──▶ memoryview of the mapped segment, sent as a ZeroMQ frame without a copy
    puller: PULL_DATA + frame ──▶ ChunkWriter.write(object id, offset, frame)
            ──▶ pwrite into "<segment>.pulling"; renamed to its final name when complete

A pulled segment gets its final name only once every byte is in, so a reader
that maps it (its name is what the payload says) never sees a half-written
object, exactly as for a restore from the spill directory.

The agent's loop does this I/O itself: a chunk is a few MiB, one pwrite or
one reference to a mapping, so a turn stays short.
"""
from __future__ import annotations

import mmap
import os
import time

from . import shm

_MAPPING_IDLE = 2.0      # seconds an unused mapping of a served segment is kept


class ChunkReader:
    """Mappings of the segments being served, kept while chunks are asked for."""

    def __init__(self):
        self._mappings: dict = {}     # segment name -> [memoryview, last use]

    def view(self, name: str, offset: int, length: int) -> memoryview:
        held = self._mappings.get(name)
        if held is None:
            fd = shm.open_segment(name, os.O_RDONLY, 0)
            try:
                size = os.fstat(fd).st_size
                mapping = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
            finally:
                os.close(fd)
            held = self._mappings[name] = [memoryview(mapping), 0.0]
        held[1] = time.monotonic()
        return held[0][offset:offset + length]

    def drop_idle(self) -> None:
        # Dropping our reference is enough: ZeroMQ may still hold a view of the
        # mapping for a frame it has not sent; the mapping goes with the last view.
        deadline = time.monotonic() - _MAPPING_IDLE
        for name in [n for n, held in self._mappings.items() if held[1] < deadline]:
            del self._mappings[name]

    def forget(self, name: str) -> None:
        self._mappings.pop(name, None)


class _Incoming:
    __slots__ = ("fd", "name", "size", "written")

    def __init__(self, fd: int, name: str, size: int):
        self.fd = fd
        self.name = name
        self.size = size
        self.written = 0


class ChunkWriter:
    """Segments being pulled into this node's store."""

    def __init__(self):
        self._incoming: dict = {}     # object id -> _Incoming

    def open(self, object_id: bytes, name: str, size: int, warm: str | None = None) -> None:
        """Start writing name; into the warm segment warm (lightray.store.pool) if given."""
        temporary = name + ".pulling"
        flags = os.O_CREAT | os.O_TRUNC | os.O_RDWR
        if shm.adopt(warm, temporary):
            flags = os.O_RDWR          # keep its pages (lightray.store.pool)
        fd = shm.open_segment(temporary, flags)
        os.ftruncate(fd, size)
        self._incoming[object_id] = _Incoming(fd, name, size)

    def write(self, object_id: bytes, offset: int, data) -> bool:
        """Write one chunk; True once the segment is complete (and has its name)."""
        incoming = self._incoming.get(object_id)
        if incoming is None:
            return False      # the pull was abandoned meanwhile
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += os.pwrite(incoming.fd, view[done:], offset + done)
        incoming.written += len(view)
        if incoming.written < incoming.size:
            return False
        del self._incoming[object_id]
        os.close(incoming.fd)
        shm.rename(incoming.name + ".pulling", incoming.name)
        return True

    def abort(self, object_id: bytes) -> None:
        incoming = self._incoming.pop(object_id, None)
        if incoming is not None:
            os.close(incoming.fd)
            shm.unlink(incoming.name + ".pulling")

    def abort_all(self) -> None:
        for object_id in list(self._incoming):
            self.abort(object_id)
