"""Workers in the agent: placing queued tasks on them, pipelining, leases
given back, blocked workers, cancels, worker deaths. No I/O.

    schedule() ──▶ per resource shape, FIFO: _place(task)
        a peer (cluster placement), or arguments brought here first, or
        resources free: an idle worker, else a new one (spawn); no resources
        or no worker: queued behind a busy worker of the same shape
        (up to pipeline_depth), else it waits in its shape's queue
    EXEC ──▶ worker ──DONE──▶ _on_done (lightray.agent.state) ──▶ next in its queue
    a worker exits ──▶ its running task retried (max_retries) or failed; killed
        for memory (lightray.agent.memory_monitor): retried after a backoff, or OutOfMemoryError

A worker's queue holds its running task first, then pipelined ones.

``WorkerPool`` is a part of ``AgentState`` (lightray.agent.state, its
``worker_pool`` field): it works on the tables and the Effects it is given,
and reaches tasks, actors and the cluster only through the functions passed
to it (await_deps, enqueue, fail_with, place_actor, place_in_cluster, ...).
"""
from __future__ import annotations

import collections

from .. import exceptions
from .. import task_spec as ts
from ..ids import return_ids, task_of
from .records import ClientEntry, Task, WorkerEntry
from ..serialization import LOCAL
from ..states import (BLOCKED, DEAD, DISPATCHED, IDLE, LEASED, NOT_IN_MEMORY, QUEUED, STARTING,
                      WAITING)
from ..transport import messages as m

# An argument the worker itself is producing, ahead in its own queue.
LOCAL_PAYLOAD = (LOCAL, None)


