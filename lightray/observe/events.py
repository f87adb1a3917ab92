"""Task and actor state changes: the bounded ring each agent keeps, the
recorder each worker keeps, and folding them into rows. No I/O.

    AgentState (submit, queue, retry, fail)  ──TaskEvents.submitted/...──▶ ring (deque)
    worker: a task or method call starts/ends ──WorkerEvents.start/end──▶ its buffer
        ──(TASK_EVENTS, [event]) every FLUSH_EVERY s, or when idle──▶ its agent's ring
    Transitions.actor (every actor state change) ──TaskEvents.actor──▶ actor ring
    ring ──task_rows / runs / actor_rows──▶ plain lists (lightray.observe.queries)

An event is a tuple (wall time, event, task id, name, type, actor id, worker
pid, error summary, argument ids): a worker's RUNNING carries the name, type,
actor and arguments; the other events leave what they do not know None. A
task sent straight to a leased worker (or an actor call) never passes its
agent: its worker's RUNNING and end events are all there is of it.
Recording is a tuple appended at a change the agent or worker makes anyway;
``LIGHTRAY_TASK_EVENTS=0`` (lightray.config) records nothing.
"""
from __future__ import annotations

import collections
import time

from .. import task_spec as ts
from ..ids import task_of
from ..serialization import ERROR, deserialize

SUBMITTED, QUEUED, RUNNING = "SUBMITTED", "QUEUED", "RUNNING"
FINISHED, FAILED, RETRIED, CANCELLED = "FINISHED", "FAILED", "RETRIED", "CANCELLED"
EVENTS = (SUBMITTED, QUEUED, RUNNING, FINISHED, FAILED, RETRIED, CANCELLED)
NORMAL, ACTOR_TASK, ACTOR_CREATION = "NORMAL_TASK", "ACTOR_TASK", "ACTOR_CREATION_TASK"
ENDS = (FINISHED, FAILED, RETRIED, CANCELLED)
# The state a task is in after each event (lightray.state's names).
STATE_AFTER = {SUBMITTED: "PENDING", QUEUED: "QUEUED", RUNNING: "RUNNING",
               FINISHED: "FINISHED", FAILED: "FAILED", RETRIED: "PENDING",
               CANCELLED: "CANCELLED"}
EVENT_LENGTH = 9
FLUSH_EVERY = 0.1          # seconds a worker keeps events before sending them on
WORKER_BUFFER = 20_000     # events a worker keeps while its agent does not read them
ERROR_CHARS = 2000         # of an error summary
_time = time.time
_TASK_ID, _FUNCTION_ID, _NAME, _DEPS = ts.TASK_ID, ts.FUNCTION_ID, ts.FUNCTION_NAME, ts.DEPS

# The fields of a task row on the wire (lists, in this order) and in lightray.state.
TASK_FIELDS = ("task_id", "name", "type", "state", "node_id", "worker_pid", "actor_id",
               "submitted_at", "started_at", "finished_at", "retries", "error", "state_at",
               "runs")
RUN_FIELDS = ("task_id", "name", "type", "actor_id", "node_id", "worker_pid", "start", "end",
              "state", "error", "deps")
ACTOR_FIELDS = ("actor_id", "class_name", "name", "namespace", "state", "node_id", "pid",
                "restarts", "death_cause", "state_at")


def summary(error) -> str:
    """The first lines of an error's text, at most ERROR_CHARS characters."""
    text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
    return text[:ERROR_CHARS]


def payload_error(payload) -> str:
    """The summary of an ERROR payload this process made or was handed (a
    worker's own result, or its argument's failure)."""
    try:
        return summary(deserialize(payload[1]))
    except Exception as error:   # an exception class that does not unpickle here
        return f"(an error that cannot be read here: {type(error).__name__})"


