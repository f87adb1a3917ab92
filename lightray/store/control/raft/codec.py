"""Raft messages as bytes and back: a fixed binary layout, bounded, no pickle.

These bytes cross the mesh, so decode() trusts nothing: every length is
checked against the bytes left and a bound, every field against its type's
rules, and anything wrong raises RaftCodecError (a ValueError) naming the
problem: never another exception, never a half-built message. A message
that decodes also keeps the invariants RaftNode relies on (an APPEND's
entries follow on from its index with terms that never decrease and never
pass the message's term, a SNAPSHOT carries a snapshot and nothing else
does, node ids are non-empty UTF-8 without newlines).

Layout (big-endian):

    "LR" version:u8 type:u8 flags:u8 (1 reject, 2 force, 4 snapshot follows)
    term log_term index commit hint_index hint_term : u64 each
    src, dst: u8 length + UTF-8          context: u16 length + bytes
    entries: u32 count, each term:u64 index:u64 kind:u8 data: u32 length + bytes
    [snapshot: index:u64 term:u64 voters: u8 count, each u8 length + UTF-8;
               data: u32 length + bytes]
"""
from __future__ import annotations

import struct

from .types import (APPEND, CONFIG, ENTRY_KINDS, MESSAGE_TYPES, SNAPSHOT, Entry, Message,
                    Snapshot, decode_voters)

MAGIC = b"LR"
VERSION = 1
MAX_MESSAGE_BYTES = 64 << 20
MAX_ENTRIES = 100_000
MAX_CONTEXT_BYTES = 1024
MAX_ID_BYTES = 255
MAX_VOTERS = 255
MAX_NUMBER = (1 << 63) - 1

_HEAD = struct.Struct(">2sBBB6Q")
_ENTRY = struct.Struct(">QQBI")
_U8, _U16, _U32 = struct.Struct(">B"), struct.Struct(">H"), struct.Struct(">I")
_SNAPSHOT_HEAD = struct.Struct(">QQB")
_REJECT, _FORCE, _HAS_SNAPSHOT = 1, 2, 4


class RaftCodecError(ValueError):
    """Bytes that are not a well-formed Raft message (or a message too big to encode)."""


# ---------------------------------------------------------------- encode

def encode(m: Message) -> bytes:
    flags = (_REJECT if m.reject else 0) | (_FORCE if m.force else 0) | \
        (_HAS_SNAPSHOT if m.snapshot is not None else 0)
    try:
        parts = [_HEAD.pack(MAGIC, VERSION, m.type, flags, m.term, m.log_term, m.index,
                            m.commit, m.hint_index, m.hint_term),
                 _short_text(m.src), _short_text(m.dst),
                 _U16.pack(len(m.context)), bytes(m.context), _U32.pack(len(m.entries))]
        for entry in m.entries:
            parts.append(_ENTRY.pack(entry.term, entry.index, entry.kind, len(entry.data)))
            parts.append(bytes(entry.data))
        if m.snapshot is not None:
            snapshot = m.snapshot
            parts.append(_SNAPSHOT_HEAD.pack(snapshot.index, snapshot.term,
                                             len(snapshot.voters)))
            parts.extend(_short_text(voter) for voter in snapshot.voters)
            parts.append(_U32.pack(len(snapshot.data)))
            parts.append(bytes(snapshot.data))
    except (struct.error, TypeError, AttributeError, UnicodeEncodeError) as exc:
        raise RaftCodecError(f"cannot encode {m!r}: {exc}") from None
    data = b"".join(parts)
    if len(data) > MAX_MESSAGE_BYTES:
        raise RaftCodecError(f"message of {len(data)} bytes is over {MAX_MESSAGE_BYTES}")
    return data


def _short_text(text: str) -> bytes:
    raw = text.encode()
    return _U8.pack(len(raw)) + raw


# ---------------------------------------------------------------- decode

