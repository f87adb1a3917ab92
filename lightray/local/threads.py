"""Which task or actor this thread runs, in local mode.

The runtime context (get_runtime_context()) of a thread running a task or
an actor's call reads this thread's ThreadContext; a get/wait in such a
thread hands the task's CPU back while it blocks (``task``).
"""
from __future__ import annotations

import threading

from ..runtime_context import set_thread_state, thread_state


class ThreadContext:
    """What get_runtime_context() says in this thread (the fields of
    lightray.runtime_context's state), and the task it runs."""

    __slots__ = ("node_id", "task_id", "actor_id", "assigned", "task")

    def __init__(self, node_id: str, task_id, actor_id, assigned: dict, task=None):
        self.node_id = node_id
        self.task_id = task_id
        self.actor_id = actor_id
        self.assigned = assigned
        self.task = task              # the LocalTask this thread runs, if any

    @property
    def worker_id(self) -> str:
        """The thread's name stands for the worker (read in that thread)."""
        return f"local-{threading.current_thread().name}"

    def __bool__(self):
        return True


# Install a ThreadContext for this thread (None: none); returns the previous
# one. current_context(): this thread's ThreadContext, or None outside tasks
# and actors. (Aliases, not wrappers: a task's run calls them thrice.)
set_thread_context = set_thread_state
current_context = thread_state
