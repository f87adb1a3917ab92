"""Tasks in local mode: the resource pool, the queue and the threads that run them.

    submit ──deps done?──▶ queue ──resources fit?──▶ a pool thread runs it ──▶ results
                 │ (num_cpus=0: runs at once, inline, in the submitting thread)
                 └─ infeasible request: fails at once (TaskUnschedulableError)

States of a task: WAITING (for its arguments) → QUEUED (for resources) →
READY (holding them, for a thread) → RUNNING → DONE; cancel takes the first
three straight to DONE. A thread about to wait in get for a READY task runs
it itself instead (no thread hop: that is most of local mode's speed). The pool
hands back a task's CPU while it blocks in get/wait (so nested tasks never
deadlock) and takes it again when it goes on, like a node agent does.

What a remote function's options mean here (resource units, shape,
feasibility, retries) is worked out once per TaskOptions (``TaskPlan``), so
a submit only makes the task's id, entries and refs and takes its resources.

Actor creations go through the same queue (``Placement``): an actor starts
once the resources it asks for to be placed are free.
"""
from __future__ import annotations

import collections
import threading

from .. import exceptions
from ..resources import CPU, GPU, Allocation, ResourcePool, from_units, shape_of, to_units
from .running import (Call, DepFailed, Interruptible, arguments, fail_all, guarded,
                      interrupt_thread, should_retry, store_results, task_error)
from .threads import ThreadContext, set_thread_context

WAITING, QUEUED, READY, RUNNING, DONE = "WAITING", "QUEUED", "READY", "RUNNING", "DONE"


class TaskPlan:
    """What submitting a remote function's task needs of its options,
    worked out once per (function, options) by LocalClient."""

    __slots__ = ("exported", "name", "function", "num_returns", "request", "units", "cpu",
                 "shape", "max_retries", "retry_exceptions", "feasible")

    def __init__(self, exported, options, scheduler: "LocalScheduler"):
        self.exported = exported
        self.name = exported.name
        self.function = exported.function
        self.num_returns = options.num_returns
        self.request = options.request
        self.units = {name: to_units(amount) for name, amount in options.request.items()}
        # The CPU units when CPU is all it asks for (most tasks), else None.
        self.cpu = self.units[CPU] if self.units.keys() == {CPU} else None
        self.shape = shape_of(options.request)
        self.max_retries = options.max_retries
        self.retry_exceptions = options.retry_exceptions
        # The runtime's total never changes: a request that fits it once always does.
        self.feasible = scheduler.infeasible(options.request, "") is None


class LocalTask:
    __slots__ = ("call", "function", "request", "units", "cpu", "shape", "retries_left",
                 "retry_exceptions", "state", "allocation", "cancelled", "forced",
                 "interruptible", "waiting_for", "children", "feasible")

    def __init__(self, call: Call, plan: TaskPlan):
        self.call = call
        self.function = plan.function
        self.request = plan.request
        self.units = plan.units
        self.cpu = plan.cpu
        self.shape = plan.shape
        self.feasible = plan.feasible
        self.retries_left = plan.max_retries
        self.retry_exceptions = plan.retry_exceptions
        self.state = WAITING
        self.allocation = None
        self.cancelled = False
        self.forced = False
        self.interruptible = Interruptible()
        self.waiting_for = 0
        self.children: list = []       # ids of the tasks it submitted

    def launch(self, scheduler, allocation) -> None:
        scheduler.run_on_pool_thread(self, allocation)


