"""The node agent's bookkeeping: objects, tasks, workers, resources. No I/O.

    events in                                  instructions out
    ─────────                                  ────────────────
    handle(client_id, ops)   ──▶  AgentState ──▶ outbox: {receive identity: [ops]}
    on_hello(...)                               spawn: [worker_id]  (fork these)
    on_worker_exit(pid, status)                 kill:  [pid]        (SIGKILL these)
                                                free_segments: [segment names]

The agent's I/O loop (lightray.agent) feeds events in, then acts on what
accumulated: it sends the outbox, forks, kills and unlinks.

The object table lives in lightray.object_directory, the store's capacity
and spilling in lightray.agent_store, the lending of workers to drivers in
lightray.agent_leases and actors in lightray.agent_actors (mixins of
AgentState).

Task and worker states are named in lightray.states. A worker's queue holds
its running task first, then pipelined ones.
"""
from __future__ import annotations

import collections
import os

from . import exceptions, serialization
from . import task_spec as ts
from .agent_actors import ActorManagement
from .agent_cluster import ClusterManagement
from .agent_forwarding import TaskForwarding
from .agent_pulls import ObjectPulls
from .agent_leases import LeaseLending
from .agent_remote_actors import RemoteActors
from .agent_store import PULLING, REMOTE, RESTORING, SPILLED, StoreManagement
from .ids import return_ids, task_of
from .object_directory import ObjectDirectory, ObjectEntry
from .resources import ResourcePool, from_units, shape_of
from .serialization import ERROR, LOCAL, SHARED
from .states import (
    BLOCKED,
    DEAD,
    DISPATCHED,
    FINISHED,
    FORWARDED,
    IDLE,
    LEASED,
    QUEUED,
    STARTING,
    WAITING,
)
from .transport import messages as m


# An argument the worker itself is producing, ahead in its own queue.
LOCAL_PAYLOAD = (LOCAL, None)


class Task:
    __slots__ = ("spec", "task_id", "request", "shape", "owner", "state", "missing_deps",
                 "retries_left", "worker", "cancelled", "force_cancelled", "actor",
                 "origin", "node")

    def __init__(self, spec: tuple, owner: bytes):
        self.spec = spec
        self.task_id = spec[ts.TASK_ID]
        self.request = spec[ts.RESOURCES]
        self.shape = shape_of(self.request)
        self.owner = owner
        self.state = WAITING
        self.missing_deps = 0
        self.retries_left = spec[ts.MAX_RETRIES] - spec[ts.ATTEMPTS_MADE]
        self.worker = None
        self.cancelled = False
        self.force_cancelled = False
        self.actor = None                  # ActorEntry: this task runs an actor's constructor
        self.origin = None                 # the peer that forwarded it to us
        self.node = None                   # the peer we forwarded it to


class WorkerEntry:
    __slots__ = ("worker_id", "pid", "state", "allocation", "shape", "queue", "functions",
                 "started", "steal_asked", "lessee", "revoke_sent", "cancel_requested",
                 "actor")

    def __init__(self, worker_id: str):
        self.worker_id = worker_id
        self.pid = 0
        self.state = STARTING
        self.allocation = None
        self.shape = None
        self.queue = collections.deque()   # Tasks: running first, then pipelined
        self.functions = set()             # function ids this worker has loaded
        self.started = False               # said hello: EXECs can be sent
        self.steal_asked = False           # STEAL sent, RETURNED not yet seen
        self.lessee = None                 # client id holding a direct lease on it
        self.revoke_sent = False
        self.cancel_requested = False      # its lessee force-cancelled the running task
        self.actor = None                  # ActorEntry: this worker runs only that actor


class ClientEntry:
    __slots__ = ("client_id", "identity", "kind", "pid", "held", "worker", "leases", "reserved")

    def __init__(self, client_id: bytes, kind: str, pid: int, worker):
        self.client_id = client_id
        self.identity = client_id + b"r"   # its receive socket
        self.kind = kind
        self.pid = pid
        self.held = set()                  # object ids this process counts as held
        self.worker = worker
        self.leases = set()                # worker ids lent to it
        self.reserved = 0                  # store bytes granted to it, not yet written


# Spill states in which an object's bytes are not in this node's memory.
NOT_IN_MEMORY = (SPILLED, RESTORING, REMOTE, PULLING)


