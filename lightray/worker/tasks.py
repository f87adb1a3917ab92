"""A worker process: runs the tasks its agent sends, one at a time, in its main thread.

    agent ──EXEC──▶ I/O thread ──task_queue (+ inproc wake-up)──▶ main thread runs the task
    agent ◀──DONE── (send socket, under the client lock) ◀──┘
    leasing driver ──EXEC──▶ stream socket <session>/<worker>.lease (main thread) ──▶ runs
                   ◀──DIRECT_DONE── same connection (lightray.transport.stream)

The agent may queue several tasks of one resource shape on a busy worker
(pipelining). When the running task blocks in ``get``/``wait`` the worker
hands the unstarted ones back (BLOCKED) and the agent frees its CPU, so that
nested tasks can never deadlock the pool. When another worker goes idle the
agent asks for them back too (STEAL), so a short task never waits behind a
long one while a worker sits idle.
"""
from __future__ import annotations

import collections
import os
import queue
import signal
import threading
import time
import traceback

import zmq

from .. import config, exceptions, serialization, task_warnings
from .. import task_spec as ts
from ..ids import return_ids
from ..observe.events import NORMAL, WorkerEvents
from ..runtime_context import state as context_state
from ..serialization import ERROR, INLINE, LOCAL
from ..transport import messages as m
from ..transport import stream
from ..transport.guard import RefusalLog
from .paths import lease_stream_path


