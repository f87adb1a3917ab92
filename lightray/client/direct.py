"""Direct task submission: a driver holding a lease on a worker sends it tasks itself.

    driver ──LEASE_REQUEST──▶ agent ──LEASE_GRANTED(worker)──▶ driver
    driver ──EXEC (any thread, under the client lock)──▶ stream socket <session>/<worker>.lease
    driver ◀──DIRECT_DONE (same connection, read by the I/O thread)── worker

Two messages per task instead of four through the agent: this is what makes a
``get(f.remote())`` loop fast. It is used only where it is simple to keep
exact: tasks of a driver whose arguments hold no ObjectRefs, one at a time per
lease (a task submitted while the lease is busy takes the agent's path, which
batches and pipelines far better anyway).

The agent knows nothing of a direct task's result until it *escapes* the
driver (passed to another task or put inside a value): then the driver first
REGISTERs it, with its payload, or as a promise fulfilled when the result
comes. A result the agent must hold anyway (in shared memory, or holding
refs) is registered by the worker itself (DIRECT_RESULT) before it answers.
A lease is given back when the agent has work waiting (LEASE_REVOKE), when the
driver has not used it for ``IDLE_RETURN`` seconds (lightray.client.leases), or when the driver leaves.
"""
from __future__ import annotations

import time

from .. import exceptions, serialization
from .. import task_spec as ts
from ..ids import return_ids
from ..serialization import ERROR
from ..transport import messages as m
from ..transport import stream
from ..transport.guard import RefusalLog
from ..worker.paths import lease_stream_path
from .leases import CANCELLED, RESUBMIT, LeaseBook, lost_task_outcome, retries_left


_refusals = RefusalLog("lightray")


class Lease:
    __slots__ = ("worker_id", "shape", "assignment", "stream", "sock", "out",
                 "inflight", "functions", "revoked", "last_used")

    def __init__(self, worker_id, shape, assignment, caller_stream):
        self.worker_id = worker_id
        self.shape = shape
        self.assignment = assignment       # (request, gpu ids) for the worker
        self.stream = caller_stream        # to the worker; read by the I/O thread only
        self.sock = caller_stream and caller_stream.sock
        self.out = caller_stream and caller_stream.out   # written under the client lock
        self.inflight = None               # spec of the task running there
        self.functions = set()             # function ids this worker has from us
        self.revoked = False
        self.last_used = time.monotonic()


