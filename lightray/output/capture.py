"""The worker side: what a task prints, attributed, logged and sent on.

    task code ──print──▶ sys.stdout / sys.stderr (_Stream, one per stream)
        ──▶ OutputCapture: complete lines, prefixed with the call's name
            ├──▶ BoundedLog (the worker's log file), at once
            └──▶ pending[driver] ──▶ client.send(WORKER_OUTPUT) ──▶ agent
                 sent by the flusher thread within FLUSH_DELAY, and by the
                 runner when a call ends (end_call), before its result

Which call printed a line: lightray.runtime_context.current_call, a
ContextVar the runners set per call (so threaded and async actors attribute
each line to the call that printed it). A line printed outside any call (a
thread a task left running, an actor's background thread) goes to the
actor's creator if this worker runs one, else only to the log file.

What it costs a task that prints nothing: setting and resetting the
ContextVar and one attribute test at its end. Only Python-level writes are
captured (sys.stdout, sys.stderr and their .buffer); a C library or a
child process writing to file descriptor 1 or 2 directly writes where the
agent's output goes.
"""
from __future__ import annotations

import io
import os
import sys
import threading

from .. import config
from ..runtime_context import current_call
from ..transport import messages as m
from .lines import MAX_BATCH, MAX_LINE, STDERR, STDOUT, clip, prefix
from .logfile import BoundedLog, worker_log_path

FLUSH_DELAY = 0.02   # seconds the flusher waits to batch lines of a running task


class OutputCapture:
    """Installed once per worker process (install()); see the module docstring."""

    def __init__(self, client, session_dir: str, node_id: str):
        self.client = client
        self.pid = os.getpid()
        self.node_id = node_id
        self.log = BoundedLog(worker_log_path(session_dir, self.pid), config.worker_log_bytes())
        self.idle_prefix = prefix("worker", self.pid, node_id)
        self.default_call = None        # an actor's creator: (prefix, driver)
        self.pending: dict = {}         # driver -> [(stream, line)]: not sent yet
        self._partial: dict = {}        # (stream, call) -> text after the last newline
        self._calls: dict = {}          # (name, driver) -> call
        self._printed: set = set()      # calls with lines sent or pending since they began
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._flusher = threading.Thread(target=self._flush_loop, name="lightray-output",
                                         daemon=True)
        self._flusher.start()

    def call(self, name: str, driver):
        """The current_call value of a call of name, answering to driver
        (made once per name and driver: a task's hot path only looks it up)."""
        key = (name, driver)
        call = self._calls.get(key)
        if call is None:
            if len(self._calls) > 4096:
                self._calls.clear()
            call = self._calls[key] = (prefix(name, self.pid, self.node_id), driver)
        return call

    @staticmethod
    def session_dir_of(agent_address: str) -> str:
        """The session directory of the agent at ipc://<session dir>/agent.sock."""
        return agent_address.rsplit("/", 1)[0][len("ipc://"):]

    def install(self) -> None:
        self.original = (sys.stdout, sys.stderr)
        sys.stdout = _Stream(self, STDOUT, sys.stdout)
        sys.stderr = _Stream(self, STDERR, sys.stderr)

    # ---------------------------------------------------------------- writes

    def write(self, stream: int, text: str) -> None:
        call = current_call.get() or self.default_call
        key = (stream, call)
        with self._lock:
            text = self._partial.pop(key, "") + text
            if "\n" not in text and len(text) <= MAX_LINE:
                if text:
                    self._partial[key] = text
                return
            *lines, rest = text.split("\n")
            if len(rest) > MAX_LINE:   # no newline for that long (a progress bar's \r)
                lines.append(rest)
            elif rest:
                self._partial[key] = rest
            self._add_locked(stream, call, lines)
        self._wake.set()

    def _add_locked(self, stream: int, call, lines: list) -> None:
        head = call[0] if call is not None else self.idle_prefix
        lines = [f"{head} {clip(line)}" for line in lines]
        try:
            self.log.write_lines(lines)
        except OSError:
            pass   # a full disk must not fail the task that printed
        driver = call[1] if call is not None else None
        if driver is not None:
            self._printed.add(call)
            self.pending.setdefault(driver, []).extend((stream, line) for line in lines)

    # --------------------------------------------------------------- sending

    def end_call(self, call) -> bool:
        """A call ends: send what it printed (a last line without its newline
        too) before its result. True if it printed anything for a driver."""
        if not self.pending and not self._partial and not self._printed:
            return False
        with self._lock:
            for stream in (STDOUT, STDERR):
                rest = self._partial.pop((stream, call), None)
                if rest:
                    self._add_locked(stream, call, [rest])
            self._send_locked()
            # (The flusher may have sent this call's lines already: still True.)
            printed = call in self._printed
            self._printed.discard(call)
            return printed

    def _send_locked(self) -> bool:
        pending, self.pending = self.pending, {}
        ops = [(m.WORKER_OUTPUT, driver, lines[start:start + MAX_BATCH])
               for driver, lines in pending.items()
               for start in range(0, len(lines), MAX_BATCH)]
        if not ops:
            return False
        try:
            self.client.send(ops)
        except Exception:   # the agent is gone (the lines stay in the log file)
            return False
        return True

    def _flush_loop(self) -> None:
        while not self._closed:
            if not self._wake.wait(1.0):
                continue
            self._wake.clear()
            if self._closed:
                return
            threading.Event().wait(FLUSH_DELAY)
            with self._lock:
                self._send_locked()

    def close(self) -> None:
        self._closed = True
        self._wake.set()


class _Stream(io.TextIOBase):
    """sys.stdout or sys.stderr of a worker: text goes to its OutputCapture."""

    def __init__(self, capture: OutputCapture, stream: int, original):
        self._capture = capture
        self._stream = stream
        self._original = original
        self.buffer = _Bytes(self)

    def write(self, text) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._capture.write(self._stream, text)
        return len(text)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._original.fileno()

    @property
    def encoding(self) -> str:
        return "utf-8"

    @property
    def errors(self) -> str:
        return "replace"


class _Bytes(io.RawIOBase):
    """sys.stdout.buffer: bytes decoded as UTF-8, invalid ones replaced."""

    def __init__(self, text_stream: _Stream):
        self._text = text_stream

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = bytes(data)
        self._text.write(data.decode("utf-8", "replace"))
        return len(data)
