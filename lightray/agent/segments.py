"""Half-written segments: which segment names in the store's directory nobody will seal. No I/O.

    RESERVE(size, object id) granted ──▶ client.writing[object id] = size
    PUT / DONE / DIRECT_RESULT with that segment ──▶ sealed: dropped from client.writing
    the client dies (SIGKILL mid-put) ──▶ unsealed_names(client): unlinked at once
    every LIGHTRAY_SEGMENT_SWEEP_S ──▶ the I/O side lists <prefix>* ──▶ orphans(names)

A process reserves room for a segment, then writes it, then reports it: between
the grant and the report only that process knows the segment. If it dies
there, the segment would stay in /dev/shm, counted nowhere (the store reports
its reservation given back, the memory is still taken). So every grant names
its segment, and a client's death unlinks the ones it had not sealed.

The periodic sweep is the safety net for what that misses (a client whose
death went unnoticed, a reply lost with its sender): a segment named like an
object of this session that the object table does not hold, that no live
client is writing and that no spill, restore or pull is copying is an orphan.
A live writer is never swept: its grant (recorded before the reply that lets
it create the file) names the segment, and a segment is dropped from
``writing`` only once the object table holds it.
"""
from __future__ import annotations

from ..serialization import SHARED

OBJECT_HEX = 32      # an object id (lightray.ids.OBJECT_ID_BYTES) in hex
# Suffixes of segments the agent itself is writing (lightray.store.transfer, .spill).
COPY_SUFFIXES = (".pulling", ".restoring")


def object_id_of(name: str, prefix: str) -> bytes | None:
    """The object id a segment name stands for (with or without a copy
    suffix); None for a name that is not an object's (a warm segment, another file)."""
    if not name.startswith(prefix):
        return None
    rest = name[len(prefix):]
    for suffix in COPY_SUFFIXES:
        if rest.endswith(suffix):
            rest = rest[:-len(suffix)]
            break
    if len(rest) != OBJECT_HEX:
        return None
    try:
        return bytes.fromhex(rest)
    except ValueError:
        return None


def _stored_name(objects: dict, object_id: bytes) -> str | None:
    entry = objects.get(object_id)
    payload = entry.payload if entry is not None else None
    if payload is None or payload[0] != SHARED:
        return None
    return payload[1][0]


def unsealed_names(client, objects: dict, prefix: str, clients: dict) -> list:
    """The segments client was granted room for and never reported: to unlink
    now that it is gone. One the object table holds under that name is kept,
    and so is one another live client was granted too (ids are unique per
    writer: only a confused client names another's object)."""
    names = []
    for object_id in client.writing:
        name = prefix + object_id.hex()
        if _stored_name(objects, object_id) == name or any(
                object_id in other.writing for other in clients.values() if other is not client):
            continue
        names.append(name)
    client.writing = {}
    return names


def orphans(names, prefix: str, objects: dict, clients: dict, copying) -> list:
    """Of the segment names listed in the store's directory, those nobody
    holds or writes: not in the object table under that name, not granted to
    a live client, not being copied by a spill, restore or pull (copying:
    object ids)."""
    writing = set()
    for client in clients.values():
        if client.writing:
            writing.update(client.writing)
    found = []
    for name in names:
        object_id = object_id_of(name, prefix)
        if object_id is None or object_id in writing or object_id in copying:
            continue
        if name.endswith(COPY_SUFFIXES):
            if object_id not in objects:
                found.append(name)
            continue
        if _stored_name(objects, object_id) != name:
            found.append(name)
    return found
