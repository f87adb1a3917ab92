"""The sockets of one process to its agent, and the I/O thread that reads them.

    user threads ──send_frame_locked──▶ [lock] send socket (DEALER "<id>s") ──▶ agent ROUTER
                                                                                  │
    handle(ops) ◀── I/O thread ◀── receive socket (DEALER "<id>r") ◀─────────────┘
                        ▲    └──── reply sockets (leased workers, actors): on_readable(sock)
                        └─ every _FLUSH_INTERVAL when quiet: flush() (the ledger's INC/DEC),
                           on_quiet() (give back idle leases); every _LIVENESS_INTERVAL:
                           is the agent alive?

Why two sockets: ZeroMQ sockets are not thread-safe. Any thread may send
through the send socket while holding ``lock`` (so a submission costs no
thread hop), while only the I/O thread reads the receive socket. Everything
a process says to its agent goes through the one send socket, in order: the
agent relies on that order for reference counting (a worker's "I hold this
ref" always arrives before its "task done").

The connection knows nothing of what the messages mean: its client passes
in what to do with the agent's ops and when the process is quiet.
"""
from __future__ import annotations

import os
import threading
import time

import zmq

from .. import exceptions
from ..transport import messages as m
from ..transport import sockets

_FLUSH_INTERVAL = 0.02      # seconds the I/O thread sleeps in poll between flushes
_LIVENESS_INTERVAL = 0.25   # seconds between checks that the agent still lives


class AgentConnection:
    """Send and receive sockets to the agent, reply sockets, and the I/O thread."""

    def __init__(self, address: str, client_id: bytes, *, agent_alive=None,
                 parent_pid: int = 0):
        self.closed = False
        self.dead_reason = ""
        self.lock = threading.Lock()              # send socket (and the client's ledger)
        self._agent_alive = agent_alive           # callable -> bool, or None
        self._parent_pid = parent_pid             # worker: exit when it changes
        self._sockets_closed = False
        self.context = zmq.Context(io_threads=1)
        self._send_socket = sockets.dealer(self.context, address, client_id + b"s")
        self._recv_socket = sockets.dealer(self.context, address, client_id + b"r")
        # Sockets on which workers and actors answer us directly, read by the
        # I/O thread: socket -> (on_readable(socket), on_writable(socket) -> bool
        # still pending). Changed under lock.
        self._reply_handlers: dict = {}
        self._want_write: set = set()             # also poll these for writability
        self._reply_version = 0
        self._retired_sockets: list = []
        self._thread = None

    # ------------------------------------------------------------ setup

    def handshake(self, hello: tuple) -> tuple:
        """Send HELLO; (the WELCOME's node info, the ops that came after it)."""
        self._recv_socket.send(m.encode([hello]))
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            if self._recv_socket.poll(100):
                ops = m.decode(self._recv_socket.recv())
                for position, op in enumerate(ops):
                    if op[0] == m.WELCOME:
                        return op[1], ops[position + 1:]
            if self._agent_alive is not None and not self._agent_alive():
                self.close_sockets()
                raise RuntimeError("the lightray agent exited during start-up; see its log")
        self.close_sockets()
        raise RuntimeError("the lightray agent did not answer within 30 s")

    def start(self, handle, flush, on_quiet, on_dead) -> None:
        """Start the I/O thread: handle(ops) for the agent's ops; flush() and
        then on_quiet() (if not None) when nothing came for a poll interval;
        on_dead(reason) when the agent is found gone."""
        self._thread = threading.Thread(target=self._io_loop, name="lightray-io",
                                        args=(handle, flush, on_quiet, on_dead), daemon=True)
        self._thread.start()

    def in_io_thread(self) -> bool:
        return threading.current_thread() is self._thread

    # ------------------------------------------------------------ sending

    def send_frame_locked(self, frame: bytes) -> None:
        """Send one encoded frame to the agent (caller holds lock)."""
        self._send_socket.send(frame, copy=len(frame) < m.ZERO_COPY_MIN)

    def send_last_locked(self, ops: list) -> None:
        """The farewell frame (caller holds lock); lost quietly if the socket broke."""
        try:
            self._send_socket.send(m.encode(ops))
        except zmq.ZMQError:
            pass

    # ------------------------------------------------------ reply sockets

    def add_reply_socket(self, socket, on_readable, on_writable=None) -> None:
        """Have the I/O thread call on_readable(socket) when socket has input
        (ZeroMQ socket or plain socket; caller holds lock)."""
        self._reply_handlers[socket] = (on_readable, on_writable)
        self._reply_version += 1

    def want_writable_locked(self, socket) -> None:
        """Have the I/O thread call on_writable(socket) once socket can take more."""
        if socket not in self._want_write:
            self._want_write.add(socket)
            self._reply_version += 1

    def retire_reply_socket(self, socket) -> None:
        """Stop reading socket; the I/O thread closes it (under lock)."""
        if self._reply_handlers.pop(socket, None) is not None:
            self._want_write.discard(socket)
            self._retired_sockets.append(socket)
            self._reply_version += 1

    # ---------------------------------------------------------- I/O thread

    def _io_loop(self, handle, flush, on_quiet, on_dead) -> None:
        socket = self._recv_socket
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
                            self._drain_agent_socket(socket, handle)
                            continue
                        polled = polled_replies.get(ready_socket)
                        if polled is None:
                            continue
                        reply_socket, (on_readable, on_writable) = polled
                        if event & zmq.POLLOUT and not on_writable(reply_socket):
                            with self.lock:
                                self._want_write.discard(reply_socket)
                                self._reply_version += 1
                        if event & (zmq.POLLIN | zmq.POLLERR):
                            on_readable(reply_socket)
                else:
                    try:
                        flush()
                    except exceptions.RuntimeNotRunningError:
                        return
                now = time.monotonic()
                if now >= next_liveness:
                    next_liveness = now + _LIVENESS_INTERVAL
                    self._check_liveness(on_dead)
                if on_quiet is not None and not events:
                    on_quiet()
        except zmq.ContextTerminated:
            return
        except exceptions.RuntimeNotRunningError:
            return   # closed while handling a message: nothing is waiting for us
        except zmq.ZMQError:
            if not self.closed:
                raise

    def _drain_agent_socket(self, socket, handle) -> None:
        while True:
            try:
                frame = socket.recv(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            handle(m.decode(frame))

    def _track_reply_sockets(self, poller, polled: dict) -> int:
        """Make the poller read the current reply sockets (I/O thread); closes
        retired ones here, outside any recv. Returns the version seen.

        polled: poll key (the ZeroMQ socket, or a plain socket's file
        descriptor, which is what zmq.Poller reports for those) -> (socket,
        handlers)."""
        with self.lock:
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

    def _check_liveness(self, on_dead) -> None:
        if self._parent_pid and os.getppid() != self._parent_pid:
            os._exit(1)   # our agent is gone: a worker must not outlive it
        if self._agent_alive is not None and not self._agent_alive():
            on_dead("the lightray agent process exited")

    # ------------------------------------------------------------ closing

    def join_io_thread(self, timeout: float) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive() and threading.current_thread() is not thread:
            thread.join(timeout=timeout)

    def close_reply_sockets(self) -> None:
        for socket in list(self._reply_handlers) + self._retired_sockets:
            _close_quietly(socket)
        self._reply_handlers.clear()
        self._retired_sockets = []

    def close_sockets(self, send_linger_ms: int = 0) -> None:
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
            self.context.term()
        except zmq.ZMQError:
            pass


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
