"""A Raft consensus core for the replicated control store: pure, I/O-free, deterministic.

    agent I/O side                                  RaftNode (this package)
    ──────────────                                  ───────────────────────
    every tick interval ──────── tick() ─────────▶  elections, heartbeats, quorum check
    mesh bytes ── codec.decode ─ step(message) ──▶  votes, appends, snapshots, reads
    a write ─── validate ─────── propose(bytes) ─▶  leader appends (NotLeader otherwise)
    a consistent read ────────── read_index(ctx) ▶  leadership confirmed by heartbeats
    ControlStore.snapshot() ──── compact(i, img) ▶  log truncated up to i
                   ◀──────────── ready() ────────── Ready:
      1. persist snapshot / hard_state / entries, fsync
      2. send messages (codec.encode) over the mesh
      3. apply committed entries to the ControlStore (restore first if restore_snapshot)
      4. answer read_states once applied >= their index

Modules:

    types.py     Entry, Snapshot, Message, HardState, ReadState, Ready; entry kinds,
                 message types, roles
    log.py       RaftLog: snapshot + entries + commit/applied, the log's invariants
    progress.py  Progress: what a leader knows of each follower (probe/replicate/snapshot)
    node.py      RaftNode: roles, elections (pre-vote, check-quorum), replication,
                 commit rule, membership changes, read index, leader transfer
    storage.py   MemoryStorage: the durable side of the Ready contract, in memory
    codec.py     encode/decode of messages, no pickle; RaftCodecError for bad bytes

May import the standard library only. Nothing here knows SQLite, ZeroMQ or the agent.
"""
from .codec import RaftCodecError, decode, encode
from .node import NotLeader, PersistedState, ProposalRefused, RaftNode
from .storage import MemoryStorage
from .types import (CANDIDATE, CONFIG, FOLLOWER, LEADER, NOOP, NORMAL, PRE_CANDIDATE, Entry,
                    HardState, Message, Ready, ReadState, Snapshot, decode_voters,
                    encode_voters)

__all__ = [
    "CANDIDATE", "CONFIG", "FOLLOWER", "LEADER", "NOOP", "NORMAL", "PRE_CANDIDATE",
    "Entry", "HardState", "MemoryStorage", "Message", "NotLeader", "PersistedState",
    "ProposalRefused", "RaftCodecError", "RaftNode", "Ready", "ReadState", "Snapshot",
    "decode", "decode_voters", "encode", "encode_voters",
]
