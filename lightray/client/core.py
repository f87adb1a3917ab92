"""CoreClient: the one connection of a process (driver or worker) to its node agent.

    user threads ──send(ops)──▶ [lock] send socket (DEALER "<id>s") ──▶ agent ROUTER
                                                                          │
    get/wait/futures ◀── ready table ◀── I/O thread ◀── receive socket ◀──┘
                                          (DEALER "<id>r")   READY, EXEC, CANCEL_TASK

Why two sockets: ZeroMQ sockets are not thread-safe. Any thread may send
through the send socket while holding ``_lock`` (so a submission costs no
thread hop), while only the I/O thread reads the receive socket. Everything
a process says to its agent goes through the one send socket, in order: the
agent relies on that order for reference counting (a worker's "I hold this
ref" always arrives before its "task done").

Reference counting: each process counts its live ObjectRefs per object and
tells the agent only about the 0->1 (INC) and 1->0 (DEC) transitions,
batched in front of the next message it sends anyway, or by the I/O thread
within ``_FLUSH_INTERVAL`` when the process is otherwise quiet.
"""
from __future__ import annotations

import concurrent.futures
import itertools
import os
import threading
import time

import zmq

from .. import exceptions, serialization
from .. import task_spec as ts
from ..call_site import user_call_site
from ..ids import IdMaker, return_ids
from ..object_ref import ObjectRef
from ..serialization import INLINE, SHARED
from ..store import shm
from ..transport import messages as m
from ..transport import sockets
from .ledger import RefLedger

