"""Actors in the agent: placement, a worker of their own, restarts, names. No I/O.

    ACTOR_CREATE ─▶ constructor Task (waits for its arguments, then for the
                    placement resources) ─▶ fork a dedicated worker ─▶ ACTOR_START
    ACTOR_READY  ─▶ ALIVE: ACTOR_STATE(alive, worker) to every subscriber
    worker dies  ─▶ RESTARTING (restarts left: fork again, constructor again) or DEAD
    ACTOR_KILL, last handle gone, owner gone (named) ─▶ DEAD: worker killed,
                    resources back to the pool, name freed

Actor states: PENDING (constructor not run yet) -> ALIVE <-> RESTARTING -> DEAD.
Method calls never pass through here: callers send them to the actor's
worker directly (lightray.client.actor_caller). The agent tells subscribers (every
process that called the actor) where it runs and when that changes.

Lifetime: the actor's handle object (lightray.ids.handle_object_id) is an
entry of the object table counted like any ref; when it is freed, an actor
that is neither named nor detached is stopped. A name pins the handle object
until the actor dies; a non-detached named actor dies with the process that
created it, a detached one lives as long as the agent.

``ActorBook`` is a part of ``AgentState`` (lightray.agent.state, its
``actor_book`` field): the book of every actor this node knows (those it
runs, and proxies of those its processes created on other nodes). It works
on the actor and object tables and the Effects it is given, and reaches the
task path, the worker pool, the cluster (placement on a peer, the relays of
lightray.agent.cluster.remote_actors, the control store) only through the
functions passed to it.
"""
from __future__ import annotations

from .. import exceptions, serialization
from .. import task_spec as ts
from .records import ActorEntry, ClientEntry, ObjectEntry, Task
from ..serialization import ERROR
from ..ids import HANDLE_PAYLOAD, handle_object_id
from ..states import ACTOR, ALIVE, DEAD, DISPATCHED, FINISHED, PENDING, RESTARTING
from ..transport import messages as m

# Actor states (PENDING, ALIVE, RESTARTING, DEAD) are named in lightray.states.


