"""Lineage: how the owner makes an object again when its only copy is lost. No I/O.

    SUBMIT here ──record(task)──▶ records[task id] = the Task, and a live count
    an object freed here ──released(id)──▶ its task's record: live - 1; at 0 the
        record goes, and with it one count on each record that made an argument
    node X died ──on_node_died(X)──▶
        objects whose only copy was on X: their creating tasks run again
        (arguments that are gone too are made again first, iteratively), or
        the object fails with ObjectLostError saying why (OwnerDiedError when
        X owned it)
        tasks a live peer sent here whose arguments were still on X: handed
        back to that peer (RESULT with no descriptors); it owns the arguments,
        rebuilds them and sends the task again

The owner of a task's results is the agent it was submitted to (wherever it
ran). A record lives while one of its task's results is in the object table,
or while the record of a task that took one of them as an argument lives
(rebuilding that task may need the argument made again). Records are bounded
by LIGHTRAY_LINEAGE_BYTES per agent, oldest dropped first; 0 turns lineage
off. A rebuild is a retry: it takes one of the task's ``max_retries``.

``LineageBook`` is a part of ``AgentState`` (lightray.agent.state, its
``lineage`` field). It works on the object table and the task table it is
given and reaches the task path (submitting the rebuilt tasks) and the pulls
(ending one from the dead node) only through the functions passed to it.
"""
from __future__ import annotations

from .. import config, exceptions, serialization
from .. import task_spec as ts
from ..ids import TASK_ID_BYTES, return_ids
from ..serialization import ERROR
from ..states import FINISHED, PULLING, QUEUED, REMOTE, WAITING
from .records import ObjectEntry, Task

RECORD_BYTES = 200          # a record's own cost beyond its pickled arguments (measured
                            # with sys.getsizeof of the Task, its spec and the dict slot)
EVICTED_KEPT = 100_000      # ids of evicted records remembered, to say why an object is lost


# A record is a list (cheaper to make than an object, on every submission):
TASK, LIVE, SIZE = range(3)   # the latest Task run for it (its spec, retries left, owner);
                              # its results in the table + live records using one of them;
                              # bytes counted against the limit


