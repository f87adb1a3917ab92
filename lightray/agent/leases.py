"""Lending workers to drivers for direct submission. Part of AgentState.

    LEASE_REQUEST ──▶ an idle worker and its resources are lent ──▶ LEASE_GRANTED
    work queued   ──▶ LEASE_REVOKE to lessees; LEASE_RETURN ──▶ worker idle again
    REGISTER / DIRECT_RESULT ──▶ a direct task's result enters the object table

``LeaseLending`` is a mixin of ``AgentState`` (lightray.agent.state); see
lightray.client.direct for the driver's side.
"""
from __future__ import annotations

from .records import ClientEntry, ObjectEntry
from ..resources import shape_of
from ..serialization import SHARED
from ..states import BLOCKED, IDLE, LEASED
from ..transport import messages as m



class LeaseLending:

    def _on_lease_request(self, client: ClientEntry, request: dict) -> None:
        if self.needs_schedule:
            self.schedule()   # work already submitted is placed before we lend
        shape = shape_of(request)
        worker = None
        if not self.queues and self.pool.unsatisfiable(request) is None:
            worker = self._idle_started_worker()
        allocation = self.pool.try_acquire(request) if worker is not None else None
        if allocation is None:
            if worker is not None:
                self.idle_workers.append(worker)
            self.outbox[client.identity].append((m.LEASE_GRANTED, shape, None, None))
            return
        worker.state = LEASED
        worker.allocation = allocation
        worker.shape = shape
        worker.lessee = client.client_id
        worker.revoke_sent = False
        worker.cancel_requested = False
        client.leases.add(worker.worker_id)
        self.outbox[client.identity].append(
            (m.LEASE_GRANTED, shape, worker.worker_id, (request, allocation.gpu_ids)))

    def _idle_started_worker(self):
        while self.idle_workers:
            worker = self.idle_workers.pop()
            if worker.state == IDLE and worker.started:
                return worker
        return None

    def _on_lease_return(self, client: ClientEntry, worker_id: str) -> None:
        client.leases.discard(worker_id)
        worker = self.workers.get(worker_id)
        if worker is None or worker.lessee != client.client_id:
            return
        worker.lessee = None
        worker.revoke_sent = False
        if worker.state == BLOCKED and worker.allocation is not None:
            self.pool.reacquire_cpu(worker.allocation)
        self._make_idle(worker)
        self.needs_schedule = True

    def _on_register(self, client: ClientEntry, object_id: bytes, payload, contained) -> None:
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

    def _on_direct_result(self, owner: bytes, object_id: bytes, payload, contained) -> None:
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
            self.free_segments.append(payload[1][0])

    def _on_direct_cancel(self, client: ClientEntry, worker_id: str, task_id: bytes,
                          force: bool) -> None:
        worker = self.workers.get(worker_id)
        if worker is None or worker.lessee != client.client_id:
            return
        if force:
            worker.cancel_requested = True
            if worker.pid:
                self.kill.append(worker.pid)
        else:
            self.outbox[worker_id.encode() + b"r"].append((m.CANCEL_TASK, task_id))