class ActorBook:
    __slots__ = ("effects", "transitions", "pool", "actors", "named_actors", "objects", "tasks",
                 "functions", "clients", "directory", "node_id", "_live_peers", "_mesh_address",
                 "_control", "_new_worker", "_fail_with", "_check_satisfiable", "_await_deps",
                 "_finish_task", "_cluster_target", "_forward_actor", "_subscribe_remote",
                 "_relay", "_relay_state")

    def __init__(self, effects, transitions, pool, *, actors: dict, named_actors: dict,
                 objects: dict, tasks: dict, functions: dict, clients: dict, directory,
                 node_id: str, live_peers, mesh_address, control, new_worker, fail_with,
                 check_satisfiable, await_deps, finish_task, cluster_target, forward_actor,
                 subscribe_remote, relay, relay_state):
        self.effects = effects           # lightray.agent.effects.Effects
        self.transitions = transitions   # lightray.states.Transitions
        self.pool = pool                 # the node's ResourcePool
        self.actors = actors             # actor id -> ActorEntry
        self.named_actors = named_actors   # (namespace, name) -> actor id
        self.objects = objects           # the object table
        self.tasks = tasks
        self.functions = functions       # function id -> its pickled bytes
        self.clients = clients
        self.directory = directory       # ObjectDirectory (lightray.agent.objects)
        self.node_id = node_id
        # the cluster (lightray.agent.cluster)
        self._live_peers = live_peers          # () -> how many peers are alive
        self._mesh_address = mesh_address      # () -> this node's mesh address, "" if none
        self._control = control                # (command): a write for the control store
        self._cluster_target = cluster_target  # (task) -> node id, None after failing it
        self._forward_actor = forward_actor    # (actor, creation task, node id)
        self._subscribe_remote = subscribe_remote   # (client, actor id): ask the peers
        self._relay = relay                    # (node id, actor id, message)
        self._relay_state = relay_state        # (actor) -> its "state" relay message
        # the worker pool and the task path
        self._new_worker = new_worker          # () -> a WorkerEntry to fork
        self._fail_with = fail_with            # (task, exception)
        self._check_satisfiable = check_satisfiable   # (task) -> False if it failed it
        self._await_deps = await_deps          # (task)
        self._finish_task = finish_task        # (task)

    # ------------------------------------------------------------ creation

    def on_actor_create(self, client: ClientEntry, request_id: int, spec: tuple,
                        description: dict) -> None:
        actor_id = spec[ts.TASK_ID]
        name = description["name"]
        key = None
        if name is not None:
            key = (description["namespace"], name)
            existing = self.actors.get(self.named_actors.get(key))
            if existing is not None and existing.state != DEAD:
                if description["get_if_exists"]:
                    reply = ("exists", existing.actor_id, existing.description)
                else:
                    reply = ("taken", f"an actor named {name!r} already exists in namespace "
                                      f"{key[0]!r}; pick another name, pass get_if_exists=True, "
                                      "or get it with lightray.get_actor()")
                self.effects.outbox[client.identity].append((m.INFO_REPLY, request_id, reply))
                return
        actor = ActorEntry(spec, description, client.client_id)
        self.actors[actor_id] = actor
        self._control(("actor_register", actor_id, name, key[0] if key else None, None,
                       PENDING, client.client_id, bool(description["detached"]),
                       description["class_name"], None))
        handle = self.objects[handle_object_id(actor_id)] = ObjectEntry(
            1, HANDLE_PAYLOAD, owner=client.client_id)
        client.held.add(handle_object_id(actor_id))
        if key is not None or description["detached"]:
            handle.refs += 1
            actor.name_pinned = True
        if key is not None:
            actor.name_key = key
            self.named_actors[key] = actor_id
        if request_id:
            self.effects.outbox[client.identity].append((m.INFO_REPLY, request_id, ("created",)))
        # The actor pins its constructor's arguments for its whole life: a
        # restart runs the constructor again with them.
        self.directory.pin(spec[ts.DEPS])
        self.directory.pin(spec[ts.CONTAINED])
        self._submit_constructor(actor, client)

    def _submit_constructor(self, actor: ActorEntry, client: ClientEntry) -> None:
        spec = actor.spec
        task = Task(spec, client.client_id)
        task.actor = actor
        self.tasks[actor.actor_id] = task
        self.directory.pin(spec[ts.DEPS])
        self.directory.pin(spec[ts.CONTAINED])
        unknown = [d for d in spec[ts.DEPS] if d not in self.objects]
        if unknown:
            self._fail_with(task, exceptions.ObjectLostError(
                f"argument {unknown[0].hex()} of actor {spec[ts.FUNCTION_NAME]} is not in "
                "this runtime's object store"))
            return
        if not self._check_satisfiable(task):
            return
        self._await_deps(task)

    def place_actor(self, task) -> bool:
        """Acquire the placement resources and fork the actor's worker (or
        place it on another node)."""
        actor = task.actor
        if self._live_peers() and actor.origin is None:
            node_id = self._cluster_target(task)
            if node_id is None:
                return True       # failed: it can never run anywhere
            if node_id != self.node_id:
                self._forward_actor(actor, task, node_id)
                return True
        elif self._mesh_address() and not self._check_satisfiable(task):
            return True           # the peers that could run it are gone
        allocation = self.pool.try_acquire(task.request)
        if allocation is None:
            return False
        held = actor.description["held"]
        if held != task.request:
            self.pool.release(allocation)
            allocation = self.pool.try_acquire(held)
        actor.allocation = allocation
        self.transitions.task(task, DISPATCHED, "the actor's own worker")
        self._start_actor_worker(actor)
        task.worker = actor.worker
        return True

    def _start_actor_worker(self, actor: ActorEntry) -> None:
        worker = self._new_worker()
        worker.state = ACTOR
        worker.actor = actor
        worker.allocation = None   # the actor holds it, across restarts
        actor.worker = worker

    def on_worker_hello(self, worker) -> None:
        """The actor's worker process said hello: run the constructor there."""
        if worker.actor.state == DEAD or worker.actor.worker is not worker:
            self.effects.kill.append(worker.pid)   # its actor died before it started
        elif worker.state != DEAD:
            worker.started = True
            self._send_actor_start(worker)

    def _send_actor_start(self, worker) -> None:
        actor = worker.actor
        spec = actor.spec
        function_id = spec[ts.FUNCTION_ID]
        worker.functions.add(function_id)
        objects = self.objects
        dep_payloads = [objects[d].payload for d in spec[ts.DEPS]]
        allocation = actor.allocation
        assignment = (actor.description["held"], allocation.gpu_ids if allocation else [])
        self.effects.outbox[worker.worker_id.encode() + b"r"].append(
            (m.ACTOR_START, spec, self.functions[function_id], dep_payloads, assignment,
             actor.description))

    def on_actor_ready(self, client: ClientEntry, actor_id: bytes, error_payload,
                       tcp_address=None) -> None:
        actor = self.actors.get(actor_id)
        if actor is None or actor.worker is not client.worker or actor.state == DEAD:
            return
        actor.tcp_address = tcp_address
        task = self.tasks.get(actor_id)
        if task is not None and task.state != FINISHED:
            self._finish_task(task)
        if error_payload is not None:
            # An exception in __init__ is final: no restart.
            self.actor_died(actor, error_payload)
            return
        self.transitions.actor(actor, ALIVE, "constructor ran")
        self.notify_actor(actor)

    # ------------------------------------------------------------- callers

    def on_actor_subscribe(self, client: ClientEntry, actor_id: bytes) -> None:
        actor = self.actors.get(actor_id)
        if actor is None and self._live_peers():
            self._subscribe_remote(client, actor_id)
            return
        if actor is None:
            error = exceptions.ActorDiedError(
                f"the actor {actor_id.hex()} is not in this runtime: it ended and every "
                "handle to it was dropped, or it belongs to another session")
            self.effects.outbox[client.identity].append(
                (m.ACTOR_STATE, actor_id, 1 << 30, DEAD, None,
                 (ERROR, serialization.dumps_exception(error))))
            return
        actor.subscribers.add(client.identity)
        if actor.state != PENDING:
            self.effects.outbox[client.identity].append(self._actor_state_op(actor))

    def _actor_state_op(self, actor: ActorEntry) -> tuple:
        worker_id = None
        if actor.state == ALIVE:   # a local worker, or tcp://... on another node
            worker_id = actor.worker.worker_id if actor.worker is not None else actor.tcp_address
        return (m.ACTOR_STATE, actor.actor_id, actor.incarnation, actor.state, worker_id,
                actor.death)

    def notify_actor(self, actor: ActorEntry) -> None:
        op = self._actor_state_op(actor)
        for identity in actor.subscribers:
            if identity[:-1] in self.clients:
                self.effects.outbox[identity].append(op)
        if not actor.borrowed and self._mesh_address():
            self._record_actor(actor)
        if actor.peer_subscribers:
            relayed = self._relay_state(actor)
            for node_id in actor.peer_subscribers:
                self._relay(node_id, actor.actor_id, relayed)

    def _record_actor(self, actor: ActorEntry) -> None:
        """Its state in the control store (from the node running it, and from
        its owner: whichever reaches the head last is as new)."""
        here = actor.worker is not None
        cause = None
        if actor.death is not None:
            try:
                cause = str(serialization.deserialize(actor.death[1]))
            except Exception:
                cause = "died"
        self._control(("actor_update", actor.actor_id, actor.state,
                       self.node_id if here else actor.home,
                       actor.worker.worker_id if here and actor.state == ALIVE else None,
                       actor.incarnation, cause, None))

    def actor_lookup(self, namespace: str, name: str):
        """(actor id, description) of a live named actor, or None."""
        actor = self.actors.get(self.named_actors.get((namespace, name)))
        if actor is None or actor.state == DEAD:
            return None
        return actor.actor_id, actor.description

    # --------------------------------------------------------------- death

    def on_actor_kill(self, actor_id: bytes, no_restart: bool, why: str | None = None) -> None:
        """lightray.kill(), or (why given) the actor's own exit_actor(): final."""
        actor = self.actors.get(actor_id)
        if actor is None or actor.state == DEAD:
            return
        if actor.home is not None and not no_restart:
            self._relay(actor.home, actor_id, ("kill", False))   # it restarts there
            return
        if no_restart or actor.restarts_left <= 0:
            how = f"exited: {why}" if why is not None else "was killed with lightray.kill()"
            self.actor_died(actor, _died_payload(
                f"the actor {actor.description['class_name']} ({actor_id.hex()}) {how}"))
        elif actor.worker is not None and actor.worker.pid:
            self.effects.kill.append(actor.worker.pid)   # restarts when its exit is seen

    def on_actor_worker_exit(self, worker, status: str) -> None:
        actor = worker.actor
        if actor.state == DEAD or actor.worker is not worker:
            return
        name = actor.description["class_name"]
        if actor.restarts_left > 0:
            actor.restarts_left -= 1
            actor.incarnation += 1
            self.transitions.actor(actor, RESTARTING, ("its worker", status))
            if actor.allocation is not None:
                self.pool.reacquire_cpu(actor.allocation)   # lent while it waited in get
            self.notify_actor(actor)
            self._start_actor_worker(actor)
            task = self.tasks.get(actor.actor_id)
            if task is not None:
                task.worker = actor.worker
            return
        restarts = actor.spec[ts.MAX_RETRIES]
        self.actor_died(actor, _died_payload(
            f"the actor {name} ({actor.actor_id.hex()}) died: its worker process (pid "
            f"{worker.pid}) {status}; no restarts left (max_restarts={restarts})"))

    def actor_died(self, actor: ActorEntry, death_payload, tell_home: bool = True) -> None:
        """Final: tell callers, stop its process, give back resources and name."""
        if actor.state == DEAD:
            return
        if actor.home is not None and tell_home:
            self._relay(actor.home, actor.actor_id, ("kill", True))
        self.transitions.actor(actor, DEAD, "died")
        actor.death = death_payload
        self.notify_actor(actor)
        actor.subscribers = set()
        worker = actor.worker
        if worker is not None and worker.state != DEAD and worker.pid:
            self.effects.kill.append(worker.pid)
        if actor.allocation is not None:
            self.pool.release(actor.allocation)
            actor.allocation = None
            self.effects.needs_schedule = True
        task = self.tasks.get(actor.actor_id)
        if task is not None and task.state != FINISHED:
            task.actor = None   # its failure is this death, reported already
            self._finish_task(task)
        self._unref_all(actor.spec[ts.DEPS])
        self._unref_all(actor.spec[ts.CONTAINED])
        if actor.name_key is not None and self.named_actors.get(actor.name_key) == actor.actor_id:
            del self.named_actors[actor.name_key]
            if self._mesh_address():     # the cluster-wide claim (lightray.client.actor_names)
                self._control(("actor_name_release", actor.actor_id) + actor.name_key)
        if actor.name_pinned:
            actor.name_pinned = False
            self.directory.unref(handle_object_id(actor.actor_id))

    def actor_creation_failed(self, actor: ActorEntry, payload) -> None:
        """Its constructor could not run (an argument failed, lost, or too
        large a resource request): calls raise ActorDiedError with the cause."""
        try:
            cause = serialization.deserialize(payload[1])
        except Exception:   # an exception class the agent cannot import
            cause = None
        self.actor_died(actor, (ERROR, serialization.dumps_exception(exceptions.ActorDiedError(
            f"the actor {actor.description['class_name']} ({actor.actor_id.hex()}) could not be "
            f"created: {cause if cause is not None else 'an argument of its constructor failed'}",
            cause))))

    def on_actor_handles_gone(self, actor_id: bytes) -> None:
        """The handle object was freed: no process can call the actor any more."""
        actor = self.actors.get(actor_id)
        if actor is not None and (actor.origin is not None or actor.borrowed):
            return   # only the owner's handle object decides (a borrowed copy was freed)
        actor = self.actors.pop(actor_id, None)
        if actor is not None and actor.state != DEAD:
            self.actor_died(actor, _died_payload(
                f"the actor {actor.description['class_name']} ({actor_id.hex()}) was stopped: "
                "every handle to it went away"))

    def drop_owned_actors(self, client: ClientEntry) -> None:
        """A process left: its non-detached named actors die with it (Ray's
        fate sharing); unnamed ones live while handles to them do."""
        for actor in list(self.actors.values()):
            if (actor.owner == client.client_id and actor.name_key is not None
                    and not actor.description["detached"] and actor.state != DEAD):
                self.actor_died(actor, _died_payload(
                    f"the actor {actor.description['class_name']} ({actor.actor_id.hex()}) "
                    "died with the process that created it (create it with "
                    "lifetime='detached' to keep it)"))

    def _unref_all(self, object_ids) -> None:
        for object_id in object_ids:
            self.directory.unref(object_id)


def _died_payload(message: str):
    return (ERROR, serialization.dumps_exception(exceptions.ActorDiedError(message)))