class TaskEvents:
    """An agent's rings of task events and actor changes (``capacity`` each)."""

    __slots__ = ("node_id", "on", "ring", "actors")

    def __init__(self, node_id: str, capacity: int):
        self.node_id = node_id
        self.on = capacity > 0
        self.ring: collections.deque = collections.deque(maxlen=max(capacity, 1))
        self.actors: collections.deque = collections.deque(maxlen=max(capacity, 1))

    # ----------------------------------------------- hooks of AgentState

    def submitted(self, task) -> None:
        if self.on:
            spec = task.spec
            self.ring.append((_time(), SUBMITTED, task.task_id, spec[_NAME], NORMAL, None, None,
                              None, spec[_DEPS]))

    def queued(self, task) -> None:
        if self.on:
            self.ring.append((_time(), QUEUED, task.task_id, None, None, None, None, None,
                              None))

    def retried(self, task) -> None:
        if self.on:
            self.ring.append((_time(), RETRIED, task.task_id, None, None, None, None, None,
                              None))

    def failed(self, task, error: BaseException) -> None:
        """The agent failed the task (unschedulable, lost argument, cancelled, ...)."""
        if self.on:
            event = CANCELLED if type(error).__name__ == "TaskCancelledError" else FAILED
            self.ring.append((_time(), event, task.task_id, task.spec[ts.FUNCTION_NAME], None,
                              None, None, summary(error), None))

    def from_worker(self, events: list) -> None:
        """A worker's TASK_EVENTS, kept as they came (the ring bounds them);
        ill-formed ones are skipped when read (recorded()), off the hot path."""
        if self.on:
            self.ring.extend(events)

    def recorded(self):
        """The well-formed events of the ring, oldest first."""
        return [event for event in self.ring if _well_formed(event)]

    def actor(self, actor, old, new, reason) -> None:
        """Every actor state change (lightray.states.Transitions), but of the
        proxies of actors that only run elsewhere."""
        if not self.on or actor.borrowed:
            return
        description = actor.description or {}
        name_key = actor.name_key or (None, None)
        worker = actor.worker
        if type(reason) is tuple:
            reason = " ".join(str(part) for part in reason)
        self.actors.append((_time(), actor.actor_id, description.get("class_name"),
                            name_key[1], name_key[0], new, actor.home or self.node_id,
                            getattr(worker, "pid", None) or None, actor.incarnation,
                            str(reason) if new == "dead" else None))

    # ----------------------------------------------------------- answers

    def task_rows(self) -> list:
        """One row per task this node recorded (TASK_FIELDS), plain data."""
        rows: dict = {}
        node_id = self.node_id
        for event in self.recorded():
            task_id = event[2]
            row = rows.get(task_id)
            if row is None:
                row = rows[task_id] = [task_id.hex(), None, None, None, node_id, None, None,
                                       None, None, None, 0, None, 0.0, 0]
            fold(row, event)
        return list(rows.values())

    def runs(self) -> list:
        """Each run of a task or call here (RUN_FIELDS): a RUNNING and the end
        that followed it on the same worker (end None: still running)."""
        open_runs: dict = {}
        runs = []
        for event in self.recorded():
            kind = event[1]
            if kind == RUNNING:
                run = [event[2].hex(), event[3], event[4], _hex(event[5]), self.node_id,
                       event[6], event[0], None, "RUNNING", None,
                       [task_of(d).hex() for d in event[8] or ()]]
                open_runs[(event[2], event[6])] = run
                runs.append(run)
            elif kind in ENDS and event[6] is not None:
                run = open_runs.pop((event[2], event[6]), None)
                if run is not None:
                    run[7], run[8], run[9] = event[0], STATE_AFTER[kind], event[7]
        return runs

    def actor_rows(self) -> list:
        """The latest change of every actor recorded here (ACTOR_FIELDS)."""
        latest: dict = {}
        for change in self.actors:
            latest[change[1]] = change
        return [[c[1].hex(), c[2], c[3], c[4], c[5].upper(), c[6], c[7], c[8], c[9], c[0]]
                for c in latest.values()]


_KINDS = (None, NORMAL, ACTOR_TASK, ACTOR_CREATION)


def _well_formed(e) -> bool:
    """An event a worker may send: every field of its type (None where unknown)."""
    return (type(e) is tuple and len(e) == EVENT_LENGTH and type(e[0]) is float
            and type(e[1]) is str and e[1] in EVENTS and type(e[2]) is bytes
            and (e[3] is None or type(e[3]) is str) and (e[4] is None or type(e[4]) is str)
            and e[4] in _KINDS and (e[5] is None or type(e[5]) is bytes)
            and (e[6] is None or type(e[6]) is int) and (e[7] is None or type(e[7]) is str)
            and (e[8] is None or (type(e[8]) in (list, tuple)
                                  and all(type(d) is bytes for d in e[8]))))


