"""The node agent's bookkeeping: objects, tasks, workers, resources. No I/O.

    events in                                    instructions out
    ─────────                                    ────────────────
    handle(client_id, ops)      ──▶ AgentState ──▶ take_instructions():
    handle_peer(node, ops, ...)                     [Send, SendPeer, Spawn, Kill,
    on_hello / on_worker_exit / on_spawned          FreeSegment, SpillJob, ...]
    on_spill_done / on_restore_done / cluster_tick  (lightray.agent.instructions)
    turn()  (end of a loop turn: schedule, store work)

The agent's I/O loop (lightray.agent.server) feeds events in, then executes
the instructions in order. It reads the state only through the small API
below "what the I/O loop reads" (turn, load_counters, warm_limit, ...).

Parts, each a plain object in a field of the state (modules of
lightray.agent), built in ``__init__`` with its tables, the one ``effects``
they all write instructions into (effects.py) and callbacks for what lives
in other parts:

    store          store.py                  StoreCapacity: capacity, spilling, restoring
    directory      objects.py                ObjectDirectory: the object table
    worker_pool    workers.py                WorkerPool: tasks on workers, the workers' lives
    leases         leases.py                 LeaseBook: workers lent to drivers
    actor_book     actors.py                 ActorBook: actors, their workers, restarts, names
    object_pulls   cluster/pulls.py          ObjectPulls: object bytes between nodes
    forwarding     cluster/forwarding.py     TaskForwarding: tasks on peers, pins across nodes
    remote_actors  cluster/remote_actors.py  RemoteActors: actors across nodes
    membership     cluster/membership.py     ClusterMembership: peers, heartbeats, deaths
    lineage        lineage.py                LineageBook: rebuilding objects lost with a node
    cancels        cancels.py                CancelBook: cancelling tasks and their children

The task path (submit, arguments, queues, results, failures, cancels) is the
state's own: the parts reach it through its bound methods.

State names are in lightray.states; every task, object and actor state
change goes through ``transitions`` with its reason. A worker's queue holds
its running task first, then pipelined ones.
"""
from __future__ import annotations

import collections

from .. import exceptions, serialization
from .. import task_spec as ts
from .actors import ActorBook
from .cancels import CancelBook
from .lineage import LineageBook
from .cluster.membership import ClusterMembership
from .cluster.forwarding import TaskForwarding
from .effects import Effects
from .cluster.pulls import ObjectPulls
from .leases import LeaseBook
from .cluster.remote_actors import RemoteActors
from .workers import WorkerPool
from .store import StoreCapacity
from ..ids import return_ids
from .objects import ObjectDirectory
from .info import info_answer
from .records import ClientEntry, Task
from ..resources import ResourcePool, from_units
from ..serialization import ERROR, SHARED
from ..states import (FINISHED, PULLING, QUEUED, REMOTE, SPILLED, WAITING,
                      Transitions)
from ..transport import messages as m
from ..observe.events import TaskEvents
from ..observe.queries import StateQueries


