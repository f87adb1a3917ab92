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
                 message types, roles; NotLeader, ProposalRefused
    log.py       RaftLog: snapshot + entries + commit/applied, the log's invariants
    progress.py  Progress: what a leader knows of each follower (probe/replicate/snapshot)
    node.py      RaftNode: roles, elections (pre-vote, check-quorum), replication,
                 commit rule, membership changes, read index, leader transfer
    reads.py     ReadQueue: a leader's read-index requests waiting for a quorum
    storage.py   PersistedState (what a replica gives back on restart); MemoryStorage:
                 the durable side of the Ready contract, in memory
    codec.py     encode/decode of messages, no pickle; RaftCodecError for bad bytes

Safety rules RaftNode keeps (Raft, Ongaro & Ousterhout, with its thesis' extensions):
- one vote per term, recorded (in the hard state) before the vote is sent;
  a vote only for a candidate whose log is at least as up to date;
- an append is accepted only if the log holds its previous (index, term);
  a conflicting suffix is cut, a committed entry never (the log asserts it);
- a leader commits by counting replicas only an entry of its own term
  (older ones commit with it: the Figure 8 rule), and starts its term with a
  NOOP entry so that happens soon;
- membership changes one voter at a time, a CONFIG entry taking effect when
  appended; a new one only once the previous is committed (and not before the
  leader committed an entry of its term). A leader that removed itself steps
  down once the change is committed;
- pre-vote: a replica campaigns only after a quorum said it would vote for it,
  so a node coming back from a partition does not raise everyone's term;
- check-quorum: a leader that heard from no quorum within an election timeout
  steps down; a replica that heard from a leader within one ignores votes
  (except a leader transfer's), so a stable leader is never deposed;
- read index: a read is answered at the commit index once a quorum answered a
  heartbeat sent after the read arrived, and only after the leader committed
  an entry of its term (its commit index is then the cluster's).

May import the standard library only. Nothing here knows SQLite, ZeroMQ or the agent.
"""
from .codec import RaftCodecError, decode, encode
from .node import RaftNode
from .storage import MemoryStorage, PersistedState
from .types import (CANDIDATE, CONFIG, FOLLOWER, LEADER, NOOP, NORMAL, PRE_CANDIDATE, Entry,
                    HardState, Message, NotLeader, ProposalRefused, Ready, ReadState, Snapshot,
                    decode_voters, encode_voters)

__all__ = [
    "CANDIDATE", "CONFIG", "FOLLOWER", "LEADER", "NOOP", "NORMAL", "PRE_CANDIDATE",
    "Entry", "HardState", "MemoryStorage", "Message", "NotLeader", "PersistedState",
    "ProposalRefused", "RaftCodecError", "RaftNode", "Ready", "ReadState", "Snapshot",
    "decode", "decode_voters", "encode", "encode_voters",
]