class LineageBook:
    __slots__ = ("transitions", "objects", "tasks", "directory", "limit", "records", "bytes",
                 "evicted", "rebuilt", "_submit", "_await_deps", "_end_pull", "_hand_back")

    def __init__(self, transitions, *, objects: dict, tasks: dict, directory, submit,
                 await_deps, end_pull, hand_back, limit: int | None = None):
        self.transitions = transitions   # lightray.states.Transitions
        self.objects = objects           # the object table
        self.tasks = tasks
        self.directory = directory       # ObjectDirectory (lightray.agent.objects)
        # bytes of records kept at most (LIGHTRAY_LINEAGE_BYTES); 0: lineage off
        self.limit = config.lineage_bytes() if limit is None else limit
        self.records: dict = {}          # task id -> [TASK, LIVE, SIZE], oldest first
        self.bytes = 0
        self.evicted: dict = {}          # task ids whose record was dropped for room
        self.rebuilt = 0                 # tasks run again to rebuild lost objects
        self._submit = submit            # (task): check it and wait for its arguments
        self._await_deps = await_deps    # (task): wait for its arguments again
        self._end_pull = end_pull        # (object id, entry): stop pulling it
        self._hand_back = hand_back      # (task): give a peer's task back to it

    # ------------------------------------------------------------ bookkeeping

    def record(self, task) -> None:
        """A task submitted here (its results are owned here)."""
        if not self.limit:
            return
        spec = task.spec
        args = spec[ts.ARGS]
        size = RECORD_BYTES + len(args) if args is not None else RECORD_BYTES
        records = self.records
        task_id = task.task_id
        if task_id in records:                  # (a direct task retried through us)
            self.bytes -= records.pop(task_id)[SIZE]
        records[task_id] = [task, spec[ts.NUM_RETURNS], size]
        for object_id in spec[ts.DEPS]:
            parent = records.get(object_id[:TASK_ID_BYTES])
            if parent is not None:
                parent[LIVE] += 1
        if spec[ts.CONTAINED]:
            for object_id in spec[ts.CONTAINED]:
                parent = records.get(object_id[:TASK_ID_BYTES])
                if parent is not None:
                    parent[LIVE] += 1
        self.bytes += size
        if self.bytes > self.limit:
            self._evict()

    def released(self, object_id: bytes) -> None:
        """object_id left the object table (called by the directory on free)."""
        record = self.records.get(object_id[:TASK_ID_BYTES])
        if record is not None:
            record[LIVE] -= 1
            if record[LIVE] <= 0:
                self._drop(object_id[:TASK_ID_BYTES])

    def _drop(self, task_id: bytes) -> None:
        """Forget a record, and the count it held on its arguments' records."""
        records = self.records
        stack = [task_id]
        while stack:
            record = records.pop(stack.pop(), None)
            if record is None:
                continue
            self.bytes -= record[SIZE]
            spec = record[TASK].spec
            for object_id in (spec[ts.DEPS] + spec[ts.CONTAINED]
                              if spec[ts.CONTAINED] else spec[ts.DEPS]):
                parent_id = object_id[:TASK_ID_BYTES]
                parent = records.get(parent_id)
                if parent is not None:
                    parent[LIVE] -= 1
                    if parent[LIVE] <= 0:
                        stack.append(parent_id)

    def _evict(self) -> None:
        records = self.records
        while self.bytes > self.limit and records:
            task_id = next(iter(records))
            self.evicted[task_id] = None
            if len(self.evicted) > EVICTED_KEPT:
                del self.evicted[next(iter(self.evicted))]
            self._drop(task_id)

    # ------------------------------------------------------------ a node died

    def on_node_died(self, node_id: str, why: str) -> None:
        """Before the membership forgets where objects were: hand back the
        peers' tasks whose arguments were on node_id, rebuild or fail the
        objects whose only copy was there."""
        objects = self.objects
        for task in list(self.tasks.values()):
            if (task.origin is not None and task.origin != node_id
                    and (task.state == WAITING or task.state == QUEUED)
                    and task.spec[ts.NUM_RETURNS] > 0
                    and any(_only_on(objects.get(i), node_id)
                            for i in task.spec[ts.DEPS] + task.spec[ts.CONTAINED])):
                self._hand_back(task)
        lost = [object_id for object_id, entry in objects.items() if _only_on(entry, node_id)]
        if lost:
            self.rebuild(lost, node_id, why)

    def rebuild(self, lost: list, node_id: str, why: str) -> None:
        """Run again the tasks that made the lost objects (and, first, those
        that made their arguments, if gone too); fail what cannot be rebuilt."""
        objects, records, tasks = self.objects, self.records, self.tasks
        plan: list = []                   # records to run again
        planned: set = set()
        failed: dict = {}                 # object id -> why it cannot be rebuilt
        stack = list(lost)
        while stack:                      # iterative: a chain may be long
            object_id = stack.pop()
            task_id = object_id[:TASK_ID_BYTES]
            if task_id in planned:
                continue
            running = tasks.get(task_id)
            if running is not None and running.state != FINISHED:
                continue                  # still being made (or retried by the membership)
            record = records.get(task_id)
            reason = self._why_not(object_id, record, node_id)
            if reason is not None:
                failed[object_id] = reason
                continue
            planned.add(task_id)
            plan.append(record)
            spec = record[TASK].spec
            for dep in spec[ts.DEPS] + spec[ts.CONTAINED]:
                entry = objects.get(dep)
                if entry is None or _only_on(entry, node_id):
                    stack.append(dep)
        # Every lost result and every argument made again is pending, and
        # pinned by its task, before any task is submitted: a task must wait
        # for them, not find them ready (nor freed).
        made_pending = set()
        for record in plan:
            spec = record[TASK].spec
            for object_id in return_ids(spec[ts.TASK_ID], spec[ts.NUM_RETURNS]):
                entry = objects.get(object_id)
                if entry is not None and _only_on(entry, node_id):
                    self._make_pending(object_id, entry, ("rebuilding after", node_id))
                    made_pending.add(object_id)
            for dep in spec[ts.DEPS] + spec[ts.CONTAINED]:
                if dep not in objects:
                    entry = objects[dep] = ObjectEntry(0)
                    self._make_pending(dep, entry, ("rebuilding after", node_id))
                    parent = records.get(dep[:TASK_ID_BYTES])
                    if parent is not None:
                        parent[LIVE] += 1   # its entry is in the table again
                    if dep[:TASK_ID_BYTES] not in planned:
                        failed.setdefault(dep, self._why_not(dep, parent, node_id)
                                          or "its creating task is not rebuilt")
            self.directory.pin(spec[ts.DEPS])
            self.directory.pin(spec[ts.CONTAINED])
        for object_id, reason in failed.items():
            entry = objects.get(object_id)
            if entry is None:
                continue
            text = (f"object {object_id.hex()} is lost: its only copy was on node {node_id}, "
                    f"which died ({why}); ")
            if reason is _OWNER_DIED:
                error = exceptions.OwnerDiedError(
                    text + f"its owner, node {node_id}, died with it, so nothing can rebuild it")
            else:
                error = exceptions.ObjectLostError(text + reason)
            if not entry.pending:
                self._make_pending(object_id, entry, ("lost with", node_id))
            self.directory.set_ready(object_id, entry,
                                     (ERROR, serialization.dumps_exception(error)), ())
        if made_pending:
            # Queued tasks took these for ready (on another node): wait again.
            for task in list(tasks.values()):
                if task.state == QUEUED and any(
                        d in made_pending for d in task.spec[ts.DEPS]):
                    self._await_deps(task)
        for record in reversed(plan):     # arguments' tasks first (found last)
            old = record[TASK]
            spec = old.spec
            attempts = spec[ts.MAX_RETRIES] - old.retries_left + 1
            spec = spec[:ts.ATTEMPTS_MADE] + (attempts,) + spec[ts.STRATEGY:]
            task = Task(spec, old.owner)
            record[TASK] = task
            tasks[task.task_id] = task
            self.rebuilt += 1
            self.transitions.task(task, WAITING, ("rebuild: node died", node_id))
            self._submit(task)

    def _why_not(self, object_id: bytes, record, node_id: str):
        """None if the object's task can run again, else why not."""
        if record is None:
            if object_id[:TASK_ID_BYTES] in self.evicted:
                return (f"its lineage was evicted to stay under LIGHTRAY_LINEAGE_BYTES="
                        f"{self.limit}, so it cannot be rebuilt")
            if not self.limit:
                return "lineage reconstruction is off (LIGHTRAY_LINEAGE_BYTES=0)"
            entry = self.objects.get(object_id)
            if (entry is not None and not entry.owner
                    and (node_id in (entry.pinned_for or ()) or node_id in (entry.copies or ()))):
                return _OWNER_DIED        # not ours: the node that died gave it to us
            return ("it is a put object or an actor call's result (or owned by another "
                    "node), which lineage does not rebuild")
        spec = record[TASK].spec
        strategy = spec[ts.STRATEGY]
        if type(strategy) is tuple and strategy[1] == node_id and not strategy[2]:
            return (f"its task {spec[ts.FUNCTION_NAME]}() is pinned to node {node_id}, "
                    "so it cannot be rebuilt")
        if record[TASK].retries_left <= 0:
            return (f"its task {spec[ts.FUNCTION_NAME]}() has no retries left "
                    f"(max_retries={spec[ts.MAX_RETRIES]}), so it cannot be rebuilt")
        return None

    def _make_pending(self, object_id: bytes, entry, reason) -> None:
        make_pending(object_id, entry, reason, self.transitions, self.directory, self._end_pull)


def make_pending(object_id: bytes, entry, reason, transitions, directory, end_pull) -> None:
    """The object's value is gone: it will be made (or failed) again. What
    was known of it (a copy being pulled, where it was, the error it failed
    with, the refs its value held) is dropped; reason goes to the transition log.
    (Used here, and by lightray.agent.cluster.forwarding for a rerun sent to
    a node that knew the lost result.)"""
    if entry.spill == PULLING:
        end_pull(object_id, entry)
    if entry.spill is not None:
        transitions.object(object_id, entry, None, reason)
    contained, entry.contained = entry.contained, ()
    entry.payload = None
    entry.pending = True
    entry.location = None
    entry.remote_name = None
    entry.restore_queued = False
    for inner in contained:           # the value made again pins its own
        directory.unref(inner)


_OWNER_DIED = object()     # _why_not: the object's owner was the node that died


def _only_on(entry, node_id: str) -> bool:
    """Whether node_id held the only copy of this ready object."""
    return (entry is not None and entry.location == node_id and not entry.pending
            and (entry.spill == REMOTE or entry.spill == PULLING))