class TaskRunner:
    """Executes EXEC ops for one worker process."""

    # What a leasing driver may send on the stream: kind -> (fewest, most) items.
    STREAM_OPS = {m.EXEC: (5, 5), m.DIRECT_HELLO: (2, 3)}

    def __init__(self, client, node_info: dict):
        self.client = client
        self.session = node_info["session"]
        self.node_id = node_info["node_id"]
        self.has_gpus = node_info.get("num_gpus", 0) > 0
        self.functions: dict = {}             # function id -> function
        self.function_bytes: dict = {}        # function id -> pickled function
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()         # blocked state vs. incoming EXECs
        self._blocked_depth = 0
        self._running_task = None
        self._cancelled: set = set()
        self._interrupted = False
        self._main_thread = threading.main_thread().ident
        # The main thread waits on two things at once: tasks from the agent
        # (queued by the I/O thread, which pokes the wake socket) and tasks
        # callers send straight to this worker's stream socket (a leasing
        # driver's; an actor's callers in lightray.worker.actors).
        context = client.zmq_context
        self._wake_address = f"inproc://wake-{id(self)}"
        self._wake_pull = context.socket(zmq.PULL)
        self._wake_pull.bind(self._wake_address)
        self._wake_push = context.socket(zmq.PUSH)
        self._wake_push.connect(self._wake_address)
        self._server = stream.StreamServer(
            self.stream_path(client), self.stream_tcp_host(node_info),
            key=stream.stream_key(node_info), arities=self.STREAM_OPS,
            log=RefusalLog(f"lightray worker {client.worker_id}"))
        self._poller = None
        # Recent results, for tasks the agent queued right behind their
        # producer here (their arguments arrive as LOCAL payloads).
        self._local_results: collections.OrderedDict = collections.OrderedDict()
        self.events = WorkerEvents(config.task_events() > 0, os.getpid(), client.send,
                                   m.TASK_EVENTS)   # this worker's runs, for lightray.state
        client.on_exec = self._on_exec
        client.on_cancel = self._on_cancel
        client.on_steal = self._on_steal
        client.on_block = self._on_block
        client.on_unblock = self._on_unblock

    # ----------------------------------------------------- I/O thread hooks

    def _on_exec(self, op) -> None:
        if op[2] is not None:
            # Keep the function even if this task is handed back unstarted:
            # the agent sends each function to a worker only once.
            self.function_bytes[op[1][ts.FUNCTION_ID]] = op[2]
        with self._lock:
            if self._blocked_depth:
                # Our running task waits in get: never sit on work it may need.
                self.client.send([(m.RETURNED, [op[1][ts.TASK_ID]])])
                return
            self.queue.put(op)
            self._wake_push.send(b"")

    def _on_cancel(self, task_id: bytes) -> None:
        if task_id == self._running_task:
            self._interrupted = True
            signal.pthread_kill(self._main_thread, signal.SIGINT)
        else:
            self._cancelled.add(task_id)

    def _unstarted_task_ids(self) -> list:
        handed_back = []
        while True:
            try:
                handed_back.append(self.queue.get_nowait()[1][ts.TASK_ID])
            except queue.Empty:
                return handed_back

    def _on_steal(self) -> None:
        with self._lock:
            self.client.send([(m.RETURNED, self._unstarted_task_ids())])

    def _on_block(self) -> None:
        with self._lock:
            self._blocked_depth += 1
            if self._blocked_depth > 1:
                return
            self.client.send([(m.BLOCKED, self._running_task, self._unstarted_task_ids())])

    def _on_unblock(self) -> None:
        with self._lock:
            self._blocked_depth -= 1
            if self._blocked_depth == 0:
                self.client.send([(m.UNBLOCKED, self._running_task)])

    # ------------------------------------------------------------ main loop

    @staticmethod
    def stream_path(client) -> str:
        return lease_stream_path(client.address, client.worker_id)

    @staticmethod
    def stream_tcp_host(node_info: dict):
        """Where callers on other nodes reach this worker (None: nowhere)."""
        return None

    def loop(self) -> None:
        # zmq.Poller reports plain sockets and pipes by file descriptor.
        poller = self._poller = zmq.Poller()
        server = self._server
        listeners = server.listeners
        poller.register(self._wake_pull, zmq.POLLIN)
        for listener in listeners:
            poller.register(listener, zmq.POLLIN)
        self._register_extra(poller)
        server.forget = lambda fileno: _unregister(poller, fileno)
        peers = server.peers
        handshaking = server.handshaking
        try:
            while not self.client.closed:
                if handshaking:
                    server.expire(time.monotonic())
                for item, event in poller.poll(500) or self.events.idle():
                    if item is self._wake_pull:
                        self._on_wake()
                    elif item in listeners:
                        for peer in server.accept(item):
                            poller.register(peer.fileno(), zmq.POLLIN)
                    elif not self._on_extra_event(item):
                        peer = peers.get(item)
                        if peer is None:
                            continue
                        if event & zmq.POLLOUT and not peer.out.flush():
                            poller.register(item, zmq.POLLIN)
                        if event & (zmq.POLLIN | zmq.POLLERR):
                            self._serve_peer(peer)
        finally:
            server.close()

    def _register_extra(self, poller) -> None:
        """More things to poll (a subclass's)."""

    def _on_extra_event(self, item) -> bool:
        return False

    def _on_wake(self) -> None:
        while True:
            try:
                self._wake_pull.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
        while True:
            try:
                op = self.queue.get_nowait()
            except queue.Empty:
                return
            self._on_agent_op(op)

    def _on_agent_op(self, op) -> None:
        """An op the agent sent this worker (EXEC here; ACTOR_START for actors)."""
        self.run(op, self._reply_to_agent)

    # ------------------------------------------------ callers on the stream

    def _serve_peer(self, peer) -> None:
        """Run what one caller sent. Nothing it sends can stop this worker:
        a frame that is not a list of well-formed ops, or an op that fails
        to be handled, drops that caller's connection (the server logs it)."""
        server = self._server
        frames = server.read(peer)
        if not frames:   # nothing yet, or the caller left (dropped)
            return
        for frame in frames:
            ops = server.decode(peer, frame)
            if ops is None:
                return
            try:
                for op in ops:
                    self._on_peer_op(peer, op)
            except Exception as error:
                server.drop(peer, f"sent an op that could not be handled "
                            f"({type(error).__name__}: {str(error)[:200]})", "bad op")
                return

    def _on_peer_op(self, peer, op) -> None:
        """A leasing driver's task: run it, answer on its connection."""
        if op[0] == m.EXEC:
            check_spec(op[1])
            if not (type(op[3]) is list and isinstance(op[4], (list, tuple))
                    and len(op[4]) == 2 and (op[2] is None or type(op[2]) is bytes)):
                raise ValueError("not a well-formed EXEC")
            if op[2] is not None:
                self.function_bytes[op[1][ts.FUNCTION_ID]] = op[2]
            self.run(op, lambda spec, payloads, contained, retryable:
                     self._reply_direct(peer, spec, payloads, contained, retryable))
        elif op[0] == m.DIRECT_HELLO:
            if type(op[1]) is not bytes:
                raise ValueError("a caller's id must be bytes")
            peer.identity = op[1]

    def _send_to_peer(self, peer, frame: bytes) -> None:
        if peer.out.send(frame):   # the caller is slow to read: finish when writable
            self._poller.register(peer.fileno(), zmq.POLLIN | zmq.POLLOUT)

    def _register_results(self, spec, payloads, contained) -> bool:
        """Register with the agent the results of a task answered directly that
        it must hold (a shared-memory segment, refs inside); True if any."""
        registered = any(p[0] != INLINE and p[0] != ERROR for p in payloads) or any(contained)
        if registered:
            owner = spec[ts.OWNER]
            self.client.send([(m.DIRECT_RESULT, owner, object_id, payload, inner)
                              for object_id, payload, inner in zip(
                                  return_ids(spec[ts.TASK_ID], spec[ts.NUM_RETURNS]),
                                  payloads, contained)],
                             escaping=[i for inner in contained for i in inner])
        return registered

    def _reply_direct(self, peer, spec, payloads, contained, retryable) -> None:
        """Inline results go straight back; anything the agent must hold is
        registered with it first."""
        self.events.end(spec, payloads, retryable)
        registered = self._register_results(spec, payloads, contained)
        if registered:
            # Our answer goes straight to the driver and could overtake the
            # registration: the driver may pass the result to a task at once.
            self.client.sync_with_agent()
        self._send_to_peer(peer, m.encode(
            [(m.DIRECT_DONE, spec[ts.TASK_ID], payloads, registered, retryable)]))

    def _reply_to_agent(self, spec, payloads, contained, retryable) -> None:
        self.events.end(spec, payloads, retryable)
        if not retryable:   # a retried task's result is not final
            self._keep_local_results(spec, payloads)
        self.client.send([(m.DONE, spec[ts.TASK_ID], payloads, contained, retryable)],
                         escaping=[i for inner in contained for i in inner] if contained else ())

    def _keep_local_results(self, spec, payloads) -> None:
        results = self._local_results
        for object_id, payload in zip(return_ids(spec[ts.TASK_ID], spec[ts.NUM_RETURNS]),
                                      payloads):
            results[object_id] = payload
        while len(results) > _LOCAL_RESULTS_KEPT:
            results.popitem(last=False)

    # ------------------------------------------------------------ running

    def run(self, op, reply) -> None:
        _, spec, _function_bytes, dep_payloads, assignment = op
        task_id = spec[ts.TASK_ID]
        if task_id in self._cancelled:
            self._cancelled.discard(task_id)
            self._finish_with_error(spec, exceptions.TaskCancelledError(
                f"task {spec[ts.FUNCTION_NAME]}() was cancelled before it started"), False, reply)
            return
        self._running_task = task_id
        self.events.start(spec, NORMAL)
        self._interrupted = False
        context_state.task_id = task_id
        context_state.assigned = assignment[0]
        if self.has_gpus:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in assignment[1])
        try:
            try:
                function = self._function(spec)
                with task_warnings.capture() as warned:
                    args, kwargs = self._arguments(spec, dep_payloads)
                    result = function(*args, **kwargs)
                payloads, contained = self._store_results(spec, result, warned)
                # Unmap the arguments before answering: their owner may free
                # them at once, and a segment still mapped cannot be kept warm
                # for reuse (lightray.store.pool); unmapping 1 GB takes ~30 ms.
                # (Not the result: refs inside it must outlive the answer.)
                del args, kwargs
            except KeyboardInterrupt:
                if not self._interrupted:
                    raise
                error = exceptions.TaskCancelledError(
                    f"task {spec[ts.FUNCTION_NAME]}() was cancelled while running")
                self._finish_with_error(spec, error, False, reply)
                return
            except _DepError as dep_error:
                self._finish_with_payload(spec, dep_error.payload, False, reply)
                return
            except _NotProducedHere:
                # Its producer failed in a way that will be retried: the agent
                # requeues this task until the argument really exists.
                self.client.send([(m.RETURNED, [task_id])])
                return
            except Exception as error:  # the user's code failed
                self._finish_with_error(spec, self._task_error(spec, error),
                                        _should_retry(spec[ts.RETRY_EXCEPTIONS], error), reply)
                return
            reply(spec, payloads, contained, False)
        finally:
            self._running_task = None
            context_state.task_id = None
            context_state.assigned = {}

    # -------------------------------------------------------------- helpers

    def _function(self, spec):
        function_id = spec[ts.FUNCTION_ID]
        function = self.functions.get(function_id)
        if function is None:
            data = self.function_bytes.pop(function_id)
            function = self.functions[function_id] = serialization.deserialize(data)
        return function

    def _arguments(self, spec, dep_payloads):
        raw = spec[ts.ARGS]
        if raw is None:
            return (), {}
        args, kwargs = serialization.deserialize(raw)
        if dep_payloads:
            values = []
            for object_id, payload in zip(spec[ts.DEPS], dep_payloads):
                if payload[0] == LOCAL:
                    payload = self._local_results.get(object_id)
                    if payload is None:
                        raise _NotProducedHere(object_id)
                if payload[0] == ERROR:
                    raise _DepError(payload)
                values.append(self.client.materialize_payload(object_id, payload))
            args, kwargs = ts.substitute(args, kwargs, values)
        return args, kwargs

    def _store_results(self, spec, result, warned=None):
        """warned: the call's warnings, re-emitted where a result is read."""
        num_returns = spec[ts.NUM_RETURNS]
        if num_returns == 1:
            results = (result,)
        else:
            try:
                results = tuple(result)
            except TypeError:
                results = None
            if results is None or len(results) != num_returns:
                raise ValueError(
                    f"task {spec[ts.FUNCTION_NAME]}() declared num_returns={num_returns} "
                    f"but returned {type(result).__name__}"
                    + ("" if results is None else f" of length {len(results)}"))
        payloads, contained = [], []
        for object_id, value in zip(return_ids(spec[ts.TASK_ID], num_returns), results):
            serialized = serialization.serialize(task_warnings.attach(value, warned))
            payloads.append(self.client.make_payload(serialized, object_id))
            contained.append(serialized.contained)
        return payloads, contained

    def _task_error(self, spec, error: Exception, name: str = "") -> exceptions.TaskError:
        if isinstance(error, exceptions.TaskError):
            cause = error.cause
        else:
            cause = error
        # Skip this module's frame: the user wants their own code's traceback.
        tb = error.__traceback__
        text = "".join(traceback.format_exception(type(error), error, tb.tb_next if tb else None))
        return exceptions.TaskError(name or spec[ts.FUNCTION_NAME], text, cause, os.getpid(),
                                    self.node_id)

    def _finish_with_error(self, spec, error: BaseException, retryable: bool, reply) -> None:
        payload = (ERROR, serialization.dumps_exception(error))
        self._finish_with_payload(spec, payload, retryable, reply)

    @staticmethod
    def _finish_with_payload(spec, payload, retryable: bool, reply) -> None:
        n = spec[ts.NUM_RETURNS]
        reply(spec, [payload] * n, [[]] * n, retryable)