class Placement:
    """An actor waiting for the resources to start: ``request`` must fit,
    ``hold`` is taken for its whole life."""

    __slots__ = ("request", "shape", "hold", "start", "state", "cancelled")

    def __init__(self, request: dict, hold: dict, start):
        self.request = request
        self.shape = ("actor",) + shape_of(request)
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
        self._queued_shapes: collections.Counter = collections.Counter()   # shapes in queue
        self.tasks: dict = {}                   # task id -> LocalTask not yet DONE
        self.ready: collections.deque = collections.deque()   # READY tasks, in order
        self._work = threading.Condition(self.lock)          # a task is READY
        self._sleeping = 0                      # pool threads waiting, not woken
        self._waking = 0                        # woken (or new) ones yet to look at ready
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
        if not task.feasible:
            fail_all(call, self.objects, self.infeasible(task.request, f"task {call.name}()"))
            return
        if self.inline:
            self._run_inline(task)
            return
        if not call.deps:
            number = 0
            with self.lock:
                self.tasks[call.task_id] = task
                # Queued behind others: only dispatch can launch it, in queue
                # order; and not now if one of the same request waits ahead
                # (nothing queued fits until a release, which dispatches).
                queued = bool(self.queue)
                dispatch = queued and task.shape not in self._queued_shapes
                allocation = None if queued else self._take_locked(task)
                if allocation is None:
                    task.state = QUEUED
                    self._enqueue(task)
                else:
                    task.allocation = allocation
                    task.state = READY
                    self.ready.append(task)
                    number = self._wake_locked()
            if dispatch:
                self.dispatch()
            elif number:
                self._start_pool_thread(number)
            return
        with self.lock:
            self.tasks[call.task_id] = task
            task.waiting_for = len(call.deps) + 1
        for ref in call.deps:
            self.objects.when_done(ref._id, lambda: self._dep_done(task))
        self._dep_done(task)

    def _take_locked(self, task: LocalTask):
        """ResourcePool.try_acquire of task's request (under lock), inline
        for a request without GPUs (its units are worked out once per plan)."""
        cpu, units = task.cpu, task.units
        available = self.pool.available
        if cpu is not None:   # CPU only: most tasks
            if available.get(CPU, 0) < cpu:
                return None
            available[CPU] -= cpu
            return Allocation(units, [], 0)
        if GPU in units:
            return self.pool.try_acquire(task.request)
        for name, need in units.items():
            if available.get(name, 0) < need:
                return None
        for name, need in units.items():
            available[name] -= need
        return Allocation(units, [], 0)

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
            self._enqueue(task)
        self.dispatch()

    def place(self, placement: Placement) -> None:
        """Queue an actor's start (the caller checked feasibility)."""
        if self.inline:
            placement.request = {k: v for k, v in placement.request.items() if k != CPU}
            placement.shape = ("actor",) + shape_of(placement.request)
            placement.hold = {k: v for k, v in placement.hold.items() if k != CPU}
        with self.lock:
            self._enqueue(placement)
        self.dispatch()

    def dispatch(self) -> None:
        """Launch, in queue order, everything whose resources fit now."""
        while True:
            with self.lock:
                if self.closed:
                    return
                chosen = None
                # Queue order, but one failed try per request shape: a long
                # queue of equal tasks costs one try, not one per task.
                failed = set()
                shapes = len(self._queued_shapes)
                for item in self.queue:
                    shape = item.shape
                    if shape in failed:
                        continue
                    if type(item) is LocalTask:
                        allocation = self._take_locked(item)
                    else:
                        allocation = self.pool.try_acquire(item.request)
                    if allocation is None:
                        failed.add(shape)
                        if len(failed) == shapes:
                            break        # nothing queued fits
                        continue
                    if isinstance(item, Placement):
                        self.pool.release(allocation)
                        allocation = self.pool.try_acquire(item.hold)
                    chosen = item
                    break
                if chosen is None:
                    return
                self._dequeue(chosen)
                if isinstance(chosen, LocalTask):
                    chosen.allocation = allocation
            chosen.launch(self, allocation)

    def _enqueue(self, item) -> None:
        self.queue.append(item)
        self._queued_shapes[item.shape] += 1

    def _dequeue(self, item) -> None:
        self.queue.remove(item)
        left = self._queued_shapes[item.shape] - 1
        if left:
            self._queued_shapes[item.shape] = left
        else:
            del self._queued_shapes[item.shape]

    def release(self, allocation) -> None:
        with self.lock:
            self.pool.release(allocation)
            if not self.queue:
                return
        self.dispatch()

    # ---------------------------------------------------------------- threads

    def run_on_pool_thread(self, task: LocalTask, allocation) -> None:
        """task holds its resources: READY for the first pool thread free
        (or for a thread that waits for its result: ``help_with``)."""
        with self.lock:
            task.state = READY
            self.ready.append(task)
            number = self._wake_locked()
        if number:
            self._start_pool_thread(number)

    def _start_pool_thread(self, number: int) -> None:
        threading.Thread(target=self._pool_thread, daemon=True,
                         name=f"lightray-local-task-{number}").start()

    def _wake_locked(self) -> int:
        """Wake a sleeping pool thread if the READY tasks outnumber the
        threads already woken; the number of a new thread to start if none
        sleeps, else 0. (A woken thread takes one READY task and wakes the
        next if more are left, so a getter that runs its own task, the
        common case, costs no wake-up.)"""
        if len(self.ready) <= self._waking:
            return 0
        self._waking += 1
        if self._sleeping:
            self._sleeping -= 1
            self._work.notify()
            return 0
        self._thread_count += 1
        return self._thread_count

    def _pool_thread(self) -> None:
        # Pool threads live until close: without a timeout, a return from
        # wait() is always a wake-up (or the close).
        with self.lock:
            self._waking -= 1             # started woken: it looks at ready now
        while True:
            with self.lock:
                while not self.ready:
                    if self.closed:
                        return
                    self._sleeping += 1
                    self._work.wait()
                    if self.closed:
                        return
                    self._waking -= 1
                task = self.ready.popleft()
                task.state = RUNNING
                number = self._wake_locked()   # more READY left: the next thread
            if number:
                self._start_pool_thread(number)
            self._run(task, task.allocation)

    def help_with(self, task_id: bytes) -> bool:
        """Run, in this thread, the task task_id if it is READY (the caller
        would only wait for it); whether it was."""
        with self.lock:
            task = self.tasks.get(task_id)
            if task is None or task.state != READY:
                return False
            self.ready.remove(task)
            task.state = RUNNING
        self._run(task, task.allocation)
        return True

    # ---------------------------------------------------------------- running

    def _run(self, task: LocalTask, allocation) -> None:
        call = task.call
        previous = set_thread_context(
            ThreadContext(self.node_id, call.task_id, None, task.request, task))
        try:
            while True:
                kind, value = guarded(task.interruptible, self.lock, self._invoke, task)
                if kind == "ok" or not self._after_attempt(task, kind, value):
                    break
        finally:
            set_thread_context(previous)
            with self.lock:
                self.tasks.pop(call.task_id, None)
                task.state = DONE
                held, task.allocation = task.allocation, None
                if held is not None:
                    if task.cpu is not None and not held.cpu_released:
                        self.pool.available[CPU] += task.cpu   # ResourcePool.release, inline
                    elif held.gpu_ids or held.cpu_released:
                        self.pool.release(held)
                    else:
                        available = self.pool.available
                        for name, units in held.units.items():
                            available[name] += units
                queued = bool(self.queue)
            if queued:
                self.dispatch()

    def _invoke(self, task: LocalTask):
        if task.cancelled:   # cancelled as its thread took it, before an interrupt could land
            raise KeyboardInterrupt
        call = task.call
        if call.deps or call.pickled is not None:
            args, kwargs = arguments(call, self.objects)
        else:
            args, kwargs = call.marked
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

    def cancel(self, task_id: bytes, force: bool, recursive: bool = True) -> None:
        """A queued task never runs; a running one gets KeyboardInterrupt in
        its thread. force=True also fails its refs at once and gives its
        resources back (a thread cannot be killed: it ends when the
        interrupt lands); it is never retried. recursive: then the tasks it
        submitted are cancelled too, and theirs."""
        with self.lock:
            task = self.tasks.get(task_id)
            children = list(task.children) if task is not None and recursive else []
        self._cancel_one(task_id, force)
        for child in children:
            self.cancel(child, force, True)

    def _cancel_one(self, task_id: bytes, force: bool) -> None:
        objects = self.objects
        with self.lock:
            task = self.tasks.get(task_id)
            if task is None or task.state == DONE:
                return
            task.cancelled = True
            if task.state in (WAITING, QUEUED, READY):
                if task.state == QUEUED:
                    self._dequeue(task)
                elif task.state == READY:
                    self.ready.remove(task)
                held, task.allocation = task.allocation, None
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
            if held is not None:
                self.release(held)
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
            self._work.notify_all()
            self.queue.clear()
            self._queued_shapes.clear()
            self.ready.clear()
            for task in self.tasks.values():
                state = task.interruptible
                if task.state == RUNNING and state.in_user_code and not state.interrupt_sent:
                    task.cancelled = True
                    state.interrupt_sent = interrupt_thread(state.thread_id)
