"""Actors in local mode: each in a thread of its own (async ones on their own event loop).

    Class.remote() ──▶ Placement queued ──resources free──▶ actor thread: __init__, then calls
    handle.m.remote() ──▶ the actor's queue (in submission order) ──▶ results
    kill / last handle gone ──▶ DEAD: queued and running calls fail with ActorDiedError

States: PENDING (waiting for resources) → ALIVE → DEAD (or, with
kill(no_restart=False) and restarts left, PENDING again for a new instance).
A threaded actor (max_concurrency > 1) runs calls on that many threads; an
async actor runs each call as a coroutine on its loop, at most
max_concurrency at once.
"""
from __future__ import annotations

import asyncio
import queue
import threading

from .. import exceptions
from ..actor import ActorHandle
from ..ids import handle_object_id
from ..object_ref import ObjectRef
from .running import (Call, DepFailed, Interruptible, arguments, fail_all, guarded,
                      interrupt_thread, store_results, task_error)
from .threads import ThreadContext, set_thread_context

PENDING, ALIVE, DEAD = "PENDING", "ALIVE", "DEAD"
# Queued behind an actor's calls when its last handle goes: the calls
# already made still run, then it dies.
RETIRE = "retire"


class _Stop:
    """Queued to end the threads of one instance (generation) of an actor."""

    __slots__ = ("generation",)

    def __init__(self, generation: int):
        self.generation = generation


class _Killed(BaseException):
    """Raised (asynchronously) in a thread of a killed actor: its call ends."""


