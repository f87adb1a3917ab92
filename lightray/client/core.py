"""CoreClient: the one connection of a process (driver or worker) to its node agent.

    user threads ──send(ops)──▶ [lock] ledger's INC/DEC + ops ──▶ AgentConnection ──▶ agent
    get/wait/futures ◀── ObjectTable ◀── handle(ops) ◀── I/O thread ◀──┘ READY, EXEC, ...

Thin glue over its parts, each in its own module:

* lightray.client.connection: the sockets and the I/O thread;
* lightray.client.ledger: reference counting (INC/DEC, escape, promise);
* lightray.client.objects: ready values, futures and callbacks, segments;
* lightray.client.direct / actor_caller: tasks and actor calls sent
  straight to a leased worker or an actor's worker.

Everything a process says to its agent goes through one send socket, in
order, under ``lock``, with the ledger's INC/DEC in front of it: the agent
relies on that order for reference counting (a worker's "I hold this ref"
always arrives before its "task done"). A quiet process's INC/DEC are sent
by the I/O thread within a poll interval.

Submissions through the agent are held back and sent as one frame per
burst: a SUBMIT (with the INC/DEC due before it) joins a held list, and the
first one of a burst wakes the I/O thread (one byte on a socket pair), which
sends the list once it runs; anything else sent to the agent, any ref
escaping to another channel, a get/wait and every SUBMIT_BURST ops send it
first. Order is kept: held ops always go out ahead of what follows them.
"""
from __future__ import annotations

import concurrent.futures
import itertools
import os
import socket

from .. import exceptions, serialization
from .. import task_spec as ts
from ..call_site import user_call_site
from ..config import direct_submit, inline_threshold
from ..ids import IdMaker, return_ids
from ..object_ref import ObjectRef
from ..serialization import INLINE, SHARED
from ..store import shm
from ..transport import messages as m
from .actor_caller import ActorCaller
from .kv_backend import KVBackend
from .connection import AgentConnection
from .direct import DirectSubmitter
from .ledger import RefLedger
from .objects import ObjectTable


SUBMIT_BURST = 256   # held ops sent at once when this many wait


