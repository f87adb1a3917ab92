"""Lending workers to drivers for direct submission. Part of AgentState.

    LEASE_REQUEST ──▶ an idle worker and its resources are lent ──▶ LEASE_GRANTED
    work queued   ──▶ LEASE_REVOKE to lessees; LEASE_RETURN ──▶ worker idle again
    REGISTER / DIRECT_RESULT ──▶ a direct task's result enters the object table

``LeaseBook`` is a part of ``AgentState`` (lightray.agent.state, its
``leases`` field): it works on the tables and the Effects it is given, and
calls back into the state only through the three functions passed to it
(schedule, make_idle, set_ready). See lightray.client.direct for the
driver's side.
"""
from __future__ import annotations

from .records import ClientEntry, ObjectEntry
from ..resources import shape_of
from ..serialization import SHARED
from ..states import BLOCKED, IDLE, LEASED
from ..transport import messages as m



class LeaseBook:
    __slots__ = ("effects", "pool", "workers", "idle_workers", "queues", "clients", "objects",
                 "early_decs", "_schedule_if_needed", "_make_idle", "_set_ready")

    def __init__(self, effects, pool, *, workers: dict, idle_workers: list, queues: dict,
                 clients: dict, objects: dict, early_decs: dict,
                 schedule_if_needed, make_idle, set_ready):
        self.effects = effects           # lightray.agent.effects.Effects
        self.pool = pool                 # the node's ResourcePool
        self.workers = workers           # worker id -> WorkerEntry
        self.idle_workers = idle_workers
        self.queues = queues             # shape -> queued tasks (lending waits while any)
        self.clients = clients
        self.objects = objects           # the object table
        self.early_decs = early_decs     # client id -> ids DECed before we knew them
        self._schedule_if_needed = schedule_if_needed
        self._make_idle = make_idle      # (worker): its lease ends, it takes work again
        self._set_ready = set_ready      # (object id, entry, payload, contained, push_owner)

    def on_request(self, client: ClientEntry, request: dict) -> None:
        self._schedule_if_needed()   # work already submitted is placed before we lend
        shape = shape_of(request)
        worker = None
        if not self.queues and self.pool.unsatisfiable(request) is None:
            worker = self._idle_started_worker()
        allocation = self.pool.try_acquire(request) if worker is not None else None
        if allocation is None:
            if worker is not None:
                self.idle_workers.append(worker)
            self.effects.outbox[client.identity].append((m.LEASE_GRANTED, shape, None, None))
            return
        worker.state = LEASED
        worker.allocation = allocation
        worker.shape = shape
        worker.lessee = client.client_id
        worker.revoke_sent = False
        worker.cancel_requested = False
        client.leases.add(worker.worker_id)
        self.effects.outbox[client.identity].append(
            (m.LEASE_GRANTED, shape, worker.worker_id, (request, allocation.gpu_ids)))

    def _idle_started_worker(self):
        while self.idle_workers:
            worker = self.idle_workers.pop()
            if worker.state == IDLE and worker.started:
                return worker
        return None

    def on_return(self, client: ClientEntry, worker_id: str) -> None:
        client.leases.discard(worker_id)
        worker = self.workers.get(worker_id)
        if worker is None or worker.lessee != client.client_id:
            return
        worker.lessee = None
        worker.revoke_sent = False
        if worker.state == BLOCKED and worker.allocation is not None:
            self.pool.reacquire_cpu(worker.allocation)
        self._make_idle(worker)
        self.effects.needs_schedule = True

    def on_register(self, client: ClientEntry, object_id: bytes, payload, contained) -> None:
        """A direct result escapes its owner: promise it (payload None) or fulfil it."""
        entry = self.objects.get(object_id)
        if entry is None:
            entry = self.objects[object_id] = ObjectEntry(1, owner=client.client_id)
            client.held.add(object_id)
        elif object_id not in client.held:
            # Another process that got the ref from us (an actor call's
            # argument) counted it first: its messages take another path.
            entry.refs += 1
            entry.owner = client.client_id
            client.held.add(object_id)
        if payload is not None and entry.pending:
            self._set_ready(object_id, entry, payload, contained, push_owner=False)

    def on_direct_result(self, owner: bytes, object_id: bytes, payload, contained) -> None:
        client = self.clients.get(owner)
        entry = self.objects.get(object_id)
        if entry is None:
            early = self.early_decs.get(owner)
            dropped = early is not None and object_id in early
            if dropped:
                early.discard(object_id)
            if client is None or dropped:
                entry = self.objects[object_id] = ObjectEntry(0, owner=owner)
            else:
                entry = self.objects[object_id] = ObjectEntry(1, owner=owner)
                client.held.add(object_id)
        if entry.pending:
            self._set_ready(object_id, entry, payload, contained, push_owner=False)
        elif payload[0] == SHARED:
            self.effects.free_segments.append(payload[1][0])

    def on_direct_cancel(self, client: ClientEntry, worker_id: str, task_id: bytes,
                          force: bool) -> None:
        worker = self.workers.get(worker_id)
        if worker is None or worker.lessee != client.client_id:
            return
        if force:
            worker.cancel_requested = True
            if worker.pid:
                self.effects.kill.append(worker.pid)
        else:
            self.effects.outbox[worker_id.encode() + b"r"].append((m.CANCEL_TASK, task_id))