class WorkerPool:
    __slots__ = ("effects", "transitions", "pool", "workers", "workers_by_pid", "idle_workers",
                 "queues", "clients", "tasks", "objects", "functions", "node_id",
                 "pipeline_depth", "max_workers", "worker_counter", "_live_peers",
                 "_mesh_address", "_await_deps", "_enqueue", "_fail_with", "_check_satisfiable",
                 "_place_actor", "_place_in_cluster", "_on_actor_worker_exit", "_drop_client",
                 "oom_kills", "oom_retries")

    def __init__(self, effects, transitions, pool, *, workers: dict, workers_by_pid: dict,
                 idle_workers: list, queues: dict, clients: dict, tasks: dict, objects: dict,
                 functions: dict, node_id: str, pipeline_depth: int, max_workers: int,
                 live_peers, mesh_address, await_deps, enqueue, fail_with, check_satisfiable,
                 place_actor, place_in_cluster, actor_worker_exit, drop_client):
        self.effects = effects           # lightray.agent.effects.Effects
        self.transitions = transitions   # lightray.states.Transitions
        self.pool = pool                 # the node's ResourcePool
        self.workers = workers           # worker id -> WorkerEntry
        self.workers_by_pid = workers_by_pid
        self.idle_workers = idle_workers
        self.queues = queues             # shape -> deque of QUEUED tasks
        self.clients = clients
        self.tasks = tasks
        self.objects = objects           # the object table
        self.functions = functions       # function id -> its pickled bytes
        self.node_id = node_id
        self.pipeline_depth = pipeline_depth
        self.max_workers = max_workers
        self.worker_counter = 0
        self._live_peers = live_peers          # () -> how many peers are alive
        self._mesh_address = mesh_address      # () -> this node's mesh address, "" if none
        self._await_deps = await_deps          # (task, front=, fetch=)
        self._enqueue = enqueue                # (task, front=)
        self._fail_with = fail_with            # (task, exception)
        self._check_satisfiable = check_satisfiable   # (task) -> False if it failed it
        self._place_actor = place_actor        # (actor creation task) -> placed
        self._place_in_cluster = place_in_cluster     # (task) -> placed, None: here
        self._on_actor_worker_exit = actor_worker_exit   # (worker, status)
        self._drop_client = drop_client        # (client)
        # The memory monitor's (lightray.agent.memory_monitor): workers it
        # killed (pid -> why), and tasks of theirs to run again after a backoff.
        self.oom_kills: dict = {}
        self.oom_retries: list = []

    def remove_from_worker(self, worker: WorkerEntry, task_id: bytes) -> None:
        queue = worker.queue
        if queue and queue[0].task_id == task_id:
            queue.popleft()
            return
        for task in queue:
            if task.task_id == task_id:
                queue.remove(task)
                return

    def after_worker_progress(self, worker: WorkerEntry) -> None:
        if not worker.queue and worker.state in (LEASED, BLOCKED) and worker.lessee is None:
            self.make_idle(worker)
        self.effects.needs_schedule = True

    def make_idle(self, worker: WorkerEntry) -> None:
        """The worker's lease ends: free its resources, give it work again."""
        self.release_lease(worker)
        worker.state = IDLE
        self.idle_workers.append(worker)
        if not self.queues:
            self._steal_for_idle_worker()

    def _steal_for_idle_worker(self) -> None:
        """Ask back the unstarted tasks pipelined behind the busiest worker."""
        busiest = None
        for other in self.workers.values():
            if (other.started and not other.steal_asked and len(other.queue) > 1
                    and (busiest is None or len(other.queue) > len(busiest.queue))):
                busiest = other
        if busiest is not None:
            busiest.steal_asked = True
            self.effects.outbox[busiest.worker_id.encode() + b"r"].append((m.STEAL,))

    def release_lease(self, worker: WorkerEntry) -> None:
        if worker.allocation is not None:
            self.pool.release(worker.allocation)
            worker.allocation = None
            worker.shape = None

    def on_blocked(self, client: ClientEntry, handed_back: list) -> None:
        worker = client.worker
        if worker is None or worker.state == DEAD:
            return
        if worker.actor is not None:
            # An actor waiting in get lends its CPUs, as a task does.
            allocation = worker.actor.allocation
            if allocation is not None:
                self.pool.release_cpu(allocation)
                self.effects.needs_schedule = True
            return
        worker.state = BLOCKED
        if worker.allocation is not None:
            self.pool.release_cpu(worker.allocation)
        self.requeue_handed_back(worker, handed_back)
        self.effects.needs_schedule = True

    def on_unblocked(self, client: ClientEntry) -> None:
        worker = client.worker
        if worker is not None and worker.actor is not None:
            if worker.actor.allocation is not None:
                self.pool.reacquire_cpu(worker.actor.allocation)
            return
        if worker is None or worker.state != BLOCKED:
            return
        worker.state = LEASED
        if worker.allocation is not None:
            self.pool.reacquire_cpu(worker.allocation)

    def on_returned(self, client: ClientEntry, task_ids: list) -> None:
        worker = client.worker
        if worker is not None:
            worker.steal_asked = False
            self.requeue_handed_back(worker, task_ids)
            self.after_worker_progress(worker)

    def requeue_handed_back(self, worker: WorkerEntry, task_ids: list) -> None:
        for task_id in reversed(task_ids):
            self.remove_from_worker(worker, task_id)
            task = self.tasks.get(task_id)
            if task is not None and task.state == DISPATCHED:
                if task.cancelled:
                    self._fail_with(task, exceptions.TaskCancelledError(
                        f"task {task.spec[ts.FUNCTION_NAME]}() was cancelled"))
                else:
                    self._await_deps(task, front=True)

    # ============================================================ scheduling

    def schedule(self) -> None:
        """Dispatch every queued task that fits, in FIFO order per resource shape."""
        self.effects.needs_schedule = False
        for shape, queue in list(self.queues.items()):
            while queue:
                task = queue[0]
                if task.state != QUEUED:
                    queue.popleft()
                    continue
                if not self._place(task):
                    break
                queue.popleft()
            if not queue:
                del self.queues[shape]
        if self.queues:
            self._revoke_leases()

    def _revoke_leases(self) -> None:
        """Work is waiting: ask drivers to give back the workers lent to them."""
        for worker in self.workers.values():
            if worker.lessee is not None and not worker.revoke_sent:
                client = self.clients.get(worker.lessee)
                if client is not None:
                    worker.revoke_sent = True
                    self.effects.outbox[client.identity].append((m.LEASE_REVOKE, worker.worker_id))

    def _place(self, task: Task) -> bool:
        if task.actor is not None:
            return self._place_actor(task)
        if self._live_peers() and task.origin is None:
            placed = self._place_in_cluster(task)
            if placed is not None:
                return placed
        elif self._mesh_address() and not self._check_satisfiable(task):
            return True   # the peers that could run it are gone
        if task.spec[ts.DEPS] and any(self.objects[d].spill in NOT_IN_MEMORY
                                      for d in task.spec[ts.DEPS]):
            # Spilled, or on another node: bring it here first.
            self._await_deps(task, fetch=True)
            return True
        allocation = self.pool.try_acquire(task.request)
        if allocation is not None:
            worker = self._idle_worker()
            if worker is None:
                worker = self._start_worker()
                if worker is None:
                    self.pool.release(allocation)
                    return self._pipeline(task)
            worker.allocation = allocation
            worker.shape = task.shape
            worker.state = LEASED
            self.dispatch(worker, task)
            return True
        return self._pipeline(task)

    def _pipeline(self, task: Task) -> bool:
        """Queue the task behind a busy worker of the same shape, if one has room."""
        if task.actor is not None:
            return False
        best = None
        for worker in self.workers.values():
            if (worker.state == LEASED and worker.shape == task.shape and worker.lessee is None
                    and len(worker.queue) < self.pipeline_depth
                    and (best is None or len(worker.queue) < len(best.queue))):
                best = worker
        if best is None:
            return False
        self.dispatch(best, task)
        return True

    def pipeline_behind_producers(self, task: Task) -> bool:
        """Dispatch a waiting task to the worker that is producing all of its
        missing arguments, behind them: the worker hands it their results
        itself (LOCAL payloads), so a chain of tasks never waits for the agent
        between two links."""
        if task.actor is not None:
            return False
        strategy = task.spec[ts.STRATEGY]
        if strategy is not None and self._live_peers() and task.origin is None and not (
                type(strategy) is tuple and strategy[1] == self.node_id):
            return False   # it must be placed first: SPREAD, or pinned to another node
        worker = None
        objects = self.objects
        for object_id in task.spec[ts.DEPS]:
            if not objects[object_id].pending:
                if objects[object_id].spill in NOT_IN_MEMORY:
                    return False
                continue
            producer = self.tasks.get(task_of(object_id))
            if producer is None or producer.state != DISPATCHED:
                return False
            if worker is None:
                worker = producer.worker
            elif producer.worker is not worker:
                return False
        if (worker is None or worker.state != LEASED or worker.lessee is not None
                or worker.shape != task.shape or len(worker.queue) >= self.pipeline_depth):
            return False
        self.dispatch(worker, task)
        return True

    def _idle_worker(self):
        while self.idle_workers:
            worker = self.idle_workers.pop()
            if worker.state == IDLE:
                return worker
        for worker in self.workers.values():   # still starting, not yet leased
            if worker.state == STARTING and worker.allocation is None and not worker.queue:
                return worker
        return None

    def _start_worker(self):
        live = sum(1 for w in self.workers.values() if w.state != DEAD and w.actor is None)
        if live >= self.max_workers:
            return None
        return self.new_worker()

    def new_worker(self) -> WorkerEntry:
        self.worker_counter += 1
        worker = WorkerEntry(f"{self.node_id[:8]}w{self.worker_counter:05d}")
        self.workers[worker.worker_id] = worker
        self.effects.spawn.append(worker.worker_id)
        return worker

    def dispatch(self, worker: WorkerEntry, task: Task) -> None:
        self.transitions.task(task, DISPATCHED, ("on worker", worker.worker_id))
        task.worker = worker
        worker.queue.append(task)
        if worker.started:
            self.send_exec(worker, task)
        # Tasks waiting only for this one's results can follow it there.
        for object_id in return_ids(task.task_id, task.spec[ts.NUM_RETURNS]):
            entry = self.objects.get(object_id)
            if entry is not None and entry.waiting_tasks:
                for waiting in list(entry.waiting_tasks):
                    if waiting.state == WAITING and len(worker.queue) < self.pipeline_depth:
                        self.pipeline_behind_producers(waiting)

    def send_exec(self, worker: WorkerEntry, task: Task) -> None:
        spec = task.spec
        function_id = spec[ts.FUNCTION_ID]
        function_bytes = None
        if function_id not in worker.functions:
            worker.functions.add(function_id)
            function_bytes = self.functions[function_id]
        objects = self.objects
        dep_payloads = [LOCAL_PAYLOAD if objects[d].pending else objects[d].payload
                        for d in spec[ts.DEPS]]
        allocation = worker.allocation
        assignment = (task.request, allocation.gpu_ids if allocation else [])
        self.effects.outbox[worker.worker_id.encode() + b"r"].append(
            (m.EXEC, spec, function_bytes, dep_payloads, assignment))

    def on_worker_hello(self, worker: WorkerEntry) -> None:
        """A task worker's process said hello: it gets the tasks queued for it
        meanwhile, or becomes idle."""
        if worker.state == DEAD:
            return
        worker.started = True
        for task in worker.queue:
            self.send_exec(worker, task)
        if worker.state == STARTING:
            worker.state = LEASED if worker.queue else IDLE
            if worker.state == IDLE:
                self.release_lease(worker)
                self.idle_workers.append(worker)
                self.effects.needs_schedule = True

    def cancel_dispatched(self, task: Task, force: bool) -> None:
        """Cancel a task given to one of our workers: kill the worker (force,
        while the task runs), ask the worker to cancel it, or take it back
        from a worker not started yet."""
        worker = task.worker
        running = worker.queue and worker.queue[0] is task and worker.started
        if running and force:
            task.force_cancelled = True
            if worker.pid:
                self.effects.kill.append(worker.pid)
        elif worker.started:
            self.effects.outbox[worker.worker_id.encode() + b"r"].append(
                (m.CANCEL_TASK, task.task_id))
        else:
            self.remove_from_worker(worker, task.task_id)
            self._fail_with(task, exceptions.TaskCancelledError(
                f"task {task.spec[ts.FUNCTION_NAME]}() was cancelled"))
            self.after_worker_progress(worker)

    def initial_workers(self, count: int) -> None:
        for _ in range(count):
            self._start_worker()

    # ============================================================= failures

    def on_worker_exit(self, pid: int, status: str) -> None:
        worker = self.workers_by_pid.pop(pid, None)
        if worker is None or worker.state == DEAD:
            return
        worker.state = DEAD
        del self.workers[worker.worker_id]
        if worker.lessee is not None:
            lessee = self.clients.get(worker.lessee)
            if lessee is not None:
                lessee.leases.discard(worker.worker_id)
                self.effects.outbox[lessee.identity].append(
                    (m.WORKER_DIED, worker.worker_id, status, worker.cancel_requested))
            worker.lessee = None
        client = self.clients.get(worker.worker_id.encode())
        if client is not None:
            self._drop_client(client)
        if worker.actor is not None:
            self._on_actor_worker_exit(worker, status)
            return
        self.release_lease(worker)
        queue, worker.queue = worker.queue, collections.deque()
        if worker.started and queue:
            running = queue.popleft()
            self._on_running_task_lost(running, worker, status)
        for task in reversed(queue):
            if task.state == DISPATCHED and task.cancelled:   # never run again
                self._fail_with(task, exceptions.TaskCancelledError(
                    f"task {task.spec[ts.FUNCTION_NAME]}() was cancelled"))
            elif task.state == DISPATCHED:
                self._await_deps(task, front=True)
        self.effects.needs_schedule = True

    def _on_running_task_lost(self, task: Task, worker: WorkerEntry, status: str) -> None:
        if task.state != DISPATCHED:
            return
        out_of_memory = self.oom_kills.pop(worker.pid, None)
        if out_of_memory is not None:
            self._retry_later_or_fail_oom(task, out_of_memory)
            return
        self.retry_or_fail_lost(
            task, f" (force=True killed worker pid {worker.pid})",
            f"the worker running task {task.spec[ts.FUNCTION_NAME]}() (pid {worker.pid}, "
            f"node {self.node_id}) died: {status}")

    def _retry_later_or_fail_oom(self, task: Task, why: str) -> None:
        """Its worker was killed for memory: retried after a backoff (the
        monitor puts it back with retry_after_oom) or OutOfMemoryError."""
        name = task.spec[ts.FUNCTION_NAME]
        if task.cancelled:
            self._fail_with(task, exceptions.TaskCancelledError(f"task {name}() was cancelled"))
        elif task.retries_left > 0:
            task.retries_left -= 1
            self.transitions.task(task, WAITING, ("killed for memory, retried later:", why))
            task.worker = None
            task.missing_deps = 0
            self.oom_retries.append(task)
        else:
            attempts = task.spec[ts.MAX_RETRIES] + 1
            self._fail_with(task, exceptions.OutOfMemoryError(
                f"task {name}() ran out of memory on node {self.node_id}: {why}; "
                f"{attempts} attempt(s), no retries left (max_retries={task.spec[ts.MAX_RETRIES]})"))

    def retry_after_oom(self, task: Task) -> None:
        """Its backoff is over: run it again unless it finished meanwhile (cancelled)."""
        if task.state == WAITING and not task.cancelled and task.task_id in self.tasks:
            self._await_deps(task, front=True)
            self.effects.needs_schedule = True

    def retry_or_fail_lost(self, task: Task, cancelled_detail: str, died: str) -> None:
        """Its worker (or the node it was sent to) died while it ran: fail it if
        it was cancelled, else run it again while it has retries."""
        if task.cancelled:
            self._fail_with(task, exceptions.TaskCancelledError(
                f"task {task.spec[ts.FUNCTION_NAME]}() was cancelled{cancelled_detail}"))
        elif task.retries_left > 0:
            task.retries_left -= 1
            self._enqueue(task, front=True)
        else:
            attempts = task.spec[ts.MAX_RETRIES] + 1
            self._fail_with(task, exceptions.WorkerCrashedError(
                f"{died}; {attempts} attempt(s), no retries left "
                f"(max_retries={task.spec[ts.MAX_RETRIES]})"))
