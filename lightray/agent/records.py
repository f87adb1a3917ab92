"""The agent's entry classes: what the parts of AgentState share.

    Task         a submitted task (or an actor's constructor) until it finishes
    ClientEntry  a connected process: a driver or a worker
    WorkerEntry  a worker process forked by this agent
    ObjectEntry  an object of the object table (refs, payload, spill state)
    ActorEntry   an actor owned, run or called here

Plain ``__slots__`` classes, no behaviour; the parts in lightray.agent
import these, never lightray.agent.state. State names are in lightray.states.
"""
from __future__ import annotations

import collections

from .. import task_spec as ts
from ..resources import shape_of
from ..states import PENDING, STARTING, WAITING


class Task:
    __slots__ = ("spec", "task_id", "request", "shape", "owner", "state", "missing_deps",
                 "retries_left", "worker", "cancelled", "force_cancelled", "actor",
                 "origin", "node")

    def __init__(self, spec: tuple, owner: bytes):
        self.spec = spec
        self.task_id = spec[ts.TASK_ID]
        self.request = spec[ts.RESOURCES]
        self.shape = shape_of(self.request)
        self.owner = owner
        self.state = WAITING
        self.missing_deps = 0
        self.retries_left = spec[ts.MAX_RETRIES] - spec[ts.ATTEMPTS_MADE]
        self.worker = None
        self.cancelled = False
        self.force_cancelled = False
        self.actor = None                  # ActorEntry: this task runs an actor's constructor
        self.origin = None                 # the peer that forwarded it to us
        self.node = None                   # the peer we forwarded it to


class ClientEntry:
    __slots__ = ("client_id", "identity", "kind", "pid", "held", "worker", "leases", "reserved",
                 "writing")

    def __init__(self, client_id: bytes, kind: str, pid: int, worker):
        self.client_id = client_id
        self.identity = client_id + b"r"   # its receive socket
        self.kind = kind
        self.pid = pid
        self.held = set()                  # object ids this process counts as held
        self.worker = worker
        self.leases = set()                # worker ids lent to it
        self.reserved = 0                  # store bytes granted to it, not yet written
        self.writing = {}                  # object id -> size: segments granted, not yet sealed


class WorkerEntry:
    __slots__ = ("worker_id", "pid", "state", "allocation", "shape", "queue", "functions",
                 "started", "steal_asked", "lessee", "revoke_sent", "cancel_requested",
                 "actor")

    def __init__(self, worker_id: str):
        self.worker_id = worker_id
        self.pid = 0
        self.state = STARTING
        self.allocation = None
        self.shape = None
        self.queue = collections.deque()   # Tasks: running first, then pipelined
        self.functions = set()             # function ids this worker has loaded
        self.started = False               # said hello: EXECs can be sent
        self.steal_asked = False           # STEAL sent, RETURNED not yet seen
        self.lessee = None                 # client id holding a direct lease on it
        self.revoke_sent = False
        self.cancel_requested = False      # its lessee force-cancelled the running task
        self.actor = None                  # ActorEntry: this worker runs only that actor


class ObjectEntry:
    __slots__ = ("refs", "payload", "pending", "owner", "subscribers", "waiting_tasks",
                 "contained", "call_site", "spill", "spill_path", "spill_cancelled",
                 "restore_waiters", "restore_queued", "spill_seq", "location", "remote_name",
                 "copies", "pinned_for")

    def __init__(self, refs: int, payload=None, owner: bytes = b""):
        self.refs = refs                  # holder processes + pins
        self.payload = payload            # (kind, data) once ready
        self.pending = payload is None    # a task will still produce it
        self.owner = owner                # client that gets it pushed when ready
        self.subscribers = None           # other clients waiting for it
        self.waiting_tasks = None         # tasks waiting for it as an argument
        self.contained = ()               # ids pinned by this object's value
        self.call_site = None             # where the user created it ("file.py:12")
        self.spill = None                 # lightray.states: None (IN_MEMORY), SPILLED, ...
        self.spill_path = None
        self.spill_cancelled = False
        self.restore_waiters = None       # (identity, request id) answered when restored
        self.restore_queued = False
        self.spill_seq = None             # its place in the order objects were spilled
        # In a cluster (lightray.agent.cluster.membership):
        self.location = None              # node holding the primary copy, if not this one
        self.remote_name = None           # its segment's name there
        self.copies = None                # nodes this owner told about it (FREE them)
        self.pinned_for = None            # peers that pin it here (each one FREEs once)


class ActorEntry:
    __slots__ = ("actor_id", "spec", "description", "owner", "state", "worker",
                 "incarnation", "restarts_left", "death", "subscribers", "name_key",
                 "allocation", "name_pinned", "home", "origin", "tcp_address",
                 "peer_subscribers", "borrowed", "unknown_from")

    def __init__(self, spec: tuple, description: dict, owner: bytes):
        self.actor_id = spec[ts.TASK_ID]
        self.spec = spec                  # the constructor call, run again on restart
        self.description = description   # class name, methods, options (lightray.actor)
        self.owner = owner
        self.state = PENDING
        self.worker = None
        self.incarnation = 0
        self.restarts_left = spec[ts.MAX_RETRIES]
        self.death = None                 # ERROR payload once DEAD
        self.subscribers = set()          # receive identities
        self.name_key = None              # (namespace, name)
        self.allocation = None            # held resources, kept across restarts
        self.name_pinned = False          # the name holds the handle object
        # Across nodes (lightray.agent.cluster.remote_actors):
        self.home = None                  # node running it, when that is another one
        self.origin = None                # node that placed it here (and owns it)
        self.tcp_address = None           # where callers on other nodes reach it
        self.peer_subscribers = None      # nodes told of every change
        self.borrowed = False             # known here only to call it (no ownership)
        self.unknown_from = None          # peers that may still answer who has it

    @classmethod
    def proxy(cls, actor_id: bytes) -> "ActorEntry":
        """An entry for an actor running elsewhere that we only call."""
        spec = (actor_id, None, "?", None, [], [], 0, {}, 0, False, None, 0, None)
        return cls(spec, {"class_name": "actor", "detached": False, "held": {}}, b"")