class LocalActor:
    def __init__(self, runtime, actor_id: bytes, cls, description: dict, init_call: Call,
                 max_restarts: int):
        self.runtime = runtime                    # the LocalClient
        self.actor_id = actor_id
        self.cls = cls
        self.description = description
        self.name = description["class_name"]
        self.init_call = init_call
        self.restarts_left = max_restarts
        self.placement = description["held"]      # what must be free to start it
        self.state = PENDING
        self.death = None                         # the ActorDiedError of its calls
        self.retire_error = None                  # the one once it retires (RETIRE)
        self.allocation = None
        self.instance = None
        self.calls: queue.SimpleQueue = queue.SimpleQueue()
        self.running: dict = {}                   # Call -> Interruptible of calls running
        self.loop = None
        self.async_calls = None                   # the loop's asyncio.Queue once it serves
        self.threads: list = []
        self.generation = 0

    # ----------------------------------------------------------- starting

    def start(self, allocation) -> None:
        """Resources are ours: start the thread(s) that run __init__ and calls."""
        with self.runtime.scheduler.lock:
            if self.state == DEAD:
                dead = True
            else:
                dead = False
                self.allocation = allocation
                self.generation += 1
        if dead:
            self.runtime.scheduler.release(allocation)
            return
        generation = self.generation
        target = self._async_main if self.description["is_async"] else self._sync_main
        thread = threading.Thread(target=target, args=(generation,), daemon=True,
                                  name=f"lightray-local-actor-{self.name}")
        self.threads = [thread]
        thread.start()

    def _context(self):
        return ThreadContext(self.runtime.node_id, None, self.actor_id,
                             dict(self.description["held"]))

    def _construct(self, generation: int) -> bool:
        call, objects = self.init_call, self.runtime.objects
        set_thread_context(self._context())
        state = Interruptible()

        def work():
            args, kwargs = arguments(call, objects)
            instance = self.cls.__new__(self.cls)
            instance.__init__(*args, **kwargs)
            return instance

        kind, value = guarded(state, self.runtime.scheduler.lock, work)
        if kind == "ok":
            with self.runtime.scheduler.lock:
                if self.state == DEAD or generation != self.generation:
                    return False
                self.instance = value
                self.state = ALIVE
            return True
        cause = value.error if isinstance(value, DepFailed) else value
        self.die(exceptions.ActorDiedError(
            f"the actor {self.name} ({self.actor_id.hex()}) could not be created: "
            f"{task_error(self.name + '.__init__', cause, self.runtime.node_id)}", cause))
        return False

    def _sync_main(self, generation: int) -> None:
        if not self._construct(generation):
            return
        extra = self.description["max_concurrency"] - 1
        for number in range(extra):
            thread = threading.Thread(target=self._serve, args=(generation,), daemon=True,
                                      name=f"lightray-local-actor-{self.name}-{number + 1}")
            self.threads.append(thread)
            thread.start()
        self._serve(generation)

    def _serve(self, generation: int) -> None:
        set_thread_context(self._context())
        while True:
            item = self.calls.get()
            if type(item) is _Stop:
                if item.generation != generation:
                    continue               # left over from an earlier instance
                self.calls.put(item)       # for the other threads of this instance
                return
            if generation != self.generation:
                self.calls.put(item)       # for the next instance (a restart)
                return
            if item == RETIRE:
                self.die(self.retire_error)
                return
            call, method_name = item
            self._run_call(call, method_name, generation)

    def _run_call(self, call: Call, method_name: str, generation: int) -> None:
        objects, lock = self.runtime.objects, self.runtime.scheduler.lock
        state = Interruptible()
        with lock:
            if self.state == DEAD:
                return       # its refs failed when the actor died
            self.running[call] = state

        def work():
            args, kwargs = arguments(call, objects)
            return getattr(self.instance, method_name)(*args, **kwargs)

        try:
            kind, value = guarded(state, lock, work)
        except _Killed:
            return
        finally:
            with lock:
                self.running.pop(call, None)
        self._settle(call, kind, value)

    def _settle(self, call: Call, kind: str, value) -> None:
        objects = self.runtime.objects
        if isinstance(value, _Killed) or self.state == DEAD:
            return
        if kind == "ok":
            try:
                store_results(call, objects, value, "method")
                return
            except Exception as error:   # a result that cannot be pickled, a wrong count
                value = error
        if isinstance(value, DepFailed):
            fail_all(call, objects, value.error)
            return
        fail_all(call, objects, task_error(call.name, value, self.runtime.node_id))

    # -------------------------------------------------------------- async

    def _async_main(self, generation: int) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        try:
            if not self._construct(generation):
                return
            loop.run_until_complete(self._async_serve(generation))
        finally:
            loop.close()

    async def _async_serve(self, generation: int) -> None:
        limit = asyncio.Semaphore(self.description["max_concurrency"])
        loop = asyncio.get_running_loop()
        calls: asyncio.Queue = asyncio.Queue()
        with self.runtime.scheduler.lock:
            # Calls queued before the loop ran go first, in order; later
            # ones come through call_soon_threadsafe (_enqueue).
            while True:
                try:
                    calls.put_nowait(self.calls.get_nowait())
                except queue.Empty:
                    break
            self.async_calls = calls
        running = set()
        while True:
            item = await calls.get()
            if type(item) is _Stop and item.generation != generation:
                continue                   # left over from an earlier instance
            if item == RETIRE:
                if running:
                    await asyncio.wait(list(running))
                self.die(self.retire_error)
                item = None
            if item is None or type(item) is _Stop or generation != self.generation:
                self._async_stop(calls, None if type(item) is _Stop else item, running)
                return
            await limit.acquire()
            task = loop.create_task(self._async_call(*item, limit))
            running.add(task)
            task.add_done_callback(running.discard)

    def _async_stop(self, calls: asyncio.Queue, item, running: set) -> None:
        with self.runtime.scheduler.lock:
            self.async_calls = None
            left = [item] if item is not None else []
            while not calls.empty():
                left.append(calls.get_nowait())
            dead = self.state == DEAD
        for task in running:
            task.cancel()
        for item in left:
            if item is None or item == RETIRE or type(item) is _Stop:
                continue
            if dead:
                fail_all(item[0], self.runtime.objects, self.death)
            else:
                self.calls.put(item)   # for the next instance (a restart)

    async def _async_call(self, call: Call, method_name: str, limit) -> None:
        objects = self.runtime.objects
        try:
            for ref in call.deps:
                await asyncio.wrap_future(objects.future(ref._id))
        except BaseException:
            pass                      # arguments() below raises the dep's error
        set_thread_context(self._context())
        with self.runtime.scheduler.lock:
            if self.state == DEAD:
                limit.release()
                return
            self.running[call] = Interruptible()   # never interrupted: cancelled
        try:
            try:
                args, kwargs = arguments(call, objects)
                result = getattr(self.instance, method_name)(*args, **kwargs)
                if asyncio.iscoroutine(result):
                    result = await result
                kind, value = "ok", result
            except asyncio.CancelledError:
                return
            except Exception as error:   # the user's code failed
                kind, value = "error", error
            self._settle(call, kind, value)
        finally:
            with self.runtime.scheduler.lock:
                self.running.pop(call, None)
            limit.release()

    # ------------------------------------------------------------- calls

    def submit(self, call: Call, method_name: str) -> None:
        with self.runtime.scheduler.lock:
            death = self.death if self.state == DEAD else None
        if death is not None:
            fail_all(call, self.runtime.objects, death)
            return
        self._enqueue((call, method_name))

    def retire(self, error: exceptions.ActorDiedError) -> None:
        """Die with error once the calls made so far have run."""
        self.retire_error = error
        self._enqueue(RETIRE)

    def _enqueue(self, item) -> None:
        with self.runtime.scheduler.lock:
            calls = self.async_calls
            if calls is not None:
                try:
                    self.loop.call_soon_threadsafe(calls.put_nowait, item)
                    return
                except RuntimeError:   # the loop just closed
                    pass
            self.calls.put(item)

    # ------------------------------------------------------------ dying

    def die(self, error: exceptions.ActorDiedError, restart: bool = False) -> None:
        """Fail its queued and running calls with error; give back its
        resources; with restart (and restarts left) queue a new instance."""
        lock = self.runtime.scheduler.lock
        with lock:
            if self.state == DEAD:
                return
            restart = restart and self.restarts_left != 0
            ending = _Stop(self.generation)
            held, self.allocation = self.allocation, None
            running = list(self.running.items())
            self.running.clear()
            self.generation += 1
            if restart:
                self.restarts_left -= 1
                self.state = PENDING
            else:
                self.state = DEAD
                self.death = error
            for _call, state in running:
                if state.in_user_code and not state.interrupt_sent:
                    state.interrupt_sent = interrupt_thread(state.thread_id, _Killed)
        objects = self.runtime.objects
        for call, _state in running:
            fail_all(call, objects, error)
        if not restart:
            while True:
                try:
                    item = self.calls.get_nowait()
                except queue.Empty:
                    break
                if type(item) is tuple:
                    fail_all(item[0], objects, error)
        self._enqueue(ending)
        if held is not None:
            self.runtime.scheduler.release(held)
        if error is self.retire_error:
            self.runtime.actors.pop(self.actor_id, None)   # no handle can reach it
        if restart:
            self.runtime.place_actor(self)


def actor_handle(runtime, actor: LocalActor):
    ref = ObjectRef(handle_object_id(actor.actor_id), runtime, owned=True)
    return ActorHandle(actor.actor_id, actor.description, ref)
