"""Actors in local mode: each in a thread of its own (async ones on their own event loop).

    Class.remote() ──▶ Placement queued ──resources free──▶ actor thread: __init__, then calls
    handle.m.remote() ──▶ the instance's queue (in submission order) ──▶ results
    kill / last handle gone ──▶ DEAD: queued and running calls fail with ActorDiedError

States: PENDING (waiting for resources) → ALIVE → DEAD (or, with
kill(no_restart=False) and restarts left, PENDING again for a new instance).
Each instance has a queue of its own: a restart moves the calls not yet run
to the new instance's queue and ends the old instance's threads with STOP.
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
# Ends the threads (or loop) of one instance; each thread puts it back for the next.
STOP = "stop"


class _Killed(BaseException):
    """Raised (asynchronously) in a thread of a killed actor: its call ends."""


class LocalActor:
    def __init__(self, runtime, actor_id: bytes, cls, description: dict, init_call: Call,
                 max_restarts: int):
        self.runtime = runtime                    # the LocalClient
        self.lock = runtime.scheduler.lock        # states, queues, interrupts
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
        self.calls: queue.SimpleQueue = queue.SimpleQueue()   # this instance's calls
        self.running: dict = {}                   # Call -> Interruptible of calls running
        self.loop = None                          # an async instance's loop, once it serves,
        self.async_calls = None                   # and its asyncio.Queue
        self.generation = 0                       # which instance (restarts count up)

    # ----------------------------------------------------------- starting

    def start(self, allocation) -> None:
        """Resources are ours: start the thread that runs __init__ and calls."""
        with self.lock:
            dead = self.state == DEAD
            if not dead:
                self.allocation = allocation
                self.generation += 1
                generation, calls = self.generation, self.calls
        if dead:
            self.runtime.scheduler.release(allocation)
            return
        target = self._async_main if self.description["is_async"] else self._sync_main
        threading.Thread(target=target, args=(generation, calls), daemon=True,
                         name=f"lightray-local-actor-{self.name}").start()

    def _context(self):
        return ThreadContext(self.runtime.node_id, None, self.actor_id,
                             dict(self.description["held"]))

    def _construct(self, generation: int) -> bool:
        call, objects = self.init_call, self.runtime.objects
        set_thread_context(self._context())

        def work():
            args, kwargs = arguments(call, objects)
            instance = self.cls.__new__(self.cls)
            instance.__init__(*args, **kwargs)
            return instance

        kind, value = guarded(Interruptible(), self.lock, work)
        if kind == "ok":
            with self.lock:
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

    def _sync_main(self, generation: int, calls: queue.SimpleQueue) -> None:
        if not self._construct(generation):
            return
        for number in range(self.description["max_concurrency"] - 1):
            threading.Thread(target=self._serve, args=(generation, calls), daemon=True,
                             name=f"lightray-local-actor-{self.name}-{number + 1}").start()
        self._serve(generation, calls)

    def _serve(self, generation: int, calls: queue.SimpleQueue) -> None:
        set_thread_context(self._context())
        while True:
            item = calls.get()
            if item == STOP:
                calls.put(item)            # for the other threads of this instance
                return
            if item == RETIRE:
                self.die(self.retire_error)
                return
            self._run_call(item, generation)

    def _run_call(self, item: tuple, generation: int) -> None:
        call, method_name = item
        objects, lock = self.runtime.objects, self.lock
        state = Interruptible()
        with lock:
            if self.state == DEAD:
                return       # its refs failed when the actor died
            stale = generation != self.generation
            if not stale:
                self.running[call] = state
        if stale:
            self._enqueue(item)   # taken just as a restart began: the new instance runs it
            return

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

    def _async_main(self, generation: int, calls: queue.SimpleQueue) -> None:
        loop = asyncio.new_event_loop()
        try:
            if self._construct(generation):
                loop.run_until_complete(self._async_serve(generation, calls))
        finally:
            loop.close()

    async def _async_serve(self, generation: int, calls: queue.SimpleQueue) -> None:
        limit = asyncio.Semaphore(self.description["max_concurrency"])
        loop = asyncio.get_running_loop()
        mine: asyncio.Queue = asyncio.Queue()
        with self.lock:
            # Calls queued before the loop ran go first, in order; later
            # ones come through call_soon_threadsafe (_enqueue).
            while True:
                try:
                    mine.put_nowait(calls.get_nowait())
                except queue.Empty:
                    break
            if generation == self.generation and self.state != DEAD:
                self.loop, self.async_calls = loop, mine
        running = set()
        while True:
            item = await mine.get()
            if item == RETIRE:
                if running:
                    await asyncio.wait(list(running))
                self.die(self.retire_error)
                item = STOP
            if item == STOP:
                self._async_stop(mine, running)
                return
            await limit.acquire()
            task = loop.create_task(self._async_call(*item, limit))
            running.add(task)
            task.add_done_callback(running.discard)

    def _async_stop(self, mine: asyncio.Queue, running: set) -> None:
        with self.lock:
            if self.async_calls is mine:
                self.loop = self.async_calls = None
            left = []
            while not mine.empty():
                left.append(mine.get_nowait())
        for task in running:
            task.cancel()
        for item in left:
            if type(item) is tuple:
                self._enqueue(item)    # a restart's new instance runs it, or it fails (dead)

    async def _async_call(self, call: Call, method_name: str, limit) -> None:
        objects = self.runtime.objects
        try:
            for ref in call.deps:
                await asyncio.wrap_future(objects.future(ref._id))
        except BaseException:
            pass                      # arguments() below raises the dep's error
        set_thread_context(self._context())
        with self.lock:
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
            with self.lock:
                self.running.pop(call, None)
            limit.release()

    # ------------------------------------------------------------- calls

    def submit(self, call: Call, method_name: str) -> None:
        self._enqueue((call, method_name))

    def retire(self, error: exceptions.ActorDiedError) -> None:
        """Die with error once the calls made so far have run."""
        self.retire_error = error
        self._enqueue(RETIRE)

    def _enqueue(self, item) -> None:
        """Queue item for the current instance (a call of a dead actor fails)."""
        with self.lock:
            death = self.death if self.state == DEAD else None
            if death is None:
                mine, loop = self.async_calls, self.loop
                if mine is None:
                    self.calls.put(item)
                    return
        if death is not None:
            if type(item) is tuple:
                fail_all(item[0], self.runtime.objects, death)
            return
        try:
            loop.call_soon_threadsafe(mine.put_nowait, item)
        except RuntimeError:           # the loop just closed: its instance has ended
            with self.lock:
                self.calls.put(item)

    # ------------------------------------------------------------ dying

    def die(self, error: exceptions.ActorDiedError, restart: bool = False) -> None:
        """Fail its queued and running calls with error; give back its
        resources; with restart (and restarts left) queue a new instance."""
        with self.lock:
            if self.state == DEAD:
                return
            restart = restart and self.restarts_left != 0
            placed = self.state == PENDING   # its start is still queued: it starts anew
            held, self.allocation = self.allocation, None
            running = list(self.running.items())
            self.running.clear()
            self.generation += 1
            ending_loop, ending_calls = self.loop, self.async_calls
            self.loop = self.async_calls = None
            # The calls not yet run: the new instance's, or failed below.
            waiting = []
            old = self.calls
            while True:
                try:
                    waiting.append(old.get_nowait())
                except queue.Empty:
                    break
            self.calls = queue.SimpleQueue()
            if restart:
                self.restarts_left -= 1
                self.state = PENDING
                for item in waiting:
                    if item != STOP:
                        self.calls.put(item)
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
            for item in waiting:
                if type(item) is tuple:
                    fail_all(item[0], objects, error)
        if ending_loop is not None:
            try:
                ending_loop.call_soon_threadsafe(ending_calls.put_nowait, STOP)
            except RuntimeError:       # its loop already closed
                pass
        else:
            old.put(STOP)
        if held is not None:
            self.runtime.scheduler.release(held)
        if error is self.retire_error:
            self.runtime.actors.pop(self.actor_id, None)   # no handle can reach it
        if restart and not placed:
            self.runtime.place_actor(self)


def actor_handle(runtime, actor: LocalActor):
    ref = ObjectRef(handle_object_id(actor.actor_id), runtime, owned=True)
    return ActorHandle(actor.actor_id, actor.description, ref)