class CoreClient:
    """Connection of one process to its agent; see the module docstring."""

    def __init__(self, address: str, *, kind: str = "driver", worker_id: str = "",
                 agent_alive=None, parent_pid: int = 0, start: bool = True):
        self.kind = kind                          # "driver" or "worker"
        self.worker_id = worker_id
        self.address = address
        self.ids = IdMaker()
        # A worker's id is known to the agent before it connects, so the
        # agent can address it; drivers pick a random one.
        self.client_id = (worker_id or self.ids.task_id()[:8].hex()).encode()
        self.connection = AgentConnection(address, self.client_id, agent_alive=agent_alive,
                                          parent_pid=parent_pid)
        self.lock = self.connection.lock          # send socket + the ledger
        self._held: list = []                     # ops not sent yet (submissions), in order
        self.ledger = RefLedger(on_last_ref=self._forget)   # changed under lock
        self.pending_decs = self.ledger.pending_decs  # filled by ObjectRef.__del__
        self.objects = ObjectTable(self.ledger, send=self.send, send_locked=self.send_locked,
                                   restore=self.restore,
                                   in_io_thread=self.connection.in_io_thread)
        self._info_ids = itertools.count(1)
        self._info_futures: dict = {}
        self._exported: set = set()
        self.actors = None                        # ActorCaller, made on first use
        self._kv = None                           # KVBackend, made on first use

        # Worker-only hooks, installed by lightray.worker.tasks.TaskRunner.
        self.on_exec = None
        self.on_cancel = None
        self.on_steal = None
        self.on_block = None      # the running task is about to wait in get/wait
        self.on_unblock = None

        hello = (m.HELLO, self.client_id, self.kind, os.getpid(), self.worker_id)
        self.node_info, self._early_ops = self.connection.handshake(hello)
        self._wake, self._waker = socket.socketpair()
        self._wake.setblocking(False)
        self._waker.setblocking(False)
        with self.lock:
            self.connection.add_reply_socket(self._wake, self._on_wake)
        self.direct = None
        if kind == "driver" and direct_submit():
            self.direct = DirectSubmitter(self)
        if start:
            self.start()

    def start(self) -> None:
        """Start the I/O thread (a worker first installs its EXEC hooks)."""
        early, self._early_ops = self._early_ops, []
        self._handle(early)
        direct = self.direct
        self.connection.start(self._handle, self._flush_if_dirty,
                              direct.return_idle if direct is not None else None,
                              self._mark_dead)

    @property
    def closed(self) -> bool:
        return self.connection.closed

    @property
    def dead_reason(self) -> str:
        return self.connection.dead_reason

    @property
    def zmq_context(self):
        """The ZeroMQ context of this process's sockets (for inproc sockets of its own)."""
        return self.connection.context

    # ---------------------------------------------------------- ref counting

    def add_local_ref(self, object_id: bytes, owned: bool) -> None:
        with self.lock:
            self.ledger.add(object_id, owned)

    def _forget(self, object_id: bytes) -> None:
        """The ledger saw the last local ref to object_id go (under lock)."""
        self.objects.forget(object_id)

    # --------------------------------------------------------------- sending

    def send(self, ops: list, escaping=()) -> None:
        """Send ops to the agent; escaping: ids inside them it must know first."""
        with self.lock:
            if escaping and self.ledger.unregistered:
                ops = self.escape_ops_locked(escaping) + ops
            self.send_locked(ops)

    def send_locked(self, ops: list) -> None:
        """Send ops, after the held ops and the INC/DEC due (caller holds lock)."""
        connection = self.connection
        if connection.closed:
            self._raise_closed()
        ledger = self.ledger
        if ledger.dirty:
            ops = ledger.take_ops() + ops
        if self._held:
            ops = self._held + ops
            self._held = []
        if ops:
            connection.send_frame_locked(m.encode(ops))

    def _raise_closed(self):
        reason = self.connection.dead_reason
        raise exceptions.RuntimeNotRunningError(
            "lightray is not running (shutdown() was called or the agent died"
            + (f": {reason}" if reason else "") + ")")

    def _hold_locked(self, ops: list) -> None:
        """Send ops with the next frame (caller holds lock): as send_locked,
        but a burst of them goes out as one frame."""
        if self.connection.closed:
            self._raise_closed()
        ledger = self.ledger
        if ledger.dirty:
            ops = ledger.take_ops() + ops
        held = self._held
        first = not held
        held += ops
        if len(held) >= SUBMIT_BURST:
            self.send_locked([])
        elif first:
            try:
                self._waker.send(b"w")
            except OSError:   # full: the I/O thread has wakes to read already
                pass

    def flush_held(self) -> None:
        """Send the held ops now (before blocking on their results)."""
        if self._held:
            with self.lock:
                if self._held and not self.connection.closed:
                    self.send_locked([])

    def _on_wake(self, sock) -> None:
        """The I/O thread: a burst of submissions began; send what is held."""
        try:
            while sock.recv(4096):
                pass
        except OSError:
            pass
        self.flush_held()

    def flush(self) -> None:
        with self.lock:
            if not self.connection.closed and self.ledger.dirty:
                self.send_locked([])

    def _flush_if_dirty(self) -> None:
        if self.ledger.dirty:
            self.flush()

    # ------------------------------------------------- results known only here

    def escape_ops_locked(self, object_ids) -> list:
        """REGISTER ops for results known only here that other processes are
        about to see (passed to a task, put inside a value): with their value,
        or as a promise fulfilled when it comes (caller holds lock). Held
        submissions go first: the ids may travel on another channel."""
        if self._held:
            self.send_locked([])
        return self.ledger.escape(object_ids, self.objects.ready)

    def settle_locked(self, spec, payloads, registered):
        """(ops to send, ready items) for a task answered to us directly
        (a leased worker's or an actor's); caller holds lock."""
        return self.ledger.settle(return_ids(spec[ts.TASK_ID], spec[ts.NUM_RETURNS]),
                                  payloads, registered)

    # ------------------------------------------------------ direct replies

    def add_reply_socket(self, socket, on_readable, on_writable=None) -> None:
        """Have the I/O thread call on_readable(socket) when socket has input
        (ZeroMQ socket or plain socket; caller holds lock)."""
        self.connection.add_reply_socket(socket, on_readable, on_writable)

    def want_writable_locked(self, socket) -> None:
        """Have the I/O thread call on_writable(socket) once socket can take more."""
        self.connection.want_writable_locked(socket)

    def retire_reply_socket(self, socket) -> None:
        """Stop reading socket; the I/O thread closes it (under lock)."""
        self.connection.retire_reply_socket(socket)

    # ----------------------------------------------------------- submission

    def export_function(self, function_id: bytes, function_bytes: bytes) -> list:
        """The EXPORT op for a function this client has not sent yet, or []."""
        if function_id in self._exported:
            return []
        self._exported.add(function_id)
        return [(m.EXPORT, function_id, function_bytes)]

    def submit(self, spec: tuple, function_id: bytes, function_bytes: bytes) -> list:
        """Submit a task; returns its return refs (counted by the agent on SUBMIT,
        or known only here until they escape when the task goes direct)."""
        task_id = spec[ts.TASK_ID]
        refs = [ObjectRef(i, self, owned=True) for i in return_ids(task_id, spec[ts.NUM_RETURNS])]
        direct = self.direct
        escaping = spec[ts.DEPS] + spec[ts.CONTAINED]
        with self.lock:
            if direct is not None and not escaping and spec[ts.STRATEGY] is None \
                    and direct.try_submit_locked(
                    spec, function_id, function_bytes):
                return refs
            ops = self.export_function(function_id, function_bytes)
            if escaping and self.ledger.unregistered:
                ops = self.escape_ops_locked(escaping) + ops
            ops.append((m.SUBMIT, spec, user_call_site()))
            if direct is not None:
                # After the SUBMIT: queued work comes before lending a worker.
                ops += direct.lease_request_ops(spec[ts.RESOURCES])
            self._hold_locked(ops)
        return refs

    def put_serialized(self, value: serialization.Serialized) -> ObjectRef:
        object_id = self.ids.task_id() + b"\x00\x00"
        payload = self.make_payload(value, object_id)
        ref = ObjectRef(object_id, self, owned=True)
        self.objects.store(object_id, payload)
        with self.lock:
            ops = self.escape_ops_locked(value.contained)
            ops.append((m.PUT, object_id, payload, value.contained, user_call_site()))
            self.send_locked(ops)
        return ref

    def make_payload(self, value: serialization.Serialized, object_id: bytes):
        """The payload of a value: inline when small, else a new segment,
        written once the agent has granted room for it (it may wait while
        the agent spills: back-pressure)."""
        if value.size < _inline_threshold():
            if value.buffers:
                # Rare: small out-of-band buffers; put everything in band.
                inband = serialization.deserialize(value.inband, value.buffers)
                return (INLINE, serialization.serialize_inline(inband).inband)
            return (INLINE, value.inband)
        buffers = [b.raw() for b in value.buffers]
        size = shm.plan_layout(len(value.inband), [b.nbytes for b in buffers])[0]
        self.reserve(size, object_id)
        name = f"{self.node_info['segment_prefix']}{object_id.hex()}"
        try:
            return (SHARED, shm.create_segment(name, value.inband, buffers))
        except BaseException:
            self.send([(m.RESERVE, 0, -size, object_id)])   # give the room back
            raise

    def reserve(self, size: int, object_id: bytes) -> None:
        """Wait until the agent grants size bytes of the store to this process,
        for the segment of object_id (which it unlinks if we die unsealed)."""
        reply = self.request(lambda request_id: [(m.RESERVE, request_id, size, object_id)], None,
                             "room in the object store")
        if reply[0] != "ok":
            raise exceptions.ObjectStoreFullError(reply[1])

    def restore(self, object_id: bytes):
        """The payload of an object whose segment was spilled (or lost), once it is back."""
        reply = self.request(lambda request_id: [(m.RESTORE, request_id, object_id)], None,
                             "a spilled object")
        if reply[0] != "ok":
            raise serialization.deserialize(reply[1])
        return reply[1]      # the payload: SHARED, or another kind if it was made again

    def attach(self, object_id: bytes, layout):
        """Map a segment (bringing it back first if it was spilled)."""
        return self.objects.attach(object_id, layout)

    # ------------------------------------------------------------ receiving

    def _mark_dead(self, reason: str) -> None:
        connection = self.connection
        connection.dead_reason = reason
        connection.closed = True
        error = exceptions.RuntimeNotRunningError(f"lightray stopped: {reason}")
        self.objects.fail_all(error)
        for future in list(self._info_futures.values()):
            if not future.done():
                future.set_exception(error)

    def _handle(self, ops: list) -> None:
        """The agent's ops (I/O thread)."""
        for op in ops:
            kind = op[0]
            if kind == m.READY:
                self.objects.on_ready(op[1])
            elif kind == m.EXEC or kind == m.ACTOR_START:
                self.on_exec(op)
            elif kind == m.CANCEL_TASK:
                self.on_cancel(op[1])
            elif kind == m.STEAL:
                self.on_steal()
            elif kind == m.LEASE_GRANTED:
                self.direct.on_granted(op[1], op[2], op[3])
            elif kind == m.LEASE_REVOKE:
                self.direct.on_revoke(op[1])
            elif kind == m.WORKER_DIED:
                self.direct.on_worker_died(op[1], op[2], op[3])
            elif kind == m.SPILLED:
                self.objects.drop_mappings(op[1])
            elif kind == m.ACTOR_STATE:
                self.actor_caller().on_actor_state(op[1], op[2], op[3], op[4], op[5])
            elif kind == m.INFO_REPLY:
                future = self._info_futures.pop(op[1], None)
                if future is not None:
                    future.set_result(op[2])

    # ------------------------------------------------------ get / wait / futures

    def wait_ready(self, object_ids: list, num_ready: int, timeout) -> None:
        """Block until num_ready of object_ids are ready, or timeout passes."""
        objects = self.objects
        missing = objects.subscribe_missing(object_ids)
        if len(object_ids) - len(missing) >= num_ready:
            return
        self.flush_held()
        blocked = self.kind == "worker" and self.on_block is not None
        if blocked:
            self.on_block()
        try:
            objects.wait(object_ids, missing, num_ready, timeout, self._stopped_reason)
        finally:
            if blocked:
                self.on_unblock()

    def _stopped_reason(self):
        """None while running, else why this client stopped."""
        connection = self.connection
        if not connection.closed:
            return None
        return connection.dead_reason or "shutdown"

    def is_ready(self, object_id: bytes) -> bool:
        return object_id in self.objects.ready

    def get_values(self, refs: list, timeout=None) -> list:
        object_ids = [r._id for r in refs]
        self.wait_ready(object_ids, len(object_ids), timeout)
        objects = self.objects
        ready = objects.ready
        if any(i not in ready for i in object_ids):
            pending = sum(1 for i in object_ids if i not in ready)
            raise exceptions.GetTimeoutError(
                f"get timed out after {timeout} s: {pending} of {len(object_ids)} objects not ready")
        materialize = objects.materialize
        return [materialize(i) for i in object_ids]

    def materialize_payload(self, object_id: bytes, payload):
        """The value of a payload handed over directly (a task's argument)."""
        return self.objects.materialize_payload(object_id, payload)

    def future(self, ref: ObjectRef) -> concurrent.futures.Future:
        return self.objects.future(ref)

    def when_ready(self, ref: ObjectRef, callback) -> None:
        """Call callback() (in the I/O thread) once ref is ready, without fetching it."""
        self.objects.when_ready(ref, callback)

    def when_ready_locked(self, ref: ObjectRef, callback) -> bool:
        """Like when_ready, for a caller holding lock; False (and no call)
        when ref is ready already."""
        return self.objects.when_ready_locked(ref, callback)

    def actor_caller(self) -> ActorCaller:
        """This process's side of actor calls, made on first use."""
        actors = self.actors
        if actors is None:
            with self.lock:
                if self.actors is None:
                    self.actors = ActorCaller(self)
                actors = self.actors
        return actors

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool = True) -> None:
        with self.lock:
            ops = (self.direct.cancel_ops(ref._id, force, recursive)
                   if self.direct is not None else [])
            self.send_locked(ops or [(m.CANCEL, ref._id, force, recursive)])

    # ------------------------------------------------------------ requests

    def kv_backend(self):
        """lightray.kv's backend for this process (made on first use)."""
        if self._kv is None:
            self._kv = KVBackend(self)
        return self._kv

    def info(self, what, timeout: float = 10.0):
        return self.request(lambda request_id: [(m.INFO, request_id, what)], timeout, what)

    def sync_with_agent(self) -> None:
        """Return once the agent has handled everything this process sent it
        (its reply comes after them, on one ordered connection)."""
        self.request(lambda request_id: [(m.INFO, request_id, "sync")], 30.0, "sync")

    def request(self, make_ops, timeout, what="a request"):
        """Send make_ops(request_id) (built under lock) and wait for the
        agent's INFO_REPLY to it (timeout None: as long as the agent lives)."""
        request_id, future = self.start_request(make_ops)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise exceptions.GetTimeoutError(f"the agent did not answer {what!r} in {timeout} s")
        finally:
            self.end_request(request_id)

    def start_request(self, make_ops) -> tuple:
        """Send make_ops(request_id) (built under lock) without waiting:
        (request id, Future of the agent's INFO_REPLY). end_request(request
        id) once the answer is no longer wanted."""
        request_id = next(self._info_ids)
        future = concurrent.futures.Future()
        self._info_futures[request_id] = future
        try:
            with self.lock:
                self.send_locked(make_ops(request_id))
        except BaseException:
            self.end_request(request_id)
            raise
        return request_id, future

    def end_request(self, request_id: int) -> None:
        self._info_futures.pop(request_id, None)

    # --------------------------------------------------------------- closing

    def close(self, *, notify_agent: str = "") -> None:
        """Detach; with notify_agent="shutdown" also stop the agent.

        Always closes the sockets and terminates the context, also after the
        agent died: a context left to the garbage collector with open sockets
        blocks forever in its destructor.
        """
        connection = self.connection
        was_open = False
        with self.lock:
            if not connection.closed:
                was_open = True
                ops, self._held = self._held + self.ledger.take_ops(), []
                ops.append((m.SHUTDOWN,) if notify_agent == "shutdown" else (m.GOODBYE,))
                connection.send_last_locked(ops)
                connection.closed = True
        if was_open:
            self._mark_dead("shutdown")
        connection.join_io_thread(timeout=2.0)
        if self.direct is not None:
            self.direct.close()
        if self.actors is not None:
            self.actors.close()
        connection.close_reply_sockets()
        self._waker.close()
        connection.close_sockets(send_linger_ms=0 if connection.dead_reason != "shutdown"
                                 else 1000)
        self.objects.mappings.clear()


_threshold_cache = []


def _inline_threshold() -> int:
    if not _threshold_cache:
        _threshold_cache.append(inline_threshold())
    return _threshold_cache[0]