_LOCAL_RESULTS_KEPT = 256


_MAX_RETURNS = 1 << 20   # a sanity bound: [payload] * num_returns is built for errors


def check_spec(spec) -> None:
    """Raise ValueError unless spec (from a stream peer) has the shape of a
    TaskSpec where this worker reads it before running anything."""
    if not (type(spec) is tuple and len(spec) == len(ts.TaskSpec._fields)
            and type(spec[ts.TASK_ID]) is bytes and type(spec[ts.FUNCTION_NAME]) is str
            and type(spec[ts.NUM_RETURNS]) is int and 0 <= spec[ts.NUM_RETURNS] <= _MAX_RETURNS
            and isinstance(spec[ts.DEPS], (list, tuple))
            and isinstance(spec[ts.CONTAINED], (list, tuple))
            and (spec[ts.OWNER] is None or type(spec[ts.OWNER]) in (bytes, str))):
        raise ValueError("not a well-formed task spec")


def _unregister(poller, fileno: int) -> None:
    try:
        poller.unregister(fileno)
    except KeyError:
        pass   # never polled (refused at once)


class _NotProducedHere(Exception):
    """A LOCAL argument that this worker did not produce (its producer is retried)."""


class _DepError(Exception):
    """An argument's producing task failed: this task fails with that error."""

    def __init__(self, payload):
        self.payload = payload


def _should_retry(retry_exceptions, error: Exception) -> bool:
    if isinstance(retry_exceptions, bytes):   # a pickled tuple of exception types
        retry_exceptions = serialization.deserialize(retry_exceptions)
    if retry_exceptions is True:
        return True
    if isinstance(retry_exceptions, (list, tuple)):
        return isinstance(error, tuple(retry_exceptions))
    return False

