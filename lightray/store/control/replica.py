"""A control replica: the Raft core, its durable log and the ControlStore it builds.

    I/O side (the agent)                    ControlReplica
    ────────────────────                    ──────────────
    every tick ─────────────── tick() ────▶ RaftNode.tick
    bytes from a replica ───── receive() ─▶ raft codec ─ RaftNode.step  (bad bytes: dropped)
    a write ─────────────────── propose(command, token) ─▶ command codec ─ RaftNode.propose
    a consistent read ───────── read(token) ─▶ RaftNode.read_index
                ◀────────────── process() ── Output:
      messages  (replica id, bytes) to send     results  (token, result) of committed writes
      reads     tokens whose read may be served  dropped  (token, why) never committed

`process` runs each Ready in the contract's order (lightray.store.control.raft):
the log, hard state and snapshot are saved and fsync'd (replica_storage),
only then do the messages go into the Output, then the committed entries
are applied to the ControlStore in one transaction per Ready, their log
index with them (NOOP and membership entries take their index and change
nothing). A write's result is handed out only once its entry is committed
(stored by a majority) and applied here: the caller is acknowledged then.

Everything is in the agent's one thread and deterministic given the inputs
(the rng of the elections is passed in), so the same class runs in the
tests' simulated network and in the agent.

Files (0600, in the replica's directory): control.db (the state, its last
applied index inside) and raft.db (the log). On restart both are read back:
control.db says how far the state got, raft.db what is left to apply. A
control.db that is behind the log's snapshot (deleted, or damaged and
removed) is rebuilt from that snapshot.

A damaged control.db (SQLite finds it malformed, on opening or later: then
ReplicaDamaged names it) never serves: opening sets it aside as
control.db.damaged (`damaged` says why) and rebuilds the state from raft.db,
its snapshot and the log after it; what the log lacks comes from the leader
(entries, or its snapshot when they were compacted away). A damaged raft.db
is refused (NotAControlStore naming it): its votes and acknowledgements are
promises the replica can no longer keep, so it must not take part.
"""
from __future__ import annotations

import os
import random
import sqlite3

from . import command_codec
from .raft import (LEADER, NORMAL, NotLeader, RaftCodecError, RaftNode, decode, encode)
from .replica_storage import SqliteRaftStorage
from .schema import NotAControlStore
from .store import ControlStore

COMPACT_EVERY = 10_000   # applied entries between snapshots (a snapshot is the whole db)


class Output:
    """What one process() call asks of the I/O side."""

    __slots__ = ("messages", "results", "reads", "dropped", "undecodable")

    def __init__(self):
        self.messages: list = []      # (replica id, bytes)
        self.results: list = []       # (token, result) of writes committed and applied
        self.reads: list = []         # tokens of reads that may be served now (locally)
        self.dropped: list = []       # (token, why): writes that will never commit
        self.undecodable: list = []   # (index, why): committed entries that were no command

    def __bool__(self) -> bool:
        return bool(self.messages or self.results or self.reads or self.dropped)


class ReplicaDamaged(Exception):
    """SQLite found the replica's control.db damaged while it ran; str() names the file."""

    def __init__(self, path: str, error: Exception):
        super().__init__(f"{path} is damaged: {error}")
        self.path = path