def decode(data) -> Message:
    """The message in data; raises RaftCodecError for anything else."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise RaftCodecError(f"a Raft message is bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_MESSAGE_BYTES:
        raise RaftCodecError(f"message of {len(data)} bytes is over {MAX_MESSAGE_BYTES}")
    try:
        message = _Reader(data).message()
    except RaftCodecError:
        raise
    except (struct.error, UnicodeDecodeError, ValueError, IndexError, OverflowError) as exc:
        raise RaftCodecError(f"malformed Raft message: {exc}") from None
    _check(message)
    return message


class _Reader:
    __slots__ = ("data", "at")

    def __init__(self, data: bytes):
        self.data = data
        self.at = 0

    def take(self, count: int) -> bytes:
        if count > len(self.data) - self.at:
            raise RaftCodecError(f"truncated: {count} bytes wanted at offset {self.at}, "
                                 f"{len(self.data) - self.at} left")
        chunk = self.data[self.at:self.at + count]
        self.at += count
        return chunk

    def unpack(self, layout: struct.Struct) -> tuple:
        return layout.unpack(self.take(layout.size))

    def node_id(self, what: str) -> str:
        (length,) = self.unpack(_U8)
        text = self.take(length).decode()
        if not text or "\n" in text:
            raise RaftCodecError(f"{what}: a node id is non-empty text without newlines")
        return text

    def message(self) -> Message:
        magic, version, kind, flags, *numbers = self.unpack(_HEAD)
        if magic != MAGIC:
            raise RaftCodecError(f"not a Raft message (starts with {magic!r})")
        if version != VERSION:
            raise RaftCodecError(f"Raft message version {version}, this replica speaks "
                                 f"{VERSION}")
        if kind not in MESSAGE_TYPES:
            raise RaftCodecError(f"unknown Raft message type {kind}")
        if flags & ~(_REJECT | _FORCE | _HAS_SNAPSHOT):
            raise RaftCodecError(f"unknown flags {flags:#x}")
        if any(n > MAX_NUMBER for n in numbers):
            raise RaftCodecError("a term or index is over 2**63 - 1")
        term, log_term, index, commit, hint_index, hint_term = numbers
        src, dst = self.node_id("src"), self.node_id("dst")
        (context_length,) = self.unpack(_U16)
        if context_length > MAX_CONTEXT_BYTES:
            raise RaftCodecError(f"context of {context_length} bytes is over "
                                 f"{MAX_CONTEXT_BYTES}")
        context = self.take(context_length)
        (count,) = self.unpack(_U32)
        if count > MAX_ENTRIES:
            raise RaftCodecError(f"{count} entries is over {MAX_ENTRIES}")
        entries = []
        for _ in range(count):
            entry_term, entry_index, entry_kind, length = self.unpack(_ENTRY)
            if entry_kind not in ENTRY_KINDS:
                raise RaftCodecError(f"unknown entry kind {entry_kind}")
            entries.append(Entry(entry_term, entry_index, entry_kind, self.take(length)))
        snapshot = self.snapshot() if flags & _HAS_SNAPSHOT else None
        if self.at != len(self.data):
            raise RaftCodecError(f"{len(self.data) - self.at} bytes after the message")
        return Message(kind, src, dst, term, log_term=log_term, index=index,
                       entries=entries, commit=commit, reject=bool(flags & _REJECT),
                       hint_index=hint_index, hint_term=hint_term, snapshot=snapshot,
                       context=context, force=bool(flags & _FORCE))

    def snapshot(self) -> Snapshot:
        index, term, count = self.unpack(_SNAPSHOT_HEAD)
        if index > MAX_NUMBER or term > MAX_NUMBER:
            raise RaftCodecError("a snapshot's term or index is over 2**63 - 1")
        voters = tuple(self.node_id("snapshot voter") for _ in range(count))
        if not voters or list(voters) != sorted(set(voters)):
            raise RaftCodecError("a snapshot's voters are a non-empty sorted set")
        (length,) = self.unpack(_U32)
        return Snapshot(index, term, voters, self.take(length))


def _check(m: Message) -> None:
    """The invariants RaftNode assumes of a peer's message."""
    if m.entries and m.type != APPEND:
        raise RaftCodecError("only an append carries entries")
    if (m.snapshot is not None) != (m.type == SNAPSHOT):
        raise RaftCodecError("a snapshot message carries a snapshot, and only it does")
    if m.snapshot is not None and m.snapshot.term > m.term:
        raise RaftCodecError("a snapshot's term is past the message's")
    previous_index, previous_term = m.index, m.log_term
    for entry in m.entries:
        if entry.index != previous_index + 1:
            raise RaftCodecError(f"entry index {entry.index} does not follow {previous_index}")
        if not previous_term <= entry.term <= m.term:
            raise RaftCodecError(f"entry {entry.index}'s term {entry.term} is out of order")
        if entry.kind == CONFIG:
            try:
                voters = decode_voters(entry.data)
            except UnicodeDecodeError:
                raise RaftCodecError(f"entry {entry.index}: voters are not UTF-8") from None
            if not voters or "" in voters or len(voters) > MAX_VOTERS \
                    or list(voters) != sorted(set(voters)):
                raise RaftCodecError(f"entry {entry.index}: voters must be a non-empty "
                                     f"sorted set of ids")
        previous_index, previous_term = entry.index, entry.term
    if m.type == APPEND and m.log_term > m.term:
        raise RaftCodecError("an append's previous term is past its term")