_FLUSH_INTERVAL = 0.02      # seconds the I/O thread sleeps in poll between flushes
_LIVENESS_INTERVAL = 0.25   # seconds between checks that the agent still lives

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
        self._agent_alive = agent_alive           # callable -> bool, or None
        self._parent_pid = parent_pid             # worker: exit when it changes
        self.closed = False
        self.dead_reason = ""
        self._sockets_closed = False

        self._context = zmq.Context(io_threads=1)
        self._send_socket = sockets.dealer(self._context, address, self.client_id + b"s")
        self._recv_socket = sockets.dealer(self._context, address, self.client_id + b"r")
        self._lock = threading.Lock()             # send socket + local ref counts
        self.ledger = RefLedger(on_last_ref=self._forget)   # changed under _lock
        self.pending_decs = self.ledger.pending_decs  # filled by ObjectRef.__del__
        self._local_counts = self.ledger.counts

        self._cv = threading.Condition(threading.Lock())
        self._ready: dict = {}                    # object_id -> payload
        self._owned = self.ledger.owned           # ids the agent pushes to us unasked
        self._subscribed: set = set()
        self._futures: dict = {}                  # object_id -> [Future]
        self._when_ready: dict = {}               # object_id -> [callable()]
        # Mappings of segments this process read, kept while it holds the ref
        # so that a second get costs no mmap; dropped when the agent says the
        # object was spilled (the mapping would pin its memory).
        self._mappings: dict = {}                 # object_id -> (mmap, inband, buffers)
        self._info_ids = itertools.count(1)
        self._info_futures: dict = {}
        self._exported: set = set()
        # Results only this process knows of (direct tasks, actor calls) until
        # they escape it; see escape_ops_locked.
        self.unregistered = self.ledger.unregistered
        self.promised = self.ledger.promised      # registered before their value came
        # Sockets on which workers and actors answer us directly, read by the
        # I/O thread: socket -> (on_readable(socket), on_writable(socket) -> bool
        # still pending). Changed under _lock.
        self._reply_handlers: dict = {}
        self._want_write: set = set()             # also poll these for writability
        self._reply_version = 0
        self._retired_sockets: list = []
        self.actors = None                        # lightray.client.actor_caller.ActorCaller

        # Worker-only hooks, installed by lightray.worker.tasks.TaskRunner.
        self.on_exec = None
        self.on_cancel = None
        self.on_steal = None
        self.on_block = None      # the running task is about to wait in get/wait
        self.on_unblock = None

        self._early_ops: list = []                # what came with WELCOME
        self.node_info = self._handshake()
        self.direct = None
        if kind == "driver" and _direct_enabled():
            from .direct import DirectSubmitter
            self.direct = DirectSubmitter(self)
        self._thread = threading.Thread(target=self._io_loop, name="lightray-io", daemon=True)
        if start:
            self.start()

    def start(self) -> None:
        """Start the I/O thread (a worker first installs its EXEC hooks)."""
        early, self._early_ops = self._early_ops, []
        self._handle(early)
        self._thread.start()

    # ------------------------------------------------------------------ setup

    def _handshake(self) -> dict:
        hello = (m.HELLO, self.client_id, self.kind, os.getpid(), self.worker_id)
        self._recv_socket.send(m.encode([hello]))
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            if self._recv_socket.poll(100):
                ops = m.decode(self._recv_socket.recv())
                for position, op in enumerate(ops):
                    if op[0] == m.WELCOME:
                        self._early_ops = ops[position + 1:]
                        return op[1]
            if self._agent_alive is not None and not self._agent_alive():
                self._close_sockets()
                raise RuntimeError("the lightray agent exited during start-up; see its log")
        self._close_sockets()
        raise RuntimeError("the lightray agent did not answer within 30 s")

    # ---------------------------------------------------------- ref counting

    def add_local_ref(self, object_id: bytes, owned: bool) -> None:
        with self._lock:
            self.ledger.add(object_id, owned)

    def _forget(self, object_id: bytes) -> None:
        """The last local ref to object_id is gone (the ledger calls this under _lock)."""
        with self._cv:   # _on_ready checks our count and stores under _cv
            self._ready.pop(object_id, None)
        self._subscribed.discard(object_id)
        # Dropping our mapping is enough: numpy views still alive keep it mapped.
        self._mappings.pop(object_id, None)

    # --------------------------------------------------------------- sending

    def send(self, ops: list, escaping=()) -> None:
        """Send ops to the agent; escaping: ids inside them it must know first."""
        with self._lock:
            if escaping and self.unregistered:
                ops = self.escape_ops_locked(escaping) + ops
            self._send_locked(ops)

    # ------------------------------------------------- results known only here

    def escape_ops_locked(self, object_ids) -> list:
        """REGISTER ops for results known only here that other processes are
        about to see (passed to a task, put inside a value): with their value,
        or as a promise fulfilled when it comes (caller holds _lock)."""
        return self.ledger.escape(object_ids, self._ready)

    def settle_locked(self, spec, payloads, registered):
        """(ops to send, ready items) for a task answered to us directly
        (a leased worker's or an actor's); caller holds _lock."""
        return self.ledger.settle(return_ids(spec[ts.TASK_ID], spec[ts.NUM_RETURNS]),
                                  payloads, registered)

    # ------------------------------------------------------ direct replies

    def add_reply_socket(self, socket, on_readable, on_writable=None) -> None:
        """Have the I/O thread call on_readable(socket) when socket has input
        (ZeroMQ socket or plain socket; caller holds _lock)."""
        self._reply_handlers[socket] = (on_readable, on_writable)
        self._reply_version += 1

    def want_writable_locked(self, socket) -> None:
        """Have the I/O thread call on_writable(socket) once socket can take more."""
        if socket not in self._want_write:
            self._want_write.add(socket)
            self._reply_version += 1

    def retire_reply_socket(self, socket) -> None:
        """Stop reading socket; the I/O thread closes it (under _lock)."""
        if self._reply_handlers.pop(socket, None) is not None:
            self._want_write.discard(socket)
            self._retired_sockets.append(socket)
            self._reply_version += 1

    def _send_locked(self, ops: list) -> None:
        if self.closed:
            raise exceptions.RuntimeNotRunningError(
                "lightray is not running (shutdown() was called or the agent died"
                + (f": {self.dead_reason}" if self.dead_reason else "") + ")")
        ledger = self.ledger
        if ledger.dirty:
            ops = ledger.take_ops() + ops
        if ops:
            frame = m.encode(ops)
            self._send_socket.send(frame, copy=len(frame) < m.ZERO_COPY_MIN)

    def flush(self) -> None:
        with self._lock:
            if not self.closed and self.ledger.dirty:
                self._send_locked([])

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
        with self._lock:
            if direct is not None and not escaping and spec[ts.STRATEGY] is None \
                    and direct.try_submit_locked(
                    spec, function_id, function_bytes):
                return refs
            ops = self.export_function(function_id, function_bytes)
            if escaping and self.unregistered:
                ops = self.escape_ops_locked(escaping) + ops
            ops.append((m.SUBMIT, spec, user_call_site()))
            if direct is not None:
                # After the SUBMIT: queued work comes before lending a worker.
                ops += direct.lease_request_ops(spec[ts.RESOURCES])
            self._send_locked(ops)
        return refs

    def put_serialized(self, value: serialization.Serialized) -> ObjectRef:
        object_id = self.ids.task_id() + b"\x00\x00"
        payload = self.make_payload(value, object_id)
        ref = ObjectRef(object_id, self, owned=True)
        with self._cv:
            self._ready[object_id] = payload
        with self._lock:
            ops = self.escape_ops_locked(value.contained)
            ops.append((m.PUT, object_id, payload, value.contained, user_call_site()))
            self._send_locked(ops)
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
        self.reserve(size)
        name = f"{self.node_info['segment_prefix']}{object_id.hex()}"
        try:
            return (SHARED, shm.create_segment(name, value.inband, buffers))
        except BaseException:
            self.send([(m.RESERVE, 0, -size)])   # give the room back
            raise

    def reserve(self, size: int) -> None:
        """Wait until the agent grants size bytes of the store to this process."""
        reply = self.request(lambda request_id: [(m.RESERVE, request_id, size)], None,
                             "room in the object store")
        if reply[0] != "ok":
            raise exceptions.ObjectStoreFullError(reply[1])

    def restore(self, object_id: bytes):
        """The layout of an object whose segment was spilled, once it is back."""
        reply = self.request(lambda request_id: [(m.RESTORE, request_id, object_id)], None,
                             "a spilled object")
        if reply[0] != "ok":
            raise serialization.deserialize(reply[1])
        return reply[1][1]

    def attach(self, object_id: bytes, layout):
        """Map a segment (bringing it back first if it was spilled)."""
        for _ in range(100):
            try:
                return shm.attach(layout)
            except FileNotFoundError:
                if threading.current_thread() is self._thread:
                    raise _RestoreElsewhere() from None
                layout = self.restore(object_id)
        raise exceptions.ObjectLostError(
            f"object {object_id.hex()} keeps being spilled before it can be read")

    # ------------------------------------------------------------ receiving

    def _io_loop(self) -> None:
        socket = self._recv_socket
        direct = self.direct
        next_liveness = time.monotonic() + _LIVENESS_INTERVAL
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        polled_replies: dict = {}
        seen_version = 0
        try:
            while not self.closed:
                if self._reply_version != seen_version:
                    seen_version = self._track_reply_sockets(poller, polled_replies)
                events = poller.poll(int(_FLUSH_INTERVAL * 1000))
                if events:
                    for ready_socket, event in events:
                        if ready_socket is socket:
                            self._drain_agent_socket(socket)
                            continue
                        polled = polled_replies.get(ready_socket)
                        if polled is None:
                            continue
                        reply_socket, (on_readable, on_writable) = polled
                        if event & zmq.POLLOUT and not on_writable(reply_socket):
                            with self._lock:
                                self._want_write.discard(reply_socket)
                                self._reply_version += 1
                        if event & (zmq.POLLIN | zmq.POLLERR):
                            on_readable(reply_socket)
                elif self.ledger.dirty:
                    try:
                        self.flush()
                    except exceptions.RuntimeNotRunningError:
                        return
                now = time.monotonic()
                if now >= next_liveness:
                    next_liveness = now + _LIVENESS_INTERVAL
                    self._check_liveness()
                if direct is not None and not events:
                    direct.return_idle()
        except zmq.ContextTerminated:
            return
        except exceptions.RuntimeNotRunningError:
            return   # closed while handling a message: nothing is waiting for us
        except zmq.ZMQError:
            if not self.closed:
                raise

    def _drain_agent_socket(self, socket) -> None:
        while True:
            try:
                frame = socket.recv(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            self._handle(m.decode(frame))

    def _track_reply_sockets(self, poller, polled: dict) -> int:
        """Make the poller read the current reply sockets (I/O thread); closes
        retired ones here, outside any recv. Returns the version seen.

        polled: poll key (the ZeroMQ socket, or a plain socket's file
        descriptor, which is what zmq.Poller reports for those) -> (socket,
        handlers)."""
        with self._lock:
            version = self._reply_version
            retired, self._retired_sockets = self._retired_sockets, []
            current = dict(self._reply_handlers)
            want_write = set(self._want_write)
        for socket in retired:
            key = _poll_key(socket)
            if key in polled:
                poller.unregister(key)
                del polled[key]
            _close_quietly(socket)
        for socket, handlers in current.items():
            key = _poll_key(socket)
            poller.register(key, zmq.POLLIN | zmq.POLLOUT if socket in want_write
                            else zmq.POLLIN)
            polled[key] = (socket, handlers)
        return version

    def _check_liveness(self) -> None:
        if self._parent_pid and os.getppid() != self._parent_pid:
            os._exit(1)   # our agent is gone: a worker must not outlive it
        if self._agent_alive is not None and not self._agent_alive():
            self._mark_dead("the lightray agent process exited")

    def _mark_dead(self, reason: str) -> None:
        self.dead_reason = reason
        self.closed = True
        with self._cv:
            self._cv.notify_all()
        error = exceptions.RuntimeNotRunningError(f"lightray stopped: {reason}")
        for futures in self._futures.values():
            for future in futures:
                if not future.done():
                    future.set_exception(error)
        self._futures.clear()
        for future in list(self._info_futures.values()):
            if not future.done():
                future.set_exception(error)

    def _handle(self, ops: list) -> None:
        for op in ops:
            kind = op[0]
            if kind == m.READY:
                self._on_ready(op[1])
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
                for object_id in op[1]:
                    self._mappings.pop(object_id, None)
            elif kind == m.ACTOR_STATE:
                self.actor_caller().on_actor_state(op[1], op[2], op[3], op[4], op[5])
            elif kind == m.INFO_REPLY:
                future = self._info_futures.pop(op[1], None)
                if future is not None:
                    future.set_result(op[2])

    def _on_ready(self, items: list) -> None:
        fired = []
        notify = []
        with self._cv:
            counts = self._local_counts
            for object_id, payload in items:
                if object_id in counts:
                    self._ready[object_id] = payload
                    if object_id in self._futures:
                        fired.append((object_id, self._futures.pop(object_id)))
                if object_id in self._when_ready:
                    notify.extend(self._when_ready.pop(object_id))
            self._cv.notify_all()
        for callback in notify:
            callback()
        for object_id, futures in fired:
            try:
                value = self._materialize(object_id)
            except _RestoreElsewhere:
                # Spilled already: restoring needs this thread's replies.
                threading.Thread(target=self._settle_futures, args=(object_id, futures),
                                 daemon=True).start()
                continue
            except BaseException as error:  # the task's own error, delivered
                for future in futures:
                    future.set_exception(error)
            else:
                for future in futures:
                    future.set_result(value)

    def _settle_futures(self, object_id: bytes, futures) -> None:
        try:
            value = self._materialize(object_id)
        except BaseException as error:
            for future in futures:
                future.set_exception(error)
        else:
            for future in futures:
                future.set_result(value)

    # ------------------------------------------------------ get / wait / futures

    def _subscribe_missing(self, object_ids) -> list:
        """Ids not ready yet; asks the agent about those nobody pushes to us."""
        missing = [i for i in object_ids if i not in self._ready]
        if missing:
            ask = [i for i in missing if i not in self._owned and i not in self._subscribed]
            if ask:
                self._subscribed.update(ask)
                self.send([(m.SUBSCRIBE, ask)])
        return missing

    def wait_ready(self, object_ids: list, num_ready: int, timeout) -> None:
        """Block until num_ready of object_ids are ready, or timeout passes."""
        missing = self._subscribe_missing(object_ids)
        already = len(object_ids) - len(missing)
        if already >= num_ready:
            return
        blocked = self.kind == "worker" and self.on_block is not None
        if blocked:
            self.on_block()
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            with self._cv:
                while True:
                    missing = [i for i in missing if i not in self._ready]
                    if len(object_ids) - len(missing) >= num_ready:
                        return
                    if self.closed:
                        raise exceptions.RuntimeNotRunningError(
                            f"lightray stopped while waiting: {self.dead_reason or 'shutdown'}")
                    if deadline is None:
                        self._cv.wait(1.0)
                    else:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            return
                        self._cv.wait(remaining)
        finally:
            if blocked:
                self.on_unblock()

    def is_ready(self, object_id: bytes) -> bool:
        return object_id in self._ready

    def get_values(self, refs: list, timeout=None) -> list:
        object_ids = [r._id for r in refs]
        self.wait_ready(object_ids, len(object_ids), timeout)
        if any(i not in self._ready for i in object_ids):
            pending = sum(1 for i in object_ids if i not in self._ready)
            raise exceptions.GetTimeoutError(
                f"get timed out after {timeout} s: {pending} of {len(object_ids)} objects not ready")
        return [self._materialize(i) for i in object_ids]

    def _materialize(self, object_id: bytes):
        payload = self._ready[object_id]
        kind, data = payload
        if kind == INLINE:
            return serialization.deserialize(data)
        if kind == SHARED:
            mapping = self._mappings.get(object_id)
            if mapping is None:
                mapping = self.attach(object_id, data)
                if object_id in self._local_counts:
                    self._mappings[object_id] = mapping
            return serialization.deserialize(mapping[1], mapping[2])
        raise serialization.deserialize(data)

    def materialize_payload(self, object_id: bytes, payload):
        """The value of a payload handed over directly (a task's argument)."""
        kind, data = payload
        if kind == INLINE:
            return serialization.deserialize(data)
        if kind == SHARED:
            _, inband, buffers = self.attach(object_id, data)
            return serialization.deserialize(inband, buffers)
        raise serialization.deserialize(data)

    def future(self, ref: ObjectRef) -> concurrent.futures.Future:
        future = concurrent.futures.Future()
        object_id = ref._id
        with self._cv:
            ready = object_id in self._ready
            if not ready:
                self._futures.setdefault(object_id, []).append(future)
        if ready:
            try:
                future.set_result(self._materialize(object_id))
            except BaseException as error:
                future.set_exception(error)
        else:
            # Keep the ref alive until the future fires.
            future.add_done_callback(lambda _f, _keep=ref: None)
            self._subscribe_missing([object_id])
        return future

    def when_ready(self, ref: ObjectRef, callback) -> None:
        """Call callback() (in the I/O thread) once ref is ready, without fetching it."""
        object_id = ref._id
        with self._cv:
            ready = object_id in self._ready
            if not ready:
                # The closure holds the ref: the agent pushes results only to
                # owners still holding them.
                self._when_ready.setdefault(object_id, []).append(
                    lambda _keep=ref: callback())
        if ready:
            callback()
        else:
            self._subscribe_missing([object_id])

    def actor_caller(self):
        """This process's side of actor calls, made on first use."""
        actors = self.actors
        if actors is None:
            with self._lock:
                if self.actors is None:
                    from .actor_caller import ActorCaller
                    self.actors = ActorCaller(self)
                actors = self.actors
        return actors

    def when_ready_locked(self, ref: ObjectRef, callback) -> bool:
        """Like when_ready, for a caller holding _lock; False (and no call)
        when ref is ready already."""
        object_id = ref._id
        with self._cv:
            if object_id in self._ready:
                return False
            self._when_ready.setdefault(object_id, []).append(lambda _keep=ref: callback())
        if object_id not in self._owned and object_id not in self._subscribed:
            self._subscribed.add(object_id)
            self._send_locked([(m.SUBSCRIBE, [object_id])])
        return True

    def cancel(self, ref: ObjectRef, force: bool) -> None:
        with self._lock:
            ops = self.direct.cancel_ops(ref._id, force) if self.direct is not None else []
            self._send_locked(ops or [(m.CANCEL, ref._id, force)])

    def info(self, what, timeout: float = 10.0):
        return self.request(lambda request_id: [(m.INFO, request_id, what)], timeout, what)

    def sync_with_agent(self) -> None:
        """Return once the agent has handled everything this process sent it
        (its reply comes after them, on one ordered connection)."""
        self.request(lambda request_id: [(m.INFO, request_id, "sync")], 30.0, "sync")

    def request(self, make_ops, timeout, what="a request"):
        """Send make_ops(request_id) (built under _lock) and wait for the
        agent's INFO_REPLY to it (timeout None: as long as the agent lives)."""
        request_id, future = self.start_request(make_ops)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise exceptions.GetTimeoutError(f"the agent did not answer {what!r} in {timeout} s")
        finally:
            self.end_request(request_id)

    def start_request(self, make_ops) -> tuple:
        """Send make_ops(request_id) (built under _lock) without waiting:
        (request id, Future of the agent's INFO_REPLY). end_request(request
        id) once the answer is no longer wanted."""
        request_id = next(self._info_ids)
        future = concurrent.futures.Future()
        self._info_futures[request_id] = future
        try:
            with self._lock:
                self._send_locked(make_ops(request_id))
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
        was_open = False
        with self._lock:
            if not self.closed:
                was_open = True
                try:
                    ops = self.ledger.take_ops()
                    ops.append((m.SHUTDOWN,) if notify_agent == "shutdown" else (m.GOODBYE,))
                    self._send_socket.send(m.encode(ops))
                except zmq.ZMQError:
                    pass
                self.closed = True
        if was_open:
            self._mark_dead("shutdown")
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=2.0)
        if self.direct is not None:
            self.direct.close()
        if self.actors is not None:
            self.actors.close()
        for socket in list(self._reply_handlers) + self._retired_sockets:
            _close_quietly(socket)
        self._reply_handlers.clear()
        self._retired_sockets = []
        self._close_sockets(send_linger_ms=0 if self.dead_reason != "shutdown" else 1000)
        self._mappings.clear()

    def _close_sockets(self, send_linger_ms: int = 0) -> None:
        if self._sockets_closed:
            return
        self._sockets_closed = True
        # The send socket lingers so that a final SHUTDOWN/GOODBYE is delivered.
        for socket, linger in ((self._send_socket, send_linger_ms), (self._recv_socket, 0)):
            try:
                socket.close(linger=linger)
            except zmq.ZMQError:
                pass
        try:
            self._context.term()
        except zmq.ZMQError:
            pass


class _RestoreElsewhere(Exception):
    """The I/O thread met a spilled segment: restore it from another thread."""


def _poll_key(socket):
    return socket if isinstance(socket, zmq.Socket) else socket.fileno()


def _close_quietly(socket) -> None:
    """Close a ZeroMQ socket without lingering, or a plain socket."""
    try:
        if isinstance(socket, zmq.Socket):
            socket.close(linger=0)
        else:
            socket.close()
    except (OSError, zmq.ZMQError):
        pass


def _direct_enabled() -> bool:
    from ..config import direct_submit
    return direct_submit()


_threshold_cache = []


def _inline_threshold() -> int:
    if not _threshold_cache:
        from ..config import inline_threshold
        _threshold_cache.append(inline_threshold())
    return _threshold_cache[0]
