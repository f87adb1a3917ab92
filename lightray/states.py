"""Names of the states tasks, workers, objects and actors go through inside an
agent, and ``Transitions``: the one way the agent changes a task's, an
object's or an actor's state, recording why.

Task:   WAITING (for arguments) -> QUEUED (for resources) -> DISPATCHED (on a
        worker's queue) or FORWARDED (to a peer agent) -> FINISHED.
Worker: STARTING (forked, no hello yet) -> IDLE <-> LEASED (running tasks or lent
        to a driver) <-> BLOCKED (its task waits in get) ... -> DEAD;
        or ACTOR (forked for one actor, runs nothing else) -> DEAD.
Object (ObjectEntry.spill; lightray.agent.store): IN_MEMORY (None) -> SPILLING
        -> SPILLED -> RESTORING -> IN_MEMORY; or REMOTE (the primary copy is on
        another node) -> PULLING -> IN_MEMORY (a copy) -> REMOTE (copy dropped).
Actor:  PENDING (constructor not run yet) -> ALIVE <-> RESTARTING -> DEAD.

Each change made through ``Transitions`` is kept (time, kind, id, old, new,
reason) in a bounded history and logged at DEBUG on the "lightray.agent"
logger, e.g. "task 3f2a9c01: queued -> dispatched (worker n1w00002)".

Imports nothing from lightray: every layer may use it.
"""
from __future__ import annotations

import collections
import logging
import time

# ------------------------------------------------------------------ tasks
WAITING, QUEUED, DISPATCHED, FINISHED = "waiting", "queued", "dispatched", "finished"
FORWARDED = "forwarded"     # sent to a peer agent (lightray.agent.cluster.membership)

# ---------------------------------------------------------------- workers
STARTING, IDLE, LEASED, BLOCKED, DEAD = "starting", "idle", "leased", "blocked", "dead"
ACTOR = "actor"

# ---------------------------------------------------------------- objects
IN_MEMORY = None            # ObjectEntry.spill of an object whose bytes are here
SPILLING, SPILLED, RESTORING = "spilling", "spilled", "restoring"
REMOTE, PULLING = "remote", "pulling"   # (lightray.agent.cluster) held by another node
NOT_IN_MEMORY = (SPILLED, RESTORING, REMOTE, PULLING)   # the bytes are not in this node's memory

# ----------------------------------------------------------------- actors
# (the control store's ACTOR_* names, lightray.store.control.commands, are these)
PENDING, ALIVE, RESTARTING = "pending", "alive", "restarting"   # and DEAD
ACTOR_STATES = (PENDING, ALIVE, RESTARTING, DEAD)

# ------------------------------------------------------------ transitions
HISTORY = 2000              # state changes kept per agent

_log = logging.getLogger("lightray.agent")
_DEBUG = logging.DEBUG


class Transitions:
    """Sets states and remembers why. ``history`` holds the last HISTORY
    changes as (monotonic time, kind, id, old, new, reason); reason is a
    short text (or a tuple of texts, joined only when logged)."""

    __slots__ = ("history", "on_actor")

    def __init__(self, maxlen: int = HISTORY):
        self.history: collections.deque = collections.deque(maxlen=maxlen)
        self.on_actor = None   # called (actor, old, new, reason) at each actor change

    def task(self, task, new: str, reason) -> None:
        """Task or actor constructor task (anything with .task_id and .state)."""
        old = task.state
        task.state = new
        self._record("task", task.task_id, old, new, reason)

    def actor(self, actor, new: str, reason) -> None:
        old = actor.state
        actor.state = new
        self._record("actor", actor.actor_id, old, new, reason)
        if self.on_actor is not None:
            self.on_actor(actor, old, new, reason)

    def object(self, object_id: bytes, entry, new, reason) -> None:
        """An object's spill state (IN_MEMORY is None)."""
        old = entry.spill
        entry.spill = new
        self._record("object", object_id, old, new, reason)

    def _record(self, kind: str, ident: bytes, old, new, reason) -> None:
        self.history.append((time.monotonic(), kind, ident, old, new, reason))
        if _log.isEnabledFor(_DEBUG):
            _log_change(kind, ident, old, new, reason)

    def of(self, ident: bytes) -> list:
        """The recorded changes of one task, object or actor, oldest first."""
        return [change for change in self.history if change[2] == ident]


def _log_change(kind: str, ident: bytes, old, new, reason) -> None:
    if type(reason) is tuple:
        reason = " ".join(str(part) for part in reason)
    if kind == "object":     # an object's spill state None means in memory
        old, new = old or "in memory", new or "in memory"
    _log.debug("%s %s: %s -> %s (%s)", kind, ident.hex()[:8], old, new, reason)