class AgentState:
    def __init__(self, *, node_id: str, session: str, resources: dict, pipeline_depth: int,
                 max_workers: int, store_capacity: int, namespace: str = "default",
                 spill_dir: str | None = None, spill_threshold: float = 0.8,
                 spilling: bool = True, segment_prefix: str = "", task_events: int = 0):
        self.node_id = node_id
        self.session = session
        self.namespace = namespace         # of named actors, for processes that name none
        self.pool = ResourcePool(resources)
        self.segment_prefix = segment_prefix   # where processes write segments
        self.stream_key = None             # bytes proved on stream sockets (AgentServer sets it)
        self.effects = effects = Effects()     # what the parts ask the I/O loop to do
        self.transitions = Transitions()   # task, object and actor state changes, and why
        self.events = TaskEvents(node_id, task_events)   # for lightray.state (observe)
        self.transitions.on_actor, self.state_queries = self.events.actor, StateQueries(self)
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
        # Cluster tables: the membership writes peers and flushes pull_retries,
        # the object pulls own pulls; the other parts read or append.
        peers: dict = {}                   # node id -> NodeView
        pull_retries: list = []            # (node id, op) to send again at the next tick
        pulls: dict = {}                   # object id -> Pull
        # The parts, each given its tables, the Effects and callbacks; a lambda
        # stands for a part built further down.
        self.store = StoreCapacity(
            effects, self.transitions, objects=self.objects, clients=self.clients,
            workers=self.workers, pulls=pulls, capacity=store_capacity, spill_dir=spill_dir,
            threshold=spill_threshold, spilling=spilling,
            start_pull=lambda object_id, entry: self.object_pulls.start_pull(object_id, entry),
            drop_copy=lambda object_id, entry: self.object_pulls.drop_copy(object_id, entry),
            forget_remote=lambda object_id, entry: self.forwarding.forget_remote(object_id, entry),
            fail_task=self._fail_task, enqueue=self._enqueue, segment_prefix=segment_prefix)
        self.object_pulls = ObjectPulls(effects, self.transitions, store=self.store,
                                        objects=self.objects, peers=peers, pulls=pulls,
                                        node_id=node_id)
        self.directory = ObjectDirectory(
            effects, objects=self.objects, clients=self.clients, early_decs=self.early_decs,
            store=self.store,
            handles_gone=lambda actor_id: self.actor_book.on_actor_handles_gone(actor_id),
            released=lambda object_id: self.lineage.released(object_id))
        self.forwarding = TaskForwarding(
            effects, self.transitions, self.pool, peers=peers, objects=self.objects,
            tasks=self.tasks, functions=self.functions, directory=self.directory,
            node_id=node_id, segment_prefix=segment_prefix,
            mesh_address=lambda: self.membership.mesh_address,
            hot=lambda: self.membership.hot,
            push=self.object_pulls.push, expect_push=self.object_pulls.expect_push,
            end_pull=self.object_pulls.end_pull, fail_with=self._fail_with,
            check_satisfiable=self._check_satisfiable, await_deps=self._await_deps,
            finish_task=self._finish_task)
        self.remote_actors = RemoteActors(
            effects, self.transitions, peers=peers, actors=self.actors, tasks=self.tasks,
            objects=self.objects, functions=self.functions, pull_retries=pull_retries,
            directory=self.directory, node_id=node_id, describe_for=self.forwarding.describe_for,
            adopt=self.forwarding.adopt, adopt_inner=self.forwarding.adopt_inner,
            check_satisfiable=self._check_satisfiable, await_deps=self._await_deps,
            actor_died=lambda actor, death, tell_home=True: self.actor_book.actor_died(
                actor, death, tell_home),
            kill_actor=lambda actor_id, no_restart: self.actor_book.on_actor_kill(
                actor_id, no_restart),
            actor_lookup=lambda namespace, name: self.actor_book.actor_lookup(namespace, name),
            notify_actor=lambda actor: self.actor_book.notify_actor(actor))
        self.actor_book = ActorBook(
            effects, self.transitions, self.pool, actors=self.actors,
            named_actors=self.named_actors, objects=self.objects, tasks=self.tasks,
            functions=self.functions, clients=self.clients, directory=self.directory,
            node_id=node_id, live_peers=lambda: self.membership.live_peers,
            mesh_address=lambda: self.membership.mesh_address,
            control=lambda command: self.membership.control(command),
            new_worker=lambda: self.worker_pool.new_worker(), fail_with=self._fail_with,
            check_satisfiable=self._check_satisfiable, await_deps=self._await_deps,
            finish_task=self._finish_task, cluster_target=self.forwarding.cluster_target,
            forward_actor=self.remote_actors.forward_actor,
            subscribe_remote=self.remote_actors.subscribe_remote,
            relay=self.remote_actors.relay, relay_state=self.remote_actors.relay_state)
        self.worker_pool = WorkerPool(
            effects, self.transitions, self.pool, workers=self.workers,
            workers_by_pid=self.workers_by_pid, idle_workers=self.idle_workers,
            queues=self.queues, clients=self.clients, tasks=self.tasks, objects=self.objects,
            functions=self.functions, node_id=node_id, pipeline_depth=pipeline_depth,
            max_workers=max_workers, live_peers=lambda: self.membership.live_peers,
            mesh_address=lambda: self.membership.mesh_address, await_deps=self._await_deps,
            enqueue=self._enqueue, fail_with=self._fail_with,
            check_satisfiable=self._check_satisfiable, place_actor=self.actor_book.place_actor,
            place_in_cluster=self.forwarding.place_in_cluster,
            actor_worker_exit=self.actor_book.on_actor_worker_exit, drop_client=self._drop_client)
        self.leases = LeaseBook(
            effects, self.pool, workers=self.workers, idle_workers=self.idle_workers,
            queues=self.queues, clients=self.clients, objects=self.objects,
            early_decs=self.early_decs, schedule_if_needed=self.schedule_if_needed,
            make_idle=self.worker_pool.make_idle, set_ready=self.directory.set_ready)
        self.membership = ClusterMembership(
            effects, self.pool, peers=peers, pull_retries=pull_retries, queues=self.queues,
            tasks=self.tasks, objects=self.objects, store=self.store, directory=self.directory,
            node_id=node_id, on_forward=self.forwarding.on_forward,
            on_result=self.forwarding.on_result, on_free=self.forwarding.on_free,
            on_pull=self.object_pulls.on_pull, on_pull_data=self.object_pulls.on_pull_data,
            pull_args=self.object_pulls.pull_args, pull_failed=self.object_pulls.pull_failed,
            on_actor_relay=self.remote_actors.on_actor_relay,
            on_describe=self.remote_actors.on_describe,
            on_described=self.remote_actors.on_described,
            actors_on_dead_node=self._node_died,
            retry_or_fail_lost=self.worker_pool.retry_or_fail_lost,
            cancel=lambda *op: self.cancels.on_cancel(*op), dropped=self._dropped_from_cluster)
        self.cancels = CancelBook(effects, tasks=self.tasks, fail_with=self._fail_with,
                                  cancel_dispatched=self.worker_pool.cancel_dispatched)
        self.lineage = LineageBook(
            self.transitions, objects=self.objects, tasks=self.tasks, directory=self.directory,
            submit=lambda task: self._check_satisfiable(task) and self._await_deps(task),
            await_deps=self._await_deps,
            end_pull=self.object_pulls.end_pull, hand_back=self.forwarding.hand_back)
        self.stopping = False
        self.evicted = None                # why the head dropped this agent (it stops)

    def _node_died(self, node_id: str, why: str) -> None:
        """The membership's hook (before it forgets where objects were)."""
        self.lineage.on_node_died(node_id, why)
        self.remote_actors.on_node_died(node_id, why)

    # ========================================================= instructions

    def take_instructions(self) -> list:
        """What the I/O loop must do now, in order (lightray.agent.instructions;
        the order is Effects.take's); the state forgets them once taken."""
        return self.effects.take(self.workers)

    def take_pull_io(self) -> list:
        """Only the OpenPull / AbortPull instructions (a FORWARD with pushed
        arguments: their bytes are next in the same batch of mesh messages)."""
        return self.effects.take_pull_io()

    def accepts_chunk(self, op: tuple, sender: str) -> bool:
        """Whether a PULL_DATA from sender is for a pull from it under way here."""
        return self.object_pulls.accepts_chunk(op, sender)

    # ============================================ what the I/O loop reads

    def turn(self) -> None:
        """End of a loop turn: place queued work, then the store's work."""
        if self.effects.needs_schedule:
            self.schedule()
        if self.store.needs_work:
            self.store.work()

    def schedule_if_needed(self) -> None:
        if self.effects.needs_schedule:
            self.schedule()

    def schedule(self) -> None:
        """Dispatch every queued task that fits, in FIFO order per resource shape."""
        self.worker_pool.schedule()

    def initial_workers(self, count: int) -> None:
        self.worker_pool.initial_workers(count)

    def on_worker_exit(self, pid: int, status: str) -> None:
        """A worker process exited (its pid and how)."""
        self.worker_pool.on_worker_exit(pid, status)

    def load_counters(self) -> dict:
        """This node's store and transfer counters, as heartbeats report them."""
        return {"store_used": self.store.used, "store_capacity": self.store.capacity,
                "spilled": self.store.spilled_now, "pulled": self.store.pulled_total,
                "served": self.store.served_total, "warm": self.store.warm_bytes}

    def warm_limit(self) -> int:
        """Warm segments count against the capacity: what objects and
        reservations leave of it."""
        return self.store.capacity - self.store.used - self.store.reserved

    def driver_pids(self) -> list:
        """(client id, pid) of every attached driver."""
        return [(c.client_id, c.pid) for c in self.clients.values() if c.kind == "driver"]

    def worker_pids(self) -> list:
        return [w.pid for w in self.workers.values() if w.pid]

    @property
    def is_head(self) -> bool:
        return self.membership.is_head

    def waiting_for_head(self) -> bool:
        """A joining agent the head has not admitted yet."""
        return self.membership.waiting_for_head()

    def leaving(self) -> list:
        """SendPeer instructions that tell the peers this agent stops."""
        return self.membership.leaving()

    def start_cluster(self, mesh_address: str, head_address: str | None, now: float,
                      wall: float, **liveness) -> None:
        """Join the cluster at head_address, or be its head (None)."""
        self.membership.start_cluster(mesh_address, head_address, now, wall, **liveness)

    def cluster_tick(self, now: float, wall: float, load: dict) -> None:
        """Every HEARTBEAT_INTERVAL: tell peers how we are; notice the silent ones."""
        self.membership.cluster_tick(now, wall, load)

    def flush_pull_retries(self) -> None:
        self.membership.flush_pull_retries()

    def _dropped_from_cluster(self, why: str, rejoin: bool = True) -> None:
        """The head dropped this agent (or refused it: rejoin False): stop."""
        if not self.stopping:
            self.evicted = (f"this agent was dropped from the cluster: {why}; "
                            "restart it to join again" if rejoin
                            else f"this agent cannot join the cluster: {why}")
            self.stopping = True

    def on_spill_done(self, object_id: bytes, error) -> None:
        self.store.on_spill_done(object_id, error)

    def on_restore_done(self, object_id: bytes, error) -> None:
        self.store.on_restore_done(object_id, error)

    def on_spawned(self, worker_id: str, pid: int) -> None:
        """A Spawn was executed: the worker's pid."""
        worker = self.workers[worker_id]
        worker.pid = pid
        self.workers_by_pid[pid] = worker

    def on_io_stats(self, copy_seconds: dict, warm_bytes: int | None = None) -> None:
        """Seconds SpillIO spent copying, by kind; bytes of warm segments kept."""
        if copy_seconds is not None:
            self.store.copy_seconds = copy_seconds
        if warm_bytes is not None:
            self.store.warm_bytes = warm_bytes

    # ================================================================ events

    def node_info(self) -> dict:
        return {"node_id": self.node_id, "session": self.session,
                "resources": self.pool.as_floats("total"),
                "num_gpus": len(self.pool.gpu_free),
                "store_capacity": self.store.capacity, "namespace": self.namespace,
                "segment_prefix": self.segment_prefix,
                "mesh_host": self.membership.mesh_address.rpartition(":")[0] or None,
                "stream_key": self.stream_key}

    def on_hello(self, client_id: bytes, kind: str, pid: int, worker_id: str) -> None:
        worker = self.workers.get(worker_id) if kind == "worker" else None
        client = ClientEntry(client_id, kind, pid, worker)
        self.clients[client_id] = client
        membership = self.membership
        if kind == "driver" and membership.mesh_address:
            membership.control(("job_start", client_id, membership.mesh_address, pid,
                                self.namespace, None))
        self.effects.outbox[client.identity].append((m.WELCOME, self.node_info()))
        if worker is not None and worker.actor is not None:
            self.actor_book.on_worker_hello(worker)
        elif worker is not None:
            self.worker_pool.on_worker_hello(worker)

    def handle(self, client_id: bytes, ops: list) -> None:
        client = self.clients.get(client_id)
        if client is None:
            return   # a process we no longer know (it died, or never said hello)
        for op in ops:
            kind = op[0]
            if kind == m.INC:
                self.directory.on_inc(client, op[1])
            elif kind == m.DEC:
                self.directory.on_dec(client, op[1])
            elif kind == m.SUBMIT:
                self._on_submit(client, op[1], op[2] if len(op) > 2 else None)
            elif kind == m.DONE:
                if client.reserved:
                    self.store.consume_reservation(client, op[2])
                self._on_done(client, op[1], op[2], op[3], op[4])
            elif kind == m.EXPORT:
                self.functions[op[1]] = op[2]
                if self.membership.mesh_address:
                    self.membership.control(("function_export", op[1], op[2], None))
            elif kind == m.PUT:
                if client.reserved:
                    self.store.consume_reservation(client, (op[2],))
                self.directory.on_put(client, op[1], op[2], op[3], op[4] if len(op) > 4 else None)
            elif kind == m.SUBSCRIBE:
                self.directory.on_subscribe(client, op[1])
            elif kind == m.BLOCKED:
                self.worker_pool.on_blocked(client, op[2])
            elif kind == m.UNBLOCKED:
                self.worker_pool.on_unblocked(client)
            elif kind == m.RETURNED:
                self.worker_pool.on_returned(client, op[1])
            elif kind == m.CANCEL:
                self.cancels.on_cancel(*op[1:])
            elif kind == m.INFO:
                what = op[2]
                if type(what) is tuple and what[0] == "state":
                    self.state_queries.on_client(client, op[1], what)
                elif (self.membership.live_peers and type(what) is tuple and what[0] == "actor"
                        and self.actor_book.actor_lookup(what[1], what[2]) is None):
                    self.remote_actors.lookup_named_remote(client, op[1], what[1], what[2])
                else:
                    self.effects.outbox[client.identity].append(
                        (m.INFO_REPLY, op[1], self.info(what)))
            elif kind == m.LEASE_REQUEST:
                self.leases.on_request(client, op[1])
            elif kind == m.LEASE_RETURN:
                self.leases.on_return(client, op[1])
            elif kind == m.REGISTER:
                self.leases.on_register(client, op[1], op[2], op[3])
            elif kind == m.DIRECT_RESULT:
                if client.reserved:
                    self.store.consume_reservation(client, (op[3],))
                self.leases.on_direct_result(op[1], op[2], op[3], op[4])
            elif kind == m.RESERVE:
                self.store.on_reserve(client, op[1], op[2], op[3])
            elif kind == m.RESTORE:
                self.store.on_restore(client, op[1], op[2])
            elif kind == m.DIRECT_CANCEL:
                self.leases.on_direct_cancel(client, op[1], op[2], op[3])
                if len(op) < 5 or op[4]:
                    self.cancels.cancel_children_of_worker(op[1], op[3])
            elif kind == m.ACTOR_CREATE:
                self.actor_book.on_actor_create(client, op[1], op[2], op[3])
            elif kind == m.ACTOR_SUBSCRIBE:
                self.actor_book.on_actor_subscribe(client, op[1])
            elif kind == m.ACTOR_KILL:
                self.actor_book.on_actor_kill(op[1], op[2], op[3] if len(op) > 3 else None)
            elif kind == m.ACTOR_READY:
                self.actor_book.on_actor_ready(client, op[1], op[2],
                                               op[3] if len(op) > 3 else None)
            elif kind == m.ADOPT_FROM:
                if len(op) > 4:
                    self.remote_actors.on_adopt_handed_over(op[2], op[3])
                else:
                    self.remote_actors.on_adopt_from(client, op[1], op[2], op[3])
            elif kind == m.HAND_OVER:
                self.remote_actors.on_hand_over(op[1], op[2])
            elif kind == m.GOODBYE:
                self._drop_client(client)
            elif kind == m.TASK_EVENTS:
                self.events.from_worker(op[1])
            elif kind == m.SHUTDOWN:
                self.stopping = True

    def handle_peer(self, sender: str, ops: list, now: float, wall: float, size: int = 0):
        """Messages from another agent of the cluster; None, or (why they were
        dropped, the text of a JOIN_REFUSED to answer or None)."""
        return self.membership.handle_peer(sender, ops, now, wall, size)

    # ================================================================ tasks

    def _on_submit(self, client: ClientEntry, spec: tuple, call_site=None) -> None:
        task = Task(spec, client.client_id)
        self.tasks[task.task_id] = task
        self.events.submitted(task)
        objects = self.objects
        for object_id in return_ids(task.task_id, spec[ts.NUM_RETURNS]):
            self.directory.expect_result(client, object_id, call_site)
        deps = spec[ts.DEPS]
        unknown = [d for d in deps if d not in objects]
        self.lineage.record(task)
        self.cancels.note_submit(client.worker, task)
        self.directory.pin(deps)
        self.directory.pin(spec[ts.CONTAINED])
        # The submitter holds its refs (we would know them unless they come from
        # another session or were lost), and EXPORTs a function before its first
        # SUBMIT on the same socket (else it is a broken client: fail, serve on).
        if unknown:
            self._fail_with(task, exceptions.ObjectLostError(
                f"argument {unknown[0].hex()} of task {spec[ts.FUNCTION_NAME]}() is not in this "
                "runtime's object store (an ObjectRef from an earlier session?)"))
        elif spec[ts.FUNCTION_ID] not in self.functions:
            self._fail_with(task, exceptions.LightrayError(
                f"task {spec[ts.FUNCTION_NAME]}() names function "
                f"{spec[ts.FUNCTION_ID].hex()}, which its submitter never exported"))
        elif self._check_satisfiable(task):
            self._await_deps(task)

    def _check_satisfiable(self, task: Task) -> bool:
        """Fail a task that asks for more than this runtime has; False if so."""
        missing = self.pool.unsatisfiable(task.request)
        if missing is None:
            return True
        if self.membership.live_peers and task.origin is None:
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
        if task.spec[ts.DEPS] and not self.store.arguments_fit(task):
            return
        for object_id in task.spec[ts.DEPS]:
            entry = objects[object_id]
            spill = entry.spill
            if entry.pending or (spill is not None
                                 and (fetch or (spill != REMOTE and spill != PULLING))
                                 and not self.store.want_in_memory(object_id, entry)):
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
            self.transitions.task(task, WAITING, ("for", task.missing_deps, "argument(s)"))
            task.worker = None
            self.worker_pool.pipeline_behind_producers(task)

    def _enqueue(self, task: Task, front: bool = False) -> None:
        if task.spec[ts.DEPS] and not self.store.arguments_fit(task):
            return
        self.transitions.task(task, QUEUED, "arguments ready")
        self.events.queued(task)
        task.worker = None
        queue = self.queues.get(task.shape)
        if queue is None:
            queue = self.queues[task.shape] = collections.deque()
        if front:
            queue.appendleft(task)
        else:
            queue.append(task)
        self.effects.needs_schedule = True

    def _finish_task(self, task: Task) -> None:
        """Unpin what the task held; it is gone from the agent afterwards."""
        if task.state == FINISHED:
            return
        self.transitions.task(task, FINISHED, "done")
        self.tasks.pop(task.task_id, None)
        self.cancels.finished(task.task_id)
        if task.origin is not None:
            self.forwarding.report_forwarded(task)
        spec = task.spec
        for object_id in spec[ts.DEPS]:
            self.directory.unref(object_id)
        for object_id in spec[ts.CONTAINED]:
            self.directory.unref(object_id)

    def _fail_task(self, task: Task, payload) -> None:
        if task.state == FINISHED:
            return
        if task.actor is not None:
            actor, task.actor = task.actor, None
            self.actor_book.actor_creation_failed(actor, payload)
        for object_id in return_ids(task.task_id, task.spec[ts.NUM_RETURNS]):
            entry = self.objects.get(object_id)
            if entry is not None and entry.pending:
                self.directory.set_ready(object_id, entry, payload, ())
        self._finish_task(task)

    def _fail_with(self, task: Task, error: Exception) -> None:
        self.events.failed(task, error)
        self._fail_task(task, (ERROR, serialization.dumps_exception(error)))

    def _on_done(self, client: ClientEntry, task_id: bytes, payloads, contained, retryable) -> None:
        worker = client.worker
        task = self.tasks.get(task_id)
        if worker is not None:
            self.worker_pool.remove_from_worker(worker, task_id)
        if task is None or task.state == FINISHED:
            self._discard_payloads(payloads)
        elif retryable and task.retries_left > 0 and not task.cancelled:
            task.retries_left -= 1
            self.events.retried(task)
            self._enqueue(task)
        else:
            for object_id, payload, inner in zip(
                    return_ids(task_id, task.spec[ts.NUM_RETURNS]), payloads, contained):
                entry = self.objects.get(object_id)
                if entry is None or not entry.pending:   # nobody wants it (any more)
                    self._discard_payloads([payload])
                    continue
                self.directory.set_ready(object_id, entry, payload, inner)
            self._finish_task(task)
        if worker is not None:
            self.worker_pool.after_worker_progress(worker)

    def _discard_payloads(self, payloads) -> None:
        self.effects.free_segments.extend(p[1][0] for p in payloads if p[0] == SHARED)

    def on_client_gone(self, client_id: bytes) -> None:
        """A process left without GOODBYE (its pid is gone)."""
        client = self.clients.get(client_id)
        if client is not None:
            self._drop_client(client)

    def _drop_client(self, client: ClientEntry) -> None:
        if client.kind == "driver" and self.membership.mesh_address:
            self.membership.control(("job_finish", client.client_id, None))
        for worker_id in list(client.leases):
            self.leases.on_return(client, worker_id)
        self.early_decs.pop(client.client_id, None)
        self.clients.pop(client.client_id, None)
        self.store.release_reservations(client)
        if self.actors:
            self.actor_book.drop_owned_actors(client)
        held, client.held = client.held, set()
        for object_id in held:
            self.directory.unref(object_id)

    # ================================================================= info

    def info(self, what: str):
        return info_answer(self, what)

    def all_segments(self) -> list:
        return [e.payload[1][0] for e in self.objects.values()
                if e.payload is not None and e.payload[0] == SHARED
                and e.spill not in (SPILLED, REMOTE)]

