"""What the agent's state asks its I/O loop to do: typed instructions.

    AgentState.take_instructions() ──▶ [MeshConnect, ..., SendPeer, ..., Send, ...,
                                        FreeSegment, ..., Spawn, Kill, RemoveFiles]
    lightray.agent.server executes them in list order, one dispatch on the type.

The list comes in the order the effects must happen (see
AgentState.take_instructions): mesh connections before the messages sent
over them, a pushed chunk after the message announcing it, disk jobs queued
before the answers that make their readers wait, answers before freed
segments are given back (which takes milliseconds), forks and kills last.

NamedTuples: cheap to make, and their fields say what each one carries.
Imports nothing from lightray.
"""
from __future__ import annotations

from typing import NamedTuple


class Send(NamedTuple):
    """One frame of ops to a local process (its receive socket identity)."""
    identity: bytes
    ops: list


class SendPeer(NamedTuple):
    """Ops to a peer agent over the mesh (node id, or "head" until known)."""
    node_id: str
    ops: list


class SendChunk(NamedTuple):
    """A PULL_DATA op and, as its second frame, the bytes it names (read from
    the local segment ``segment`` at the op's offset and length)."""
    node_id: str
    op: tuple
    segment: str


class MeshConnect(NamedTuple):
    node_id: str
    address: str


class MeshRename(NamedTuple):
    """The connection known as ``old`` (the head, before its id was known) is ``new``."""
    old: str
    new: str


class MeshDisconnect(NamedTuple):
    node_id: str


class OpenPull(NamedTuple):
    """Open the segment a pulled object's chunks are written into."""
    object_id: bytes
    segment: str
    size: int


class AbortPull(NamedTuple):
    """Drop a pull's partly written segment."""
    object_id: bytes


class ControlWrites(NamedTuple):
    """Commands for the cluster's control store: proposed to this node's control
    replica if it leads, else sent to the leader (lightray.agent.cluster.control_plane).
    forwarded: those another agent sent here (CONTROL)."""
    commands: list
    forwarded: list = []


class RaftMessages(NamedTuple):
    """(sender node id, bytes) of RAFT ops, for this node's control replica
    (created on the first one addressed to it)."""
    messages: list


class SpillJob(NamedTuple):
    """Copy a segment to a spill file, off the loop (lightray.store.spill)."""
    object_id: bytes
    layout: tuple
    path: str


class RestoreJob(NamedTuple):
    """Copy a spill file back into a segment of the same name and layout."""
    object_id: bytes
    layout: tuple
    path: str


class FreeSegment(NamedTuple):
    """Give back a freed object's segment (unlink it, or keep it warm)."""
    name: str


class Spawn(NamedTuple):
    """Fork a worker; report its pid with AgentState.on_spawned."""
    worker_id: str
    actor: bool                  # a dedicated actor worker


class Kill(NamedTuple):
    """Send a signal (by name, e.g. "SIGKILL") to a worker process."""
    pid: int
    signal: str = "SIGKILL"


class RemoveFiles(NamedTuple):
    """Delete spill files (off the loop)."""
    paths: list
