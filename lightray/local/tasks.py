"""Tasks in local mode: the resource pool, the queue and the threads that run them.

    submit ──deps done?──▶ queue ──resources fit?──▶ a pool thread runs it ──▶ results
                 │ (num_cpus=0: runs at once, inline, in the submitting thread)
                 └─ infeasible request: fails at once (TaskUnschedulableError)

States of a task: WAITING (for its arguments) → QUEUED (for resources) →
RUNNING → DONE; cancel takes WAITING and QUEUED straight to DONE. The pool
hands back a task's CPU while it blocks in get/wait (so nested tasks never
deadlock) and takes it again when it goes on, like a node agent does.

Actor creations go through the same queue (``Placement``): an actor starts
once the resources it asks for to be placed are free.
"""
from __future__ import annotations

import collections
import queue
import threading

from .. import exceptions
from ..resources import CPU, ResourcePool, from_units
from .running import (Call, DepFailed, Interruptible, arguments, fail_all, guarded,
                      interrupt_thread, should_retry, store_results, task_error)
from .threads import ThreadContext, set_thread_context

WAITING, QUEUED, RUNNING, DONE = "WAITING", "QUEUED", "RUNNING", "DONE"
IDLE_THREAD_EXIT_S = 10.0


class LocalTask:
    __slots__ = ("call", "function", "request", "retries_left", "retry_exceptions", "state",
                 "allocation", "cancelled", "forced", "interruptible", "waiting_for")

    def __init__(self, call: Call, function, request: dict, max_retries: int, retry_exceptions):
        self.call = call
        self.function = function
        self.request = request
        self.retries_left = max_retries
        self.retry_exceptions = retry_exceptions
        self.state = WAITING
        self.allocation = None
        self.cancelled = False
        self.forced = False
        self.interruptible = Interruptible()
        self.waiting_for = 0

    def launch(self, scheduler, allocation) -> None:
        scheduler.run_on_pool_thread(self, allocation)


class Placement:
    """An actor waiting for the resources to start: ``request`` must fit,
    ``hold`` is taken for its whole life."""

    __slots__ = ("request", "hold", "start", "state", "cancelled")

    def __init__(self, request: dict, hold: dict, start):
        self.request = request
        self.hold = hold
        self.start = start            # start(allocation) in the actor's own thread
        self.state = QUEUED
        self.cancelled = False

    def launch(self, scheduler, allocation) -> None:
        self.state = RUNNING
        self.start(allocation)


