"""LocalClient: the client of ``init(local_mode=True)``, everything in this process.

It stands where a CoreClient stands (lightray.runtime's current client):
ObjectRefs, remote functions, actor handles and lightray.api talk to it the
same way, and it answers without an agent, workers, sockets or shared
memory. Remote functions, actor classes and api ask ``runs_in_process``
and hand it the call itself (``submit_function``, ``create_actor``,
``put_value``, ``kill_actor``) instead of a task spec.
"""
from __future__ import annotations

import os
import threading

from .. import exceptions
from .. import runtime_env as runtime_envs
from ..ids import TASK_ID_BYTES, IdMaker, is_handle_object, random_hex, task_of
from ..object_ref import ObjectRef
from ..runtime import namespace_for
from .actors import DEAD, LocalActor, actor_handle
from .kv import LocalKV
from .objects import LocalObjects, new_entry
from .running import Call, prepare_arguments
from .tasks import LocalScheduler, LocalTask, Placement, TaskPlan
from .threads import current_context


_new_ref = ObjectRef.__new__
_MAX_PLANS = 1024


class LocalClient:
    """A local-mode runtime; see the module docstring."""

    runs_in_process = True
    kind = "driver"

    def __init__(self, total: dict, namespace: str | None, copy_values: bool = True):
        self.ids = IdMaker()
        self.copy_values = copy_values
        self.node_id = random_hex(16)
        self.node_info = {"node_id": self.node_id, "namespace": namespace or "default",
                          "local_mode": True}
        self.objects = LocalObjects(copy_values, on_handle_gone=self._handle_gone)
        self.pending_decs = self.objects.pending_decs
        self.scheduler = LocalScheduler(total, self.objects, self.node_id)
        self.actors: dict = {}          # actor id -> LocalActor
        self.named: dict = {}           # (namespace, name) -> LocalActor
        self.kv = LocalKV()
        self.closed = False
        self.dead_reason = ""
        self._lock = threading.Lock()   # actors and names
        # TaskOptions -> TaskPlan: what submit needs of a remote function's
        # options, worked out once (TaskOptions are immutable).
        self._plans: dict = {}

    # ---------------------------------------------------------- ref counting

    def add_local_ref(self, object_id: bytes, owned: bool) -> None:
        self.objects.add_ref(object_id)

    # ------------------------------------------------------------- tasks

    def _check_running(self) -> None:
        if self.closed:
            raise exceptions.RuntimeNotRunningError(
                "lightray is not running (shutdown() was called)")

    def _new_call(self, name: str, num_returns: int, args: tuple, kwargs: dict) -> Call:
        if self.closed:
            self._check_running()
        call = Call(self.ids.task_id(), name, num_returns)
        if args or kwargs:
            prepare_arguments(call, args, kwargs, self.copy_values)
        # The decrements ObjectRef.__del__ queued, the return entries and
        # their first count, under one lock; so each ref is made without
        # ObjectRef.__init__ counting it again.
        objects = self.objects
        entries, counts = objects.entries, objects.counts
        gone_handles = []
        with objects.lock:
            if self.pending_decs:
                objects.drain_locked(gone_handles)
            for object_id in call.return_ids:
                entries[object_id] = new_entry()   # a fresh task id: never there yet
                counts[object_id] = 1
        if gone_handles:
            objects.handles_gone(gone_handles)
        refs = call.refs = []
        for object_id in call.return_ids:
            ref = _new_ref(ObjectRef)
            ref._id, ref._client = object_id, self
            refs.append(ref)
        return call

    def _plan(self, exported, options) -> TaskPlan:
        runtime_envs.refuse_in_local_mode(options.runtime_env, exported.name)
        if self.copy_values:
            exported.ensure_pickled()   # an unpicklable function fails as in cluster mode
        plan = TaskPlan(exported, options, self.scheduler)
        plans = self._plans
        if len(plans) >= _MAX_PLANS:    # .options() in a loop makes new TaskOptions
            plans.clear()
        plans[options] = plan
        return plan

    def submit_function(self, exported, options, args: tuple, kwargs: dict) -> list:
        """Run a remote function's task; its return refs."""
        plan = self._plans.get(options)
        if plan is None or plan.exported is not exported:
            plan = self._plan(exported, options)
        call = self._new_call(plan.name, plan.num_returns, args, kwargs)
        task = LocalTask(call, plan)
        context = current_context()
        if context is not None and context.task is not None:
            context.task.children.append(call.task_id)   # for a recursive cancel of the parent
        refs = call.refs
        call.refs = []                  # the task must not keep its own results alive
        self.scheduler.submit(task)
        return refs

    def put_value(self, value) -> ObjectRef:
        self._check_running()
        self.objects.drain()
        object_id = self.ids.task_id() + b"\x00\x00"
        self.objects.expect([object_id])
        ref = ObjectRef(object_id, self, owned=True)   # first: a value nobody holds is dropped
        try:
            self.objects.resolve(object_id, value)
        except Exception as error:
            with self.objects.lock:
                self.objects.entries.pop(object_id, None)
            raise TypeError(f"put() could not serialize {type(value).__name__} object: "
                            f"{error}") from error
        return ref

    # -------------------------------------------------------------- actors

    def create_actor(self, actor_class, args: tuple, kwargs: dict):
        """Start an actor of actor_class (an ActorClass); its handle."""
        self._check_running()
        options = actor_class._options
        cls = actor_class._cls
        if self.copy_values:
            actor_class._exported.ensure_pickled()
        name = cls.__name__
        namespace = None if options.name is None else namespace_for(options.namespace)
        error = self.scheduler.infeasible(options.placement, f"actor {name}")
        call = self._new_call(f"{name}.__init__", 0, args, kwargs)
        description = {
            "class_name": name, "methods": actor_class._methods,
            "is_async": actor_class._is_async, "max_concurrency": options.max_concurrency,
            "held": options.held, "max_task_retries": options.max_task_retries,
            "name": options.name, "namespace": namespace, "detached": options.detached,
            "get_if_exists": options.get_if_exists,
        }
        max_restarts = (1 << 30) if options.max_restarts == -1 else options.max_restarts
        actor = LocalActor(self, call.task_id, cls, description, call, max_restarts)
        actor.placement = options.placement
        with self._lock:   # the name is checked and taken at once
            if options.name is not None:
                existing = self.named.get((namespace, options.name))
                if existing is not None and existing.state != DEAD:
                    if options.get_if_exists:
                        return actor_handle(self, existing)
                    raise ValueError(f"the actor name {options.name!r} is taken in "
                                     f"namespace {namespace!r}")
                self.named[(namespace, options.name)] = actor
            self.actors[actor.actor_id] = actor
        handle = actor_handle(self, actor)
        if error is not None:
            actor.die(exceptions.ActorDiedError(
                f"the actor {name} ({actor.actor_id.hex()}) could not be created: {error}",
                error))
        else:
            self.place_actor(actor)
        return handle

    def place_actor(self, actor: LocalActor) -> None:
        self.scheduler.place(Placement(actor.placement, actor.description["held"], actor.start))

    def actor_caller(self):
        return self

    def call(self, handle, method_name: str, num_returns: int, args: tuple, kwargs: dict):
        """An actor call (the ActorCaller interface of lightray.actor)."""
        actor = self.actors.get(handle._lr_actor_id)
        name = f"{handle._lr_description['class_name']}.{method_name}"
        call = self._new_call(name, num_returns, args, kwargs)
        refs = call.refs
        call.refs = []
        if actor is None:
            error = exceptions.ActorDiedError(
                f"the actor {handle._lr_actor_id.hex()} is not in this runtime: it ended "
                "and every handle to it was dropped, or it belongs to another session")
            for object_id in call.return_ids:
                self.objects.fail(object_id, error)
        else:
            actor.submit(call, method_name)
        return refs

    def kill_actor(self, actor_id: bytes, no_restart: bool) -> None:
        actor = self.actors.get(actor_id)
        if actor is None:
            return
        actor.die(exceptions.ActorDiedError(
            f"the actor {actor.name} ({actor_id.hex()}) was killed with lightray.kill()"),
            restart=not no_restart)
        self._forget_if_dead(actor)

    def _handle_gone(self, actor_id: bytes) -> None:
        """The last handle went: the actor stops, unless named or detached."""
        actor = self.actors.get(actor_id)
        if actor is None:
            return
        description = actor.description
        if description["name"] is not None or description["detached"]:
            return
        actor.retire(exceptions.ActorDiedError(
            f"the actor {actor.name} ({actor_id.hex()}) was stopped: every handle to it "
            "went away"))

    def _forget_if_dead(self, actor: LocalActor) -> None:
        if actor.state != DEAD:
            return
        with self._lock:
            description = actor.description
            key = (description["namespace"], description["name"])
            if self.named.get(key) is actor:
                del self.named[key]

    # ------------------------------------------------------ get / wait / cancel

    def wait_ready(self, object_ids: list, num_ready: int, timeout) -> None:
        is_ready = self.objects.is_ready
        missing = [i for i in object_ids if not is_ready(i)]
        if len(object_ids) - len(missing) >= num_ready:
            return
        if timeout is None and num_ready == len(object_ids):
            # A get that would block: run what it waits for here, if no
            # thread has taken it yet.
            # Running one may free the resources another one waits for:
            # again until a round finds none READY.
            help_with = self.scheduler.help_with
            helped = True
            while helped and missing:
                helped = False
                for object_id in missing:
                    if not is_ready(object_id) and help_with(object_id[:TASK_ID_BYTES]):
                        helped = True
                missing = [i for i in missing if not is_ready(i)]
            if not missing:
                return
        context = current_context()
        task = context.task if context is not None else None
        if task is not None:
            self.scheduler.blocked(task)
            try:
                self.objects.wait(object_ids, num_ready, timeout, sliced=True)
            finally:
                self.scheduler.unblocked(task)
            return
        self.objects.wait(object_ids, num_ready, timeout, sliced=context is not None)

    def is_ready(self, object_id: bytes) -> bool:
        return self.objects.is_ready(object_id)

    def get_values(self, refs: list, timeout=None) -> list:
        if len(refs) == 1:   # the common get(ref): no lists to build
            object_id = refs[0]._id
            objects = self.objects
            entry = objects.entries.get(object_id)
            if entry is not None and not entry.done and timeout is None:
                self.scheduler.help_with(object_id[:TASK_ID_BYTES])   # READY: run it here
            if entry is None or not entry.done:
                self.wait_ready([object_id], 1, timeout)
                if not objects.is_ready(object_id):
                    raise exceptions.GetTimeoutError(
                        f"get timed out after {timeout} s: 1 of 1 objects not ready")
            return [objects.value(object_id)]
        object_ids = [r._id for r in refs]
        self.wait_ready(object_ids, len(object_ids), timeout)
        objects = self.objects
        pending = sum(1 for i in object_ids if not objects.is_ready(i))
        if pending:
            raise exceptions.GetTimeoutError(
                f"get timed out after {timeout} s: {pending} of {len(object_ids)} objects not ready")
        return [objects.value(i) for i in object_ids]

    def future(self, ref: ObjectRef):
        return self.objects.future(ref._id)

    def when_ready(self, ref: ObjectRef, callback) -> None:
        self.objects.when_done(ref._id, callback)

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool = True) -> None:
        """recursive: the tasks it submitted (and theirs) are cancelled too."""
        if not is_handle_object(ref._id):
            self.scheduler.cancel(task_of(ref._id), force, recursive)

    # ------------------------------------------------------------- info

    def info(self, what, timeout: float = 10.0):
        self.objects.drain()
        pool = self.scheduler.pool
        if what == "resources":
            return {"total": pool.as_floats("total"), "available": pool.as_floats("available")}
        if what == "nodes":
            return [{"node_id": self.node_id, "address": "local", "alive": True,
                     "resources": pool.as_floats("total"),
                     "available": pool.as_floats("available"), "control": None}]
        if what == "memory":
            return self._memory_summary()
        if isinstance(what, tuple) and what[0] == "actor":
            with self._lock:
                actor = self.named.get((what[1], what[2]))
            if actor is None or actor.state == DEAD:
                return None
            return actor.actor_id, actor.description
        raise ValueError(f"local mode has no information {what!r}")

    def _memory_summary(self) -> dict:
        objects = []
        with self.objects.lock:
            for object_id, entry in self.objects.entries.items():
                size = len(entry.serialized.inband) if entry.serialized is not None else 0
                objects.append({"object_id": object_id.hex(), "size": size,
                                "state": "in memory" if entry.done else "pending",
                                "call_site": "", "holders": [os.getpid()], "pins": []})
        used = sum(o["size"] for o in objects)
        return {"used_bytes": used, "capacity_bytes": 0, "spilled_bytes": 0,
                "restored_bytes": 0, "num_objects": len(objects), "spill_dir": None,
                "objects": objects}

    def kv_backend(self) -> LocalKV:
        """The in-memory store behind lightray.kv in local mode."""
        self._check_running()
        return self.kv

    # ------------------------------------------------------------ closing

    def close(self, *, notify_agent: str = "") -> None:
        """Stop: every actor dies, running tasks are interrupted, gets fail."""
        if self.closed:
            return
        self.closed = True
        self.dead_reason = "shutdown"
        self.scheduler.close()
        error = exceptions.ActorDiedError("the actor was stopped: lightray.shutdown()")
        for actor in list(self.actors.values()):
            actor.die(error)
        self.objects.close()
