"""The driver's leases on workers, as pure bookkeeping (lightray.client.direct is the glue).

    LEASE_REQUEST? ◀── wants_lease(request)         a shape with no lease, not asked lately
    which lease?   ◀── free_lease(request)           none busy, none revoked: else the agent's path
    give back?     ◀── idle_leases()                  unused for IDLE_RETURN s , or revoked
    a lost task    ◀── lost_task_outcome(spec, ...)   fail (cancelled / no retries) or resubmit

No sockets; the clock is passed in (time.monotonic in the client, a fake
one in tests). The caller holds the client's lock.
"""
from __future__ import annotations

from .. import task_spec as ts
from ..resources import shape_of

IDLE_RETURN = 0.05         # seconds an unused lease is kept
RETRY_REQUEST = 0.02       # seconds before asking again after a refusal

RESUBMIT, CANCELLED, CRASHED = "resubmit", "cancelled", "crashed"


class LeaseBook:
    """Which leases this driver holds, which task runs on each, what it asked for."""

    __slots__ = ("leases", "by_worker", "requested", "inflight_tasks", "clock")

    def __init__(self, clock):
        self.clock = clock                 # () -> seconds, monotonic
        self.leases: dict = {}             # shape -> lease
        self.by_worker: dict = {}          # worker id -> lease
        self.requested: dict = {}          # shape -> time of the request
        self.inflight_tasks: dict = {}     # task id -> lease

    def wants_lease(self, request: dict) -> bool:
        """Whether to ask for a lease for this resource request (and remember asking)."""
        shape = shape_of(request)
        if shape in self.leases:
            return False
        asked = self.requested.get(shape)
        now = self.clock()
        if asked is not None and now - asked < RETRY_REQUEST:
            return False
        self.requested[shape] = now
        return True

    def answered(self, shape) -> None:
        """The agent answered our request for shape (granted or refused)."""
        self.requested.pop(shape, None)

    def free_lease(self, request: dict):
        """The lease a task with this resource request may go to now, or None."""
        lease = self.leases.get(shape_of(request))
        if lease is None or lease.inflight is not None or lease.revoked:
            return None
        return lease

    def add(self, lease) -> None:
        self.leases[lease.shape] = lease
        self.by_worker[lease.worker_id] = lease

    def start(self, lease, spec) -> None:
        """spec now runs on lease."""
        lease.inflight = spec
        lease.last_used = self.clock()
        self.inflight_tasks[spec[ts.TASK_ID]] = lease

    def finish(self, task_id: bytes):
        """(lease, spec) of a task that answered, or None if it is not ours (any more)."""
        lease = self.inflight_tasks.pop(task_id, None)
        if lease is None:
            return None
        spec, lease.inflight = lease.inflight, None
        lease.last_used = self.clock()
        return lease, spec

    def lease_of_task(self, task_id: bytes):
        return self.inflight_tasks.get(task_id)

    def forget(self, lease) -> None:
        """lease is given back or its worker is gone."""
        self.by_worker.pop(lease.worker_id, None)
        if self.leases.get(lease.shape) is lease:
            del self.leases[lease.shape]

    def take_lost_task(self, lease):
        """The spec that was running on a lease whose worker died, or None."""
        spec, lease.inflight = lease.inflight, None
        if spec is not None:
            self.inflight_tasks.pop(spec[ts.TASK_ID], None)
        return spec

    def idle_leases(self) -> list:
        """Leases to give back: nothing running and revoked or unused lately."""
        now = self.clock()
        return [lease for lease in self.by_worker.values()
                if lease.inflight is None
                and (lease.revoked or now - lease.last_used > IDLE_RETURN)]


def retries_left(spec) -> bool:
    return spec[ts.MAX_RETRIES] > spec[ts.ATTEMPTS_MADE]


def lost_task_outcome(spec, cancelled: bool) -> str:
    """What becomes of a task whose leased worker died: CANCELLED (force
    cancel killed it), RESUBMIT (retries left) or CRASHED."""
    if cancelled:
        return CANCELLED
    if retries_left(spec):
        return RESUBMIT
    return CRASHED