class ControlReplica:
    """One replica of the control store, kept in directory (created 0700)."""

    __slots__ = ("node_id", "directory", "store", "storage", "node", "compact_every",
                 "damaged", "_pending", "_reads", "_read_tokens", "_read_counter")

    def __init__(self, node_id: str, directory: str, voters=(), *,
                 rng: random.Random | None = None, election_ticks: int = 10,
                 heartbeat_ticks: int = 1, compact_every: int = COMPACT_EVERY):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.node_id = node_id
        self.directory = directory
        self.compact_every = compact_every
        self.damaged = None            # why control.db was set aside on opening, if it was
        self.storage = SqliteRaftStorage(os.path.join(directory, "raft.db"))
        try:
            self.store = self._open_store(os.path.join(directory, "control.db"))
            persisted = self.storage.persisted()
            snapshot = persisted.snapshot
            if snapshot is not None and self.store.last_applied_index() < snapshot.index:
                self.store.restore(snapshot.data)
        except BaseException:
            self.storage.close()
            raise
        self.node = RaftNode(node_id, tuple(voters), persisted=persisted,
                             applied=self.store.last_applied_index(), rng=rng,
                             election_ticks=election_ticks, heartbeat_ticks=heartbeat_ticks)
        self._pending: dict = {}       # log index -> (term, token) of our proposals
        self._reads: list = []         # (index, token): read states awaiting that applied index
        self._read_tokens: dict = {}   # read context bytes -> token
        self._read_counter = 0

    def _open_store(self, path: str) -> ControlStore:
        try:
            return ControlStore(path)
        except NotAControlStore as error:
            # Never served: set aside (for a look), and the state rebuilt from the log.
            self.damaged = str(error)
            os.replace(path, path + ".damaged")
            for suffix in ("-wal", "-shm"):
                try:
                    os.unlink(path + suffix)
                except FileNotFoundError:
                    pass
            return ControlStore(path)

    def query(self, read):
        """read(store)'s answer; ReplicaDamaged naming control.db if SQLite finds it
        damaged (the replica must then be reopened: see the module docstring)."""
        try:
            return read(self.store)
        except sqlite3.DatabaseError as error:
            raise ReplicaDamaged(self.store.path, error) from None

    # ------------------------------------------------------------ inputs

    def tick(self) -> None:
        self.node.tick()

    def receive(self, data, sender: str | None = None) -> str | None:
        """A message from another replica; None if taken, else why it was dropped
        (bytes that are not a Raft message, one addressed to another replica, or,
        given the sender the transport authenticated, one that claims another)."""
        try:
            message = decode(data)
        except RaftCodecError as error:
            return f"not a Raft message: {error}"
        if message.dst != self.node_id:
            return f"addressed to {message.dst!r:.40}, not to this replica"
        if sender is not None and message.src != sender:
            return f"sent by {sender!r:.40} but says it is from {message.src!r:.40}"
        self.node.step(message)
        return None

    def propose(self, command, token) -> int:
        """Appends a write to the log (leader only); its result comes out of a later
        process() with token. TypeError/ValueError for a malformed command (nothing
        appended), NotLeader naming the leader if this replica is not it."""
        data = command_codec.encode(command)
        index = self.node.propose(data)
        self._pending[index] = (self.node.term, token)
        return index

    def propose_many(self, proposals: list) -> list:
        """Appends writes [(command, token), ...] to the log in one batch (one
        append message per follower); returns, in order, None for each write
        appended or the TypeError/ValueError of a malformed one (not appended).
        NotLeader/ProposalRefused as propose (nothing appended)."""
        problems, encoded, tokens = [], [], []
        for command, token in proposals:
            try:
                encoded.append(command_codec.encode(command))
                tokens.append(token)
                problems.append(None)
            except (TypeError, ValueError) as error:
                problems.append(error)
        if encoded:
            term = self.node.term
            for index, token in zip(self.node.propose_batch(encoded), tokens):
                self._pending[index] = (term, token)
        return problems

    def read(self, token) -> None:
        """Asks for a linearizable read: token comes out of a later process() (in
        reads) once this replica's store is as new as the leader's commit when the
        read was asked. NotLeader when no leader is known."""
        self._read_counter += 1
        context = self._read_counter.to_bytes(8, "big")
        self.node.read_index(context)
        self._read_tokens[context] = token

    def add_voter(self, node_id: str) -> int:
        return self.node.propose_add_voter(node_id)

    def remove_voter(self, node_id: str) -> int:
        return self.node.propose_remove_voter(node_id)

    def hand_over(self) -> str | None:
        """Before a graceful stop: leadership to the most up-to-date other voter
        (None when this replica is not the leader or is alone)."""
        node = self.node
        if node.role != LEADER:
            return None
        others = [(progress.match, peer) for peer, progress in node.progress.items()
                  if peer != self.node_id and peer in node.voters]
        if not others:
            return None
        target = max(others)[1]
        node.transfer_leadership(target)
        return target

    # ------------------------------------------------------------ state

    @property
    def leader(self) -> str | None:
        return self.node.leader

    @property
    def is_leader(self) -> bool:
        return self.node.role == LEADER

    @property
    def voters(self) -> tuple:
        return self.node.voters

    # ------------------------------------------------------------ outputs

    def process(self, send=None) -> Output:
        """Runs every Ready the core has (see the module docstring). send([(replica
        id, bytes), ...]), if given, takes a leader's messages before its fsync."""
        out = Output()
        while True:
            ready = self.node.ready()
            if not (ready.snapshot or ready.hard_state or ready.entries or ready.messages
                    or ready.committed or ready.read_states):
                break
            self._run(ready, out, send)
        self._serve_reads(out)
        return out

    def _run(self, ready, out: Output, send=None) -> None:
        if ready.snapshot is not None and ready.restore_snapshot:
            self.query(lambda store: store.restore(ready.snapshot.data))
            self._fail_pending_up_to(ready.snapshot.index, out)
        # A leader's appends may leave before its own fsync (Raft thesis 10.2.1):
        # it counts itself towards a commit only once an answer comes back, and
        # an answer is handled after this save returns (one thread). Anything
        # promising a term or a vote waits for the disk, as the Ready contract says.
        early = (send is not None and self.node.role == LEADER and ready.snapshot is None
                 and self.storage.keeps_vote(ready.hard_state))
        if early and ready.messages:
            send([(message.dst, encode(message)) for message in ready.messages])
        self.storage.save(ready)                       # fsync'd before anything else leaves
        if not early:
            out.messages.extend((m.dst, encode(m)) for m in ready.messages)
        if ready.committed:
            self._apply(ready.committed, out)
        for state in ready.read_states:
            token = self._read_tokens.pop(state.context, None)
            if token is not None:
                self._reads.append((state.index, token))
        applied = self.store.last_applied_index()
        if applied - self.storage.snapshot_index >= self.compact_every:
            self.node.compact(applied, self.query(ControlStore.snapshot))

    def _apply(self, entries: list, out: Output) -> None:
        commands = []
        for entry in entries:
            if entry.kind != NORMAL:
                commands.append(None)
                continue
            try:
                commands.append(command_codec.decode(entry.data))
            except command_codec.CommandCodecError as error:
                # Every replica decodes alike (decode is pure), so every one
                # skips the entry: the stores stay equal.
                commands.append(None)
                out.undecodable.append((entry.index, str(error)))
        results = self.query(lambda store: store.apply_batch(commands,
                                                             first_index=entries[0].index))
        for entry, result in zip(entries, results):
            pending = self._pending.pop(entry.index, None)
            if pending is None:
                continue
            term, token = pending
            if entry.term == term:
                out.results.append((token, result))
            else:
                out.dropped.append((token, f"a new leader (term {entry.term}) replaced the "
                                           f"write at log index {entry.index}"))

    def _fail_pending_up_to(self, index: int, out: Output) -> None:
        # A snapshot replaced our log: proposals it covers cannot be told apart
        # from others' entries any more, so their callers hear they are unknown.
        for pending_index in sorted(i for i in self._pending if i <= index):
            _, token = self._pending.pop(pending_index)
            out.dropped.append((token, "the replica was replaced by a snapshot; the write "
                                       "may or may not have been applied"))

    def _serve_reads(self, out: Output) -> None:
        if not self._reads:
            return
        applied = self.store.last_applied_index()
        waiting = []
        for index, token in self._reads:
            if index <= applied:
                out.reads.append(token)
            else:
                waiting.append((index, token))
        self._reads = waiting

    def close(self) -> None:
        self.store.close()
        self.storage.close()


__all__ = ["ControlReplica", "NotLeader", "Output", "ReplicaDamaged"]