class DirectSubmitter:
    """The driver side of direct submission; owned by a CoreClient."""

    def __init__(self, client):
        self.client = client
        self.book = LeaseBook(time.monotonic)   # the decisions; this class does the I/O
        self.by_socket: dict = {}          # stream socket -> Lease
        self.function_bytes: dict = {}     # function id -> bytes, for resubmission

    # ------------------------------------------------ user threads (lock held)

    def try_submit_locked(self, spec, function_id, function_bytes) -> bool:
        """Send spec straight to a leased worker; False if no lease is free."""
        lease = self.book.free_lease(spec[ts.RESOURCES])
        if lease is None:
            return False
        spec = ts.with_owner(spec, self.client.client_id)
        self.function_bytes[function_id] = function_bytes
        if function_id in lease.functions:
            function_bytes = None
        else:
            lease.functions.add(function_id)
        self.book.start(lease, spec)
        task_id = spec[ts.TASK_ID]
        self.client.ledger.add_unregistered(return_ids(task_id, spec[ts.NUM_RETURNS]))
        if lease.out.send(m.encode([(m.EXEC, spec, function_bytes, [], lease.assignment)])):
            self.client.want_writable_locked(lease.sock)
        return True

    def lease_request_ops(self, request: dict) -> list:
        """A LEASE_REQUEST op when this shape has no lease nor a recent request."""
        return [(m.LEASE_REQUEST, request)] if self.book.wants_lease(request) else []

    def cancel_ops(self, object_id: bytes, force: bool, recursive: bool = True) -> list:
        lease = self.book.lease_of_task(object_id[:-2])
        if lease is None:
            return []
        return [(m.DIRECT_CANCEL, lease.worker_id, object_id[:-2], force, recursive)]

    # ---------------------------------------------------------- I/O thread

    def on_granted(self, shape, worker_id, assignment) -> None:
        self.book.answered(shape)
        if worker_id is None:
            return
        client = self.client
        try:
            caller_stream = stream.connect(
                lease_stream_path(client.address, worker_id),
                stream.stream_key(client.node_info),
                m.encode([(m.DIRECT_HELLO, client.client_id)]),
                client.lock, client.want_writable_locked)
        except OSError:
            # It died meanwhile (the agent knows), or cannot be reached: give it
            # back (unless we are shutting down: then nobody needs it).
            try:
                client.send([(m.LEASE_RETURN, worker_id)])
            except exceptions.RuntimeNotRunningError:
                pass
            return
        lease = Lease(worker_id, shape, assignment, caller_stream)
        sock = caller_stream.sock
        with client.lock:
            self.book.add(lease)
            self.by_socket[sock] = lease
            client.add_reply_socket(sock, self.on_readable, self.on_writable)

    def on_writable(self, sock) -> bool:
        with self.client.lock:
            lease = self.by_socket.get(sock)
            return lease is not None and lease.out.flush()

    def on_readable(self, sock) -> None:
        lease = self.by_socket.get(sock)
        if lease is None:
            return
        try:
            answers = lease.stream.receive()
        except stream.HandshakeError as error:
            self._refused(lease, error)
            return
        if answers is None:
            # The worker is gone: the agent's WORKER_DIED settles its task.
            with self.client.lock:
                self.by_socket.pop(sock, None)
                self.client.retire_reply_socket(sock)
            return
        self._on_answers(answers)

    def _on_answers(self, answers) -> None:
        for ops in answers:
            for op in ops:
                if op[0] == m.DIRECT_DONE:
                    self._on_done(op[1], op[2], op[3], op[4])

    def _refused(self, lease, error) -> None:
        """The worker refused our proof of the key, or could not prove it: it
        got nothing from us (frames wait for the handshake). Its task goes
        the agent's way; the lease goes back."""
        _refusals.note(("handshake", str(error)), f"lightray driver: {error}; "
                       "tasks take the agent's path")
        with self.client.lock:
            spec = self.book.take_lost_task(lease)
            if spec is not None:
                self._resubmit_locked(spec)
            if self.book.by_worker.get(lease.worker_id) is lease:
                self.client.send_locked(self._return_locked(lease))

    def _on_done(self, task_id, payloads, registered, retryable) -> None:
        client = self.client
        with client.lock:
            finished = self.book.finish(task_id)
            if finished is None:
                return
            lease, spec = finished
            if retryable and retries_left(spec):
                self._resubmit_locked(spec)
                ops = []
                items = []
            else:
                ops, items = client.settle_locked(spec, payloads, registered)
            if lease.revoked:
                ops += self._return_locked(lease)
            if ops:
                client.send_locked(ops)
        if items:
            client.objects.on_ready(items)

    def _resubmit_locked(self, spec) -> None:
        """Run spec again through the agent (retries and worker deaths)."""
        task_id = spec[ts.TASK_ID]
        ids = return_ids(task_id, spec[ts.NUM_RETURNS])
        client = self.client
        gone_ops = client.ledger.resubmitted(ids)
        retried = ts.for_retry_through_agent(spec)
        ops = self.client.export_function(spec[ts.FUNCTION_ID],
                                          self.function_bytes[spec[ts.FUNCTION_ID]])
        ops.append((m.SUBMIT, retried))
        # The agent counts our refs on SUBMIT; drop those we no longer hold.
        ops += gone_ops
        client.send_locked(ops)

    def on_worker_died(self, worker_id, status, cancelled) -> None:
        client = self.client
        lease = self.book.by_worker.get(worker_id)
        if lease is not None and lease.sock in self.by_socket:
            # Its answer may wait in the socket, behind the agent's notice.
            while lease.inflight is not None and not lease.stream.handshaking:
                answers = lease.stream.receive()
                if not answers:
                    break
                self._on_answers(answers)
        items = []
        with client.lock:
            lease = self.book.by_worker.get(worker_id)
            if lease is None:
                return
            self._forget_lease_locked(lease)
            spec = self.book.take_lost_task(lease)
            if spec is not None:
                name = spec[ts.FUNCTION_NAME]
                outcome = lost_task_outcome(spec, cancelled)
                if outcome == CANCELLED:
                    error = exceptions.TaskCancelledError(
                        f"task {name}() was cancelled (force=True killed its worker)")
                elif outcome == RESUBMIT:
                    error = None
                    self._resubmit_locked(spec)
                else:
                    # (the agent's status says why, for a kill for memory)
                    crashed = (exceptions.OutOfMemoryError if ": out of memory: " in status
                               else exceptions.WorkerCrashedError)
                    error = crashed(
                        f"the worker running task {name}() died: {status}; "
                        f"no retries left (max_retries={spec[ts.MAX_RETRIES]})")
                if error is not None:
                    payload = (ERROR, serialization.dumps_exception(error))
                    ops, items = client.settle_locked(spec, [payload] * spec[ts.NUM_RETURNS], False)
                    if ops:
                        client.send_locked(ops)
        if items:
            client.objects.on_ready(items)

    def on_revoke(self, worker_id) -> None:
        client = self.client
        with client.lock:
            lease = self.book.by_worker.get(worker_id)
            if lease is None:
                return
            lease.revoked = True
            if lease.inflight is None:
                client.send_locked(self._return_locked(lease))

    def return_idle(self) -> None:
        """Give back leases unused for a while (called by the I/O thread)."""
        book = self.book
        if not book.by_worker:
            return
        client = self.client
        with client.lock:
            for lease in book.idle_leases():
                if not client.closed:
                    client.send_locked(self._return_locked(lease))

    def _return_locked(self, lease) -> list:
        self._forget_lease_locked(lease)
        return [(m.LEASE_RETURN, lease.worker_id)]

    def _forget_lease_locked(self, lease) -> None:
        self.book.forget(lease)
        self.by_socket.pop(lease.sock, None)
        self.client.retire_reply_socket(lease.sock)

    def close(self) -> None:
        """Forget every lease (the I/O thread has stopped; the client closes
        their sockets)."""
        for lease in list(self.book.by_worker.values()):
            self._forget_lease_locked(lease)