class AgentState(ObjectDirectory, StoreManagement, LeaseLending, ActorManagement,
                 ClusterManagement, TaskForwarding, ObjectPulls, RemoteActors):
    def __init__(self, *, node_id: str, session: str, resources: dict, pipeline_depth: int,
                 max_workers: int, store_capacity: int, namespace: str = "default",
                 spill_dir: str | None = None, spill_threshold: float = 0.8,
                 spilling: bool = True, segment_prefix: str = ""):
        self.node_id = node_id
        self.session = session
        self.namespace = namespace         # of named actors, for processes that name none
        self.pool = ResourcePool(resources)
        self.pipeline_depth = pipeline_depth
        self.max_workers = max_workers
        self.segment_prefix = segment_prefix   # where processes write segments
        self._init_store(store_capacity, spill_dir, spill_threshold, spilling)
        self._init_cluster()
        self.objects: dict = {}
        self.tasks: dict = {}
        self.functions: dict = {}
        self.clients: dict = {}
        self.workers: dict = {}            # worker_id -> WorkerEntry
        self.workers_by_pid: dict = {}
        self.idle_workers: list = []
        self.queues: dict = {}             # shape -> deque of QUEUED tasks
        self.actors: dict = {}             # actor id -> ActorEntry
        self.named_actors: dict = {}       # (namespace, name) -> actor id
        # DECs of ids we did not know yet, by client: a direct result that a
        # worker registers may arrive after its owner already dropped it.
        self.early_decs: dict = {}
        self._worker_counter = 0
        self.needs_schedule = False
        self.stopping = False
        # instructions for the I/O loop
        self.outbox: dict = collections.defaultdict(list)
        self.spawn: list = []
        self.kill: list = []
        self.free_segments: list = []

    # ================================================================ events

    def node_info(self) -> dict:
        return {"node_id": self.node_id, "session": self.session,
                "resources": self.pool.as_floats("total"),
                "num_gpus": len(self.pool.gpu_free),
                "store_capacity": self.store_capacity, "namespace": self.namespace,
                "segment_prefix": self.segment_prefix,
                "mesh_host": self.mesh_address.rpartition(":")[0] or None}

    def on_hello(self, client_id: bytes, kind: str, pid: int, worker_id: str) -> None:
        worker = self.workers.get(worker_id) if kind == "worker" else None
        client = ClientEntry(client_id, kind, pid, worker)
        self.clients[client_id] = client
        if kind == "driver" and self.mesh_address:
            self._control(("job_start", client_id, self.mesh_address, pid, self.namespace, None))
        self.outbox[client.identity].append((m.WELCOME, self.node_info()))
        if worker is not None and worker.actor is not None:
            if worker.actor.state == DEAD or worker.actor.worker is not worker:
                self.kill.append(worker.pid)   # its actor died before it started
            elif worker.state != DEAD:
                worker.started = True
                self._send_actor_start(worker)
        elif worker is not None and worker.state != DEAD:
            worker.started = True
            for task in worker.queue:
                self._send_exec(worker, task)
            if worker.state == STARTING:
                worker.state = LEASED if worker.queue else IDLE
                if worker.state == IDLE:
                    self._release_lease(worker)
                    self.idle_workers.append(worker)
                    self.needs_schedule = True

    def handle(self, client_id: bytes, ops: list) -> None:
        client = self.clients.get(client_id)
        if client is None:
            return   # a process we no longer know (it died, or never said hello)
        for op in ops:
            kind = op[0]
            if kind == m.INC:
                self._on_inc(client, op[1])
            elif kind == m.DEC:
                self._on_dec(client, op[1])
            elif kind == m.SUBMIT:
                self._on_submit(client, op[1], op[2] if len(op) > 2 else None)
            elif kind == m.DONE:
                if client.reserved:
                    self._consume_reservation(client, op[2])
                self._on_done(client, op[1], op[2], op[3], op[4])
            elif kind == m.EXPORT:
                self.functions[op[1]] = op[2]
                if self.mesh_address:
                    self._control(("function_export", op[1], op[2], None))
            elif kind == m.PUT:
                if client.reserved:
                    self._consume_reservation(client, (op[2],))
                self._on_put(client, op[1], op[2], op[3], op[4] if len(op) > 4 else None)
            elif kind == m.SUBSCRIBE:
                self._on_subscribe(client, op[1])
            elif kind == m.BLOCKED:
                self._on_blocked(client, op[2])
            elif kind == m.UNBLOCKED:
                self._on_unblocked(client)
            elif kind == m.RETURNED:
                self._on_returned(client, op[1])
            elif kind == m.CANCEL:
                self._on_cancel(op[1], op[2])
            elif kind == m.INFO:
                what = op[2]
                if (self.live_peers and type(what) is tuple and what[0] == "actor"
                        and self.actor_lookup(what[1], what[2]) is None):
                    self._lookup_named_remote(client, op[1], what[1], what[2])
                else:
                    self.outbox[client.identity].append((m.INFO_REPLY, op[1], self.info(what)))
            elif kind == m.LEASE_REQUEST:
                self._on_lease_request(client, op[1])
            elif kind == m.LEASE_RETURN:
                self._on_lease_return(client, op[1])
            elif kind == m.REGISTER:
                self._on_register(client, op[1], op[2], op[3])
            elif kind == m.DIRECT_RESULT:
                if client.reserved:
                    self._consume_reservation(client, (op[3],))
                self._on_direct_result(op[1], op[2], op[3], op[4])
            elif kind == m.RESERVE:
                self._on_reserve(client, op[1], op[2])
            elif kind == m.RESTORE:
                self._on_restore(client, op[1], op[2])
            elif kind == m.DIRECT_CANCEL:
                self._on_direct_cancel(client, op[1], op[2], op[3])
            elif kind == m.ACTOR_CREATE:
                self._on_actor_create(client, op[1], op[2], op[3])
            elif kind == m.ACTOR_SUBSCRIBE:
                self._on_actor_subscribe(client, op[1])
            elif kind == m.ACTOR_KILL:
                self._on_actor_kill(op[1], op[2])
            elif kind == m.ACTOR_READY:
                self._on_actor_ready(client, op[1], op[2], op[3] if len(op) > 3 else None)
            elif kind == m.ADOPT_FROM:
                if len(op) > 4:
                    self._on_adopt_handed_over(op[2], op[3])
                else:
                    self._on_adopt_from(client, op[1], op[2], op[3])
            elif kind == m.HAND_OVER:
                self._on_hand_over(op[1], op[2])
            elif kind == m.GOODBYE:
                self._drop_client(client)
            elif kind == m.SHUTDOWN:
                self.stopping = True

    # ================================================================ tasks

    def _on_submit(self, client: ClientEntry, spec: tuple, call_site=None) -> None:
        task = Task(spec, client.client_id)
        self.tasks[task.task_id] = task
        objects = self.objects
        for object_id in return_ids(task.task_id, spec[ts.NUM_RETURNS]):
            entry = objects.get(object_id)
            if entry is not None and entry.pending and object_id in client.held:
                continue   # promised by a direct submission that is now retried here
            entry = objects[object_id] = ObjectEntry(1, owner=client.client_id)
            entry.call_site = call_site
            client.held.add(object_id)
        deps = spec[ts.DEPS]
        unknown = [d for d in deps if d not in objects]
        self._pin(deps)
        self._pin(spec[ts.CONTAINED])
        if unknown:
            # The submitter holds these refs, so we would know them unless they
            # come from another session or were lost.
            self._fail_with(task, exceptions.ObjectLostError(
                f"argument {unknown[0].hex()} of task {spec[ts.FUNCTION_NAME]}() is not in this "
                "runtime's object store (an ObjectRef from an earlier session?)"))
            return
        if self._check_satisfiable(task):
            self._await_deps(task)

    def _check_satisfiable(self, task: Task) -> bool:
        """Fail a task that asks for more than this runtime has; False if so."""
        missing = self.pool.unsatisfiable(task.request)
        if missing is None:
            return True
        if self.live_peers and task.origin is None:
            return True   # another node may have it: placement decides (and fails it if not)
        total = from_units(self.pool.total.get(missing, 0))
        what = (f"actor {task.spec[ts.FUNCTION_NAME]}" if task.actor is not None
                else f"task {task.spec[ts.FUNCTION_NAME]}()")
        self._fail_with(task, exceptions.TaskUnschedulableError(
            f"{what} asks for {task.request.get(missing)} {missing} "
            f"but this runtime has {total} {missing} in total "
            f"(resources: {self.pool.as_floats('total')}); it can never run"))
        return False

    def _await_deps(self, task: Task, front: bool = False, fetch: bool = False) -> None:
        """Queue task if its arguments are ready, else make it wait for them
        (or run right behind their producer on the same worker). Arguments on
        another node count as ready (the task may go there) unless fetch:
        then they are pulled here first."""
        objects = self.objects
        task.missing_deps = 0
        if task.spec[ts.DEPS] and not self._arguments_fit(task):
            return
        for object_id in task.spec[ts.DEPS]:
            entry = objects[object_id]
            spill = entry.spill
            if entry.pending or (spill is not None
                                 and (fetch or (spill != REMOTE and spill != PULLING))
                                 and not self._want_in_memory(object_id, entry)):
                # Not produced yet, or spilled: its restore is under way.
                if entry.waiting_tasks is None:
                    entry.waiting_tasks = []
                if task not in entry.waiting_tasks:
                    entry.waiting_tasks.append(task)
                task.missing_deps += 1
            elif entry.payload[0] == ERROR:
                self._fail_task(task, entry.payload)
                return
        if task.missing_deps == 0:
            self._enqueue(task, front)
        else:
            task.state = WAITING
            task.worker = None
            self._pipeline_behind_producers(task)

    def _pipeline_behind_producers(self, task: Task) -> bool:
        """Dispatch a waiting task to the worker that is producing all of its
        missing arguments, behind them: the worker hands it their results
        itself (LOCAL payloads), so a chain of tasks never waits for the agent
        between two links."""
        if task.actor is not None:
            return False
        strategy = task.spec[ts.STRATEGY]
        if strategy is not None and self.live_peers and task.origin is None and not (
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
        self._dispatch(worker, task)
        return True

    def _enqueue(self, task: Task, front: bool = False) -> None:
        if task.spec[ts.DEPS] and not self._arguments_fit(task):
            return
        task.state = QUEUED
        task.worker = None
        queue = self.queues.get(task.shape)
        if queue is None:
            queue = self.queues[task.shape] = collections.deque()
        if front:
            queue.appendleft(task)
        else:
            queue.append(task)
        self.needs_schedule = True

    def _arguments_fit(self, task: Task) -> bool:
        """Fail a task whose arguments can never be in memory together."""
        objects = self.objects
        total = 0
        for object_id in task.spec[ts.DEPS]:
            payload = objects[object_id].payload
            if payload is not None and payload[0] == SHARED:
                total += payload[1][1]
        if total <= self.store_capacity:
            return True
        self._fail_with(task, exceptions.ObjectStoreFullError(
            f"task {task.spec[ts.FUNCTION_NAME]}() needs {total} bytes of arguments in memory "
            f"at once, more than the object store's capacity of {self.store_capacity} bytes "
            f"({self.store_used} bytes in memory now, {self.spilled_now} spilled to "
            f"{self.spill_dir or '(no spill directory)'})"))
        return False

    def _finish_task(self, task: Task) -> None:
        """Unpin what the task held; it is gone from the agent afterwards."""
        if task.state == FINISHED:
            return
        task.state = FINISHED
        self.tasks.pop(task.task_id, None)
        if task.origin is not None:
            self._report_forwarded(task)
        spec = task.spec
        for object_id in spec[ts.DEPS]:
            self._unref(object_id)
        for object_id in spec[ts.CONTAINED]:
            self._unref(object_id)

    def _fail_task(self, task: Task, payload) -> None:
        if task.state == FINISHED:
            return
        if task.actor is not None:
            actor, task.actor = task.actor, None
            self._actor_creation_failed(actor, payload)
        for object_id in return_ids(task.task_id, task.spec[ts.NUM_RETURNS]):
            entry = self.objects.get(object_id)
            if entry is not None and entry.pending:
                self._set_ready(object_id, entry, payload, ())
        self._finish_task(task)

    def _fail_with(self, task: Task, error: Exception) -> None:
        self._fail_task(task, (ERROR, serialization.dumps_exception(error)))

    def _on_done(self, client: ClientEntry, task_id: bytes, payloads, contained, retryable) -> None:
        worker = client.worker
        task = self.tasks.get(task_id)
        if worker is not None:
            self._remove_from_worker(worker, task_id)
        if task is None or task.state == FINISHED:
            self._discard_payloads(payloads)
        elif retryable and task.retries_left > 0 and not task.cancelled:
            task.retries_left -= 1
            self._enqueue(task)
        else:
            for object_id, payload, inner in zip(
                    return_ids(task_id, task.spec[ts.NUM_RETURNS]), payloads, contained):
                entry = self.objects.get(object_id)
                if entry is None:   # nobody holds the result any more
                    self._discard_payloads([payload])
                    continue
                self._set_ready(object_id, entry, payload, inner)
            self._finish_task(task)
        if worker is not None:
            self._after_worker_progress(worker)

    def _discard_payloads(self, payloads) -> None:
        for payload in payloads:
            if payload[0] == SHARED:
                self.free_segments.append(payload[1][0])

    def _remove_from_worker(self, worker: WorkerEntry, task_id: bytes) -> None:
        queue = worker.queue
        if queue and queue[0].task_id == task_id:
            queue.popleft()
            return
        for task in queue:
            if task.task_id == task_id:
                queue.remove(task)
                return

    def _after_worker_progress(self, worker: WorkerEntry) -> None:
        if not worker.queue and worker.state in (LEASED, BLOCKED) and worker.lessee is None:
            self._make_idle(worker)
        self.needs_schedule = True

    def _make_idle(self, worker: WorkerEntry) -> None:
        """The worker's lease ends: free its resources, give it work again."""
        self._release_lease(worker)
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
            self.outbox[busiest.worker_id.encode() + b"r"].append((m.STEAL,))

    def _release_lease(self, worker: WorkerEntry) -> None:
        if worker.allocation is not None:
            self.pool.release(worker.allocation)
            worker.allocation = None
            worker.shape = None

    def _on_blocked(self, client: ClientEntry, handed_back: list) -> None:
        worker = client.worker
        if worker is None or worker.state == DEAD:
            return
        if worker.actor is not None:
            # An actor waiting in get lends its CPUs, as a task does.
            allocation = worker.actor.allocation
            if allocation is not None:
                self.pool.release_cpu(allocation)
                self.needs_schedule = True
            return
        worker.state = BLOCKED
        if worker.allocation is not None:
            self.pool.release_cpu(worker.allocation)
        self._requeue_handed_back(worker, handed_back)
        self.needs_schedule = True

    def _on_unblocked(self, client: ClientEntry) -> None:
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

    def _on_returned(self, client: ClientEntry, task_ids: list) -> None:
        worker = client.worker
        if worker is not None:
            worker.steal_asked = False
            self._requeue_handed_back(worker, task_ids)
            self._after_worker_progress(worker)

    def _requeue_handed_back(self, worker: WorkerEntry, task_ids: list) -> None:
        for task_id in reversed(task_ids):
            self._remove_from_worker(worker, task_id)
            task = self.tasks.get(task_id)
            if task is not None and task.state == DISPATCHED:
                if task.cancelled:
                    self._fail_with(task, exceptions.TaskCancelledError(
                        f"task {task.spec[ts.FUNCTION_NAME]}() was cancelled"))
                else:
                    self._await_deps(task, front=True)

    def _on_cancel(self, object_id: bytes, force: bool) -> None:
        task = self.tasks.get(task_of(object_id))
        if task is None or task.state == FINISHED or task.cancelled:
            return
        task.cancelled = True
        name = task.spec[ts.FUNCTION_NAME]
        if task.state in (WAITING, QUEUED):
            # A QUEUED task stays in its deque; the scheduler skips finished ones.
            self._fail_with(task, exceptions.TaskCancelledError(f"task {name}() was cancelled"))
            return
        if task.state == FORWARDED:
            self.peer_outbox[task.node].append((m.FORWARD_CANCEL, object_id, force))
            return
        worker = task.worker
        running = worker.queue and worker.queue[0] is task and worker.started
        if running and force:
            task.force_cancelled = True
            if worker.pid:
                self.kill.append(worker.pid)
        elif worker.started:
            self.outbox[worker.worker_id.encode() + b"r"].append((m.CANCEL_TASK, task.task_id))
        else:
            self._remove_from_worker(worker, task.task_id)
            self._fail_with(task, exceptions.TaskCancelledError(f"task {name}() was cancelled"))
            self._after_worker_progress(worker)

    # ============================================================ scheduling

    def schedule(self) -> None:
        """Dispatch every queued task that fits, in FIFO order per resource shape."""
        self.needs_schedule = False
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
                    self.outbox[client.identity].append((m.LEASE_REVOKE, worker.worker_id))

    def _place(self, task: Task) -> bool:
        if task.actor is not None:
            return self._place_actor(task)
        if self.live_peers and task.origin is None:
            placed = self._place_in_cluster(task)
            if placed is not None:
                return placed
        elif self.mesh_address and not self._check_satisfiable(task):
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
            self._dispatch(worker, task)
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
        self._dispatch(best, task)
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
        return self._new_worker()

    def _new_worker(self) -> WorkerEntry:
        self._worker_counter += 1
        worker = WorkerEntry(f"{self.node_id[:8]}w{self._worker_counter:05d}")
        self.workers[worker.worker_id] = worker
        self.spawn.append(worker.worker_id)
        return worker

    def _dispatch(self, worker: WorkerEntry, task: Task) -> None:
        task.state = DISPATCHED
        task.worker = worker
        worker.queue.append(task)
        if worker.started:
            self._send_exec(worker, task)
        # Tasks waiting only for this one's results can follow it there.
        for object_id in return_ids(task.task_id, task.spec[ts.NUM_RETURNS]):
            entry = self.objects.get(object_id)
            if entry is not None and entry.waiting_tasks:
                for waiting in list(entry.waiting_tasks):
                    if waiting.state == WAITING and len(worker.queue) < self.pipeline_depth:
                        self._pipeline_behind_producers(waiting)

    def _send_exec(self, worker: WorkerEntry, task: Task) -> None:
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
        self.outbox[worker.worker_id.encode() + b"r"].append(
            (m.EXEC, spec, function_bytes, dep_payloads, assignment))

    def initial_workers(self, count: int) -> None:
        for _ in range(count):
            self._start_worker()

    def set_worker_pid(self, worker_id: str, pid: int) -> None:
        worker = self.workers[worker_id]
        worker.pid = pid
        self.workers_by_pid[pid] = worker

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
                self.outbox[lessee.identity].append(
                    (m.WORKER_DIED, worker.worker_id, status, worker.cancel_requested))
            worker.lessee = None
        client = self.clients.get(worker.worker_id.encode())
        if client is not None:
            self._drop_client(client)
        if worker.actor is not None:
            self._on_actor_worker_exit(worker, status)
            return
        self._release_lease(worker)
        queue, worker.queue = worker.queue, collections.deque()
        if worker.started and queue:
            running = queue.popleft()
            self._on_running_task_lost(running, worker, status)
        for task in reversed(queue):
            if task.state == DISPATCHED:
                self._await_deps(task, front=True)
        self.needs_schedule = True

    def _on_running_task_lost(self, task: Task, worker: WorkerEntry, status: str) -> None:
        if task.state != DISPATCHED:
            return
        self._retry_or_fail_lost(
            task, f" (force=True killed worker pid {worker.pid})",
            f"the worker running task {task.spec[ts.FUNCTION_NAME]}() (pid {worker.pid}, "
            f"node {self.node_id}) died: {status}")

    def _retry_or_fail_lost(self, task: Task, cancelled_detail: str, died: str) -> None:
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

    def on_client_gone(self, client_id: bytes) -> None:
        """A process left without GOODBYE (its pid is gone)."""
        client = self.clients.get(client_id)
        if client is not None:
            self._drop_client(client)

    def _drop_client(self, client: ClientEntry) -> None:
        if client.kind == "driver" and self.mesh_address:
            self._control(("job_finish", client.client_id, None))
        for worker_id in list(client.leases):
            self._on_lease_return(client, worker_id)
        self.early_decs.pop(client.client_id, None)
        self.clients.pop(client.client_id, None)
        self._release_reservations(client)
        if self.actors:
            self._drop_owned_actors(client)
        held, client.held = client.held, set()
        for object_id in held:
            self._unref(object_id)

    # ================================================================= info

    def info(self, what: str):
        if what == "resources":
            total: dict = {}
            available: dict = {}
            for node in self.nodes_info():
                if node["alive"]:
                    for name, amount in node["resources"].items():
                        total[name] = total.get(name, 0) + amount
                    for name, amount in node["available"].items():
                        available[name] = available.get(name, 0) + amount
            return {"total": total, "available": available}
        if what == "nodes":
            return self.nodes_info()
        if what == "store":
            return self.store_info()
        if what == "sync":
            return True
        if what == "memory":
            return self.memory_summary()
        if isinstance(what, tuple) and what[0] == "actor":
            return self.actor_lookup(what[1], what[2])
        if what == "workers":
            return {w.worker_id: {"pid": w.pid, "state": w.state, "queued": len(w.queue)}
                    for w in self.workers.values()}
        return None

    def all_segments(self) -> list:
        return [e.payload[1][0] for e in self.objects.values()
                if e.payload is not None and e.payload[0] == SHARED
                and e.spill not in (SPILLED, REMOTE)]


def describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        import signal
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"killed by signal {name}"
    if os.WIFEXITED(status):
        return f"exited with code {os.WEXITSTATUS(status)}"
    return f"status {status}"
