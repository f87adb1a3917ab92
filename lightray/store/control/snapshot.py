"""Snapshots of a control store: a whole SQLite database image, as bytes.

    leader:  ControlStore.snapshot() ──bytes──▶ new replica: ControlStore.restore(bytes)
             (state + last applied index)       then apply the log from that index on

The image is taken with SQLite's online backup API, page by page, so it is
consistent and carries rowids exactly; it is a plain SQLite file (open it
with the sqlite3 shell to look inside). Python 3.11 serializes an in-memory
copy without touching the disk; 3.10 goes through a temporary file.

The image is written in rollback-journal format (header bytes 18 and 19 set
to 1): SQLite refuses to open an in-memory image that claims WAL, and the
store that restores it keeps its own journal mode anyway.
"""
from __future__ import annotations

import os
import sqlite3
import tempfile

from .schema import NotAControlStore, check_version

_SQLITE_MAGIC = b"SQLite format 3\x00"
_HEADER_BYTES = 100
_HAS_SERIALIZE = hasattr(sqlite3.Connection, "serialize")


def take(db: sqlite3.Connection) -> bytes:
    """The database behind db as an image (db must not be inside a transaction)."""
    if _HAS_SERIALIZE:
        copy = sqlite3.connect(":memory:")
        try:
            db.backup(copy)
            image = copy.serialize()
        finally:
            copy.close()
    else:
        with tempfile.TemporaryDirectory(prefix="lightray-snapshot-") as folder:
            path = os.path.join(folder, "snapshot.db")
            copy = sqlite3.connect(path)
            try:
                db.backup(copy)
            finally:
                copy.close()
            with open(path, "rb") as f:
                image = f.read()
    return _without_wal_flag(image)


def restore_into(db: sqlite3.Connection, image: bytes) -> None:
    """Replaces everything in db by the image, after checking it is a control store.

    Raises NotAControlStore (a ValueError) for bytes that are not a control
    store image of this schema version; db is then unchanged. The copy into
    db is one backup, which SQLite applies atomically.
    """
    if type(image) is not bytes:
        raise TypeError(f"a snapshot is bytes, got {type(image).__name__}")
    if len(image) < _HEADER_BYTES or not image.startswith(_SQLITE_MAGIC):
        raise NotAControlStore("the snapshot is not an SQLite database image "
                               f"({len(image)} bytes, starting {image[:16]!r})")
    image = _without_wal_flag(image)
    if _HAS_SERIALIZE:
        source = sqlite3.connect(":memory:")
        try:
            source.deserialize(image)
            _check(source)
            source.backup(db)
        finally:
            source.close()
    else:
        with tempfile.TemporaryDirectory(prefix="lightray-snapshot-") as folder:
            path = os.path.join(folder, "snapshot.db")
            with open(path, "wb") as f:
                f.write(image)
            source = sqlite3.connect(path)
            try:
                _check(source)
                source.backup(db)
            finally:
                source.close()


def _check(source: sqlite3.Connection) -> None:
    try:
        verdict = source.execute("PRAGMA quick_check").fetchone()[0]
        check_version(source, "the snapshot")
    except sqlite3.DatabaseError as exc:
        raise NotAControlStore(f"the snapshot is not a readable SQLite database: {exc}") from None
    if verdict != "ok":
        raise NotAControlStore(f"the snapshot is damaged: {verdict}")


def _without_wal_flag(image: bytes) -> bytes:
    if image[18:20] == b"\x01\x01":
        return image
    patched = bytearray(image)
    patched[18:20] = b"\x01\x01"
    return bytes(patched)
