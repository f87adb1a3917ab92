"""Cancelling tasks, and the tasks they submitted, on every node. No I/O.

    CANCEL(object id, force, recursive) from a process ─┐
    FORWARD_CANCEL(object id, force, recursive) from a peer ─┼─▶ cancel(task id)
    DIRECT_CANCEL(worker, task, force, recursive) ─▶ the children of a leased worker
        WAITING / QUEUED  ──▶ fails with TaskCancelledError, never runs
        FORWARDED         ──▶ FORWARD_CANCEL to the node running it (which
                              cancels what it submitted there)
        on a worker       ──▶ KeyboardInterrupt (CANCEL_TASK), or force: its worker killed
        recursive         ──▶ the same for every live task it submitted

Children are known from SUBMITs: a worker's submission is the child of the
task it runs (for a leased worker, whose task the agent never sees, of the
worker itself). A cancelled task is never retried (``task.cancelled``).

``CancelBook`` is a part of ``AgentState`` (lightray.agent.state, its
``cancels`` field): it owns the children table and reaches the task path and
the workers only through the functions passed to it.
"""
from __future__ import annotations

from .. import exceptions
from .. import task_spec as ts
from ..ids import TASK_ID_BYTES
from ..states import FINISHED, FORWARDED, QUEUED, WAITING
from ..transport import messages as m

PRUNE_AT = 256     # a leased worker's children list is pruned of finished tasks past this


class CancelBook:
    __slots__ = ("effects", "tasks", "children", "_fail_with", "_cancel_dispatched")

    def __init__(self, effects, *, tasks: dict, fail_with, cancel_dispatched):
        self.effects = effects           # lightray.agent.effects.Effects
        self.tasks = tasks
        self.children: dict = {}         # task id (or leased worker id) -> child task ids
        self._fail_with = fail_with      # (task, exception)
        self._cancel_dispatched = cancel_dispatched   # (task, force): on one of our workers

    def note_submit(self, worker, task) -> None:
        """A worker submitted task: remember it as a child of what it runs."""
        if worker is None or worker.actor is not None:
            return
        if worker.lessee is not None:
            parent = worker.worker_id
        elif worker.queue:
            parent = worker.queue[0].task_id
        else:
            return
        children = self.children.get(parent)
        if children is None:
            self.children[parent] = [task.task_id]
            return
        if len(children) >= PRUNE_AT:
            tasks = self.tasks
            children[:] = [t for t in children if t in tasks]
        children.append(task.task_id)

    def finished(self, task_id: bytes) -> None:
        """A task is over: cancelling it later does nothing, to it or its children."""
        self.children.pop(task_id, None)

    def on_cancel(self, object_id: bytes, force: bool, recursive: bool = True) -> None:
        self._cancel_all([object_id[:TASK_ID_BYTES]], force, recursive)

    def cancel_children_of_worker(self, worker_id: str, force: bool) -> None:
        """A leased worker's task was cancelled (DIRECT_CANCEL): its children too."""
        self._cancel_all(self.children.pop(worker_id, ()), force, True)

    def _cancel_all(self, task_ids, force: bool, recursive: bool) -> None:
        stack = list(task_ids)
        while stack:                      # iterative: a deep tree must not recurse
            task_id = stack.pop()
            if recursive:
                stack.extend(self.children.pop(task_id, ()))
            task = self.tasks.get(task_id)
            if task is None or task.state == FINISHED or task.cancelled:
                continue
            self._cancel_one(task, force, recursive)

    def _cancel_one(self, task, force: bool, recursive: bool) -> None:
        task.cancelled = True
        if task.state == WAITING or task.state == QUEUED:
            # A QUEUED task stays in its deque; the scheduler skips finished ones.
            self._fail_with(task, exceptions.TaskCancelledError(
                f"task {task.spec[ts.FUNCTION_NAME]}() was cancelled"))
        elif task.state == FORWARDED:
            self.effects.peer_outbox[task.node].append(
                (m.FORWARD_CANCEL, task.task_id + b"\x00\x00", force, recursive))
        elif task.worker is not None:
            self._cancel_dispatched(task, force)