def fold(row: list, event: tuple) -> None:
    """Apply one event to a task row (TASK_FIELDS)."""
    at, kind = event[0], event[1]
    if event[3] is not None and row[1] is None:
        row[1] = event[3]
    if event[4] is not None:
        row[2] = event[4]
    if event[5] is not None:
        row[6] = event[5].hex()
    if kind == SUBMITTED:
        row[7] = at if row[7] is None else min(row[7], at)
    elif kind == RUNNING:
        row[5] = event[6]
        row[8] = at if row[8] is None else max(row[8], at)
        row[13] += 1
    elif kind in ENDS:
        if kind == RETRIED:
            row[10] += 1
        else:
            row[9] = at if row[9] is None else max(row[9], at)
        if event[6] is not None:
            row[5] = event[6]
        if event[7] is not None and kind != FINISHED:
            row[11] = event[7]
    if at >= row[12]:
        row[12] = at
        row[3] = STATE_AFTER[kind]


def merge_task_rows(rows) -> list:
    """The rows of one task from several nodes as one (lists, TASK_FIELDS):
    its state as the latest change anywhere made it, its node where it last
    ran, the retries its worker and agents saw."""
    merged: dict = {}
    for row in rows:
        have = merged.get(row[0])
        if have is None:
            merged[row[0]] = list(row)
            continue
        if have[1] is None:
            have[1] = row[1]
        if row[2] is not None and row[2] != NORMAL or have[2] is None:
            have[2] = row[2] or have[2]
        for index in (5, 6, 11):
            if have[index] is None:
                have[index] = row[index]
        if row[7] is not None:
            have[7] = row[7] if have[7] is None else min(have[7], row[7])
        if row[8] is not None and (have[8] is None or row[8] > have[8]):
            have[8], have[4], have[5] = row[8], row[4], row[5]
        if row[9] is not None:
            have[9] = row[9] if have[9] is None else max(have[9], row[9])
        have[10] = max(have[10], row[10])
        have[13] += row[13]
        if row[12] > have[12]:
            have[12], have[3] = row[12], row[3]
            if have[8] is None:
                have[4] = row[4]
            if row[11] is not None:
                have[11] = row[11]
    for row in merged.values():
        # A run again after its worker died counts as a retry too.
        row[10] = max(row[10], row[13] - 1)
        if row[2] is None:
            row[2] = NORMAL
    return list(merged.values())


def _hex(ident):
    return ident.hex() if type(ident) is bytes else ident


class WorkerEvents:
    """A worker's recorder: RUNNING when a task or call starts, its end when it
    answers; sent to the agent (send: the client's send) at most every
    FLUSH_EVERY seconds, and when the worker goes idle."""

    __slots__ = ("on", "buffer", "pid", "send", "last_flush", "message")

    def __init__(self, on: bool, pid: int, send, message: int):
        self.on = on
        self.buffer: collections.deque = collections.deque(maxlen=WORKER_BUFFER)
        self.pid = pid
        self.send = send
        self.message = message     # the TASK_EVENTS op code
        self.last_flush = 0.0

    def start(self, spec, kind: str) -> None:
        if self.on:
            self.buffer.append((_time(), RUNNING, spec[_TASK_ID], spec[_NAME], kind,
                                spec[_FUNCTION_ID] if kind is ACTOR_TASK else None,
                                self.pid, None, spec[_DEPS]))

    def end(self, spec, payloads, retryable: bool = False) -> None:
        """payloads: the task's results (an ERROR one: it failed)."""
        if not self.on:
            return
        event, error = FINISHED, None
        if payloads and payloads[0][0] == ERROR:
            error = payload_error(payloads[0])
            if retryable and spec[ts.MAX_RETRIES] - spec[ts.ATTEMPTS_MADE] != 0:
                event = RETRIED
            elif error.startswith("TaskCancelledError"):
                event = CANCELLED
            else:
                event = FAILED
        now = _time()
        self.buffer.append((now, event, spec[_TASK_ID], None, None, None, self.pid, error,
                            None))
        if now - self.last_flush > FLUSH_EVERY:
            self.flush(now)

    def idle(self) -> tuple:
        """The worker's loop found nothing to do: send what is kept (an empty
        tuple back, for the loop to iterate)."""
        if self.buffer:
            self.flush(_time())
        return ()

    def flush(self, now: float) -> None:
        self.last_flush = now
        buffer = self.buffer
        batch = [buffer.popleft() for _ in range(len(buffer))]
        if batch:
            try:
                self.send([(self.message, batch)])
            except Exception:   # the agent is going away: the events go with it
                pass