class LocalScheduler:
    """Resources, queue and pool threads of one local-mode runtime."""

    def __init__(self, total: dict, objects, node_id: str):
        self.inline = total.get(CPU, 0) == 0
        self.pool = ResourcePool(total)
        self.objects = objects
        self.node_id = node_id
        self.lock = threading.Lock()            # queue, pool, task states, interrupts
        self.queue: collections.deque = collections.deque()
        self.tasks: dict = {}                   # task id -> LocalTask not yet DONE
        self._idle: list = []                   # work queues of idle pool threads
        self._thread_count = 0
        self.closed = False

    # -------------------------------------------------------------- feasibility

    def infeasible(self, request: dict, what: str):
        """The TaskUnschedulableError for a request this runtime can never
        meet, or None (with num_cpus=0 CPUs are not counted: tasks run inline)."""
        checked = {k: v for k, v in request.items() if not (self.inline and k == CPU)}
        missing = self.pool.unsatisfiable(checked)
        if missing is None:
            return None
        total = from_units(self.pool.total.get(missing, 0))
        return exceptions.TaskUnschedulableError(
            f"{what} asks for {request[missing]} {missing} but this runtime has {total} "
            f"{missing} in total (resources: {self.pool.as_floats('total')}); it can never run")

    # --------------------------------------------------------------- submitting

    def submit(self, task: LocalTask) -> None:
        call = task.call
        error = self.infeasible(task.request, f"task {call.name}()")
        if error is not None:
            fail_all(call, self.objects, error)
            return
        if self.inline:
            self._run_inline(task)
            return
        with self.lock:
            self.tasks[call.task_id] = task
            task.waiting_for = len(call.deps) + 1
        for ref in call.deps:
            self.objects.when_done(ref._id, lambda: self._dep_done(task))
        self._dep_done(task)

    def _run_inline(self, task: LocalTask) -> None:
        """num_cpus=0: run now, in the submitting thread, once its arguments
        exist (those of actor calls may still be coming)."""
        dep_ids = [ref._id for ref in task.call.deps]
        if dep_ids:
            self.objects.wait(dep_ids, len(dep_ids), None, sliced=True)
        with self.lock:
            self.tasks[task.call.task_id] = task
            task.state = RUNNING
        self._run(task, None)

    def _dep_done(self, task: LocalTask) -> None:
        with self.lock:
            task.waiting_for -= 1
            if task.waiting_for or task.state != WAITING:
                return
            task.state = QUEUED
            self.queue.append(task)
        self.dispatch()

    def place(self, placement: Placement) -> None:
        """Queue an actor's start (the caller checked feasibility)."""
        if self.inline:
            placement.request = {k: v for k, v in placement.request.items() if k != CPU}
            placement.hold = {k: v for k, v in placement.hold.items() if k != CPU}
        with self.lock:
            self.queue.append(placement)
        self.dispatch()

    def dispatch(self) -> None:
        """Launch, in queue order, everything whose resources fit now."""
        while True:
            with self.lock:
                if self.closed:
                    return
                chosen = None
                for item in self.queue:
                    allocation = self.pool.try_acquire(item.request)
                    if allocation is None:
                        continue
                    if isinstance(item, Placement):
                        self.pool.release(allocation)
                        allocation = self.pool.try_acquire(item.hold)
                    chosen = item
                    break
                if chosen is None:
                    return
                self.queue.remove(chosen)
                if isinstance(chosen, LocalTask):
                    chosen.state = RUNNING
                    chosen.allocation = allocation
            chosen.launch(self, allocation)

    def release(self, allocation) -> None:
        with self.lock:
            self.pool.release(allocation)
        self.dispatch()

    # ---------------------------------------------------------------- threads

    def run_on_pool_thread(self, task: LocalTask, allocation) -> None:
        with self.lock:
            work = self._idle.pop() if self._idle else None
            if work is None:
                self._thread_count += 1
                number = self._thread_count
        if work is not None:
            work.put((task, allocation))
            return
        work = queue.SimpleQueue()
        work.put((task, allocation))
        threading.Thread(target=self._pool_thread, args=(work,), daemon=True,
                         name=f"lightray-local-task-{number}").start()

    def _pool_thread(self, work: queue.SimpleQueue) -> None:
        while True:
            try:
                item = work.get(timeout=IDLE_THREAD_EXIT_S)
            except queue.Empty:
                with self.lock:
                    if work in self._idle:
                        self._idle.remove(work)
                        return
                continue     # handed a task just as it timed out
            if item is None:
                return
            task, allocation = item
            self._run(task, allocation)
            with self.lock:
                if self.closed:
                    return
                self._idle.append(work)

    # ---------------------------------------------------------------- running

    def _run(self, task: LocalTask, allocation) -> None:
        call = task.call
        assigned = dict(task.request)
        context = ThreadContext(self.node_id, call.task_id, None, assigned, task)
        previous = set_thread_context(context)
        try:
            while True:
                kind, value = guarded(task.interruptible, self.lock,
                                      lambda: self._invoke(task))
                if not self._after_attempt(task, kind, value):
                    break
        finally:
            set_thread_context(previous)
            with self.lock:
                self.tasks.pop(call.task_id, None)
                task.state = DONE
                held, task.allocation = task.allocation, None
            if held is not None:
                self.release(held)

    def _invoke(self, task: LocalTask):
        call = task.call
        args, kwargs = arguments(call, self.objects)
        result = task.function(*args, **kwargs)
        if not task.forced:
            store_results(call, self.objects, result)
        return None

    def _after_attempt(self, task: LocalTask, kind: str, value) -> bool:
        """Settle an attempt's outcome; True to run it again (a retry)."""
        call, objects = task.call, self.objects
        if kind == "ok" or task.forced:
            return False          # forced: its refs failed when it was cancelled
        if kind == "interrupted" and task.cancelled:
            fail_all(call, objects, exceptions.TaskCancelledError(
                f"task {call.name}() was cancelled while running"))
            return False
        if isinstance(value, DepFailed):
            fail_all(call, objects, value.error)
            return False
        if task.retries_left > 0 and not task.cancelled \
                and should_retry(task.retry_exceptions, value):
            task.retries_left -= 1
            task.interruptible = Interruptible()
            return True
        fail_all(call, objects, task_error(call.name, value, self.node_id))
        return False

    # ----------------------------------------------------------- blocking

    def blocked(self, task: LocalTask) -> None:
        """task waits in get/wait: its CPU goes back to the pool meanwhile."""
        with self.lock:
            if task.allocation is None:
                return
            self.pool.release_cpu(task.allocation)
        self.dispatch()

    def unblocked(self, task: LocalTask) -> None:
        with self.lock:
            if task.allocation is not None:
                self.pool.reacquire_cpu(task.allocation)

    # ------------------------------------------------------------- cancelling

    def cancel(self, task_id: bytes, force: bool) -> None:
        """A queued task never runs; a running one gets KeyboardInterrupt in
        its thread. force=True also fails its refs at once and gives its
        resources back (a thread cannot be killed: it ends when the
        interrupt lands); it is never retried."""
        objects = self.objects
        with self.lock:
            task = self.tasks.get(task_id)
            if task is None or task.state == DONE:
                return
            task.cancelled = True
            if task.state in (WAITING, QUEUED):
                if task in self.queue:
                    self.queue.remove(task)
                task.state = DONE
                self.tasks.pop(task_id, None)
                started = False
            else:
                started = True
                state = task.interruptible
                if state.in_user_code and not state.interrupt_sent:
                    state.interrupt_sent = interrupt_thread(state.thread_id)
                held = None
                if force:
                    task.forced = True
                    held, task.allocation = task.allocation, None
        call = task.call
        if not started:
            fail_all(call, objects, exceptions.TaskCancelledError(
                f"task {call.name}() was cancelled before it started"))
            return
        if force:
            fail_all(call, objects, exceptions.TaskCancelledError(
                f"task {call.name}() was force-cancelled while running"))
            if held is not None:
                self.release(held)

    def close(self) -> None:
        """Stop: idle threads end; running tasks are interrupted (best effort)."""
        with self.lock:
            self.closed = True
            idle, self._idle = self._idle, []
            self.queue.clear()
            for task in self.tasks.values():
                state = task.interruptible
                if task.state == RUNNING and state.in_user_code and not state.interrupt_sent:
                    task.cancelled = True
                    state.interrupt_sent = interrupt_thread(state.thread_id)
        for work in idle:
            work.put(None)
