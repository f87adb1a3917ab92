"""Queue: a FIFO queue any driver, task or actor can use, held by an actor.

    Queue.put(x) / .get() in any process ── actor call ──▶ _QueueActor (an async actor)
                                                              asyncio.Queue(maxsize)
                 ◀── the item, None, or a _Refusal ──────── (blocked puts and gets await
                     (raised here as Full / Empty)           on its event loop)

The queue lives in one async actor, so a put or get that blocks waiting for
room or an item is a coroutine awaiting on the actor's event loop: it holds
no thread there, and other callers' calls keep running meanwhile (up to the
actor's ``max_concurrency``, 1,000 by default). Timeouts run in the actor
too; the caller blocks in ``lightray.get`` on the call's result.

A ``Queue`` only carries its actor's handle, so it pickles: pass it to tasks
and actors, and every copy uses the same queue. The actor lives while any
copy does (or until ``shutdown``).

When the actor cannot do what was asked (full, empty, timed out) it returns
a ``_Refusal`` rather than raising: the caller then raises a plain ``Full``
or ``Empty``, not a TaskError with a remote traceback, and nothing is
formatted or pickled for what is an ordinary outcome.
"""
from __future__ import annotations

import asyncio
import contextlib
import numbers
import queue
from collections.abc import Iterable
from typing import Any

from .. import api
from ..actor import ActorClass, ActorHandle
from ..exceptions import ActorDiedError, LightrayError


class Empty(LightrayError, queue.Empty):
    """``get`` found no item: the queue was empty, or stayed empty until the timeout."""


class Full(LightrayError, queue.Full):
    """``put`` found no room: the queue was full, or stayed full until the timeout."""


class _Refusal:
    """What the actor returns instead of a result it cannot give."""

    __slots__ = ("full", "message")

    def __init__(self, full: bool, message: str):
        self.full = full          # True: raise Full; False: raise Empty
        self.message = message

    def __reduce__(self):
        return (_Refusal, (self.full, self.message))

    def error(self) -> LightrayError:
        return Full(self.message) if self.full else Empty(self.message)


class _QueueActor:
    """The queue itself; every method runs on the actor's event loop thread."""

    def __init__(self, maxsize: int):
        # Built before the event loop runs: asyncio.Queue and Event bind to a
        # loop only when first awaited (Python 3.10+).
        self.queue = asyncio.Queue(maxsize)
        self.waiting = 0                          # puts and gets blocked right now
        self.nobody_waits = asyncio.Event()       # set while waiting == 0
        self.nobody_waits.set()

    def qsize(self) -> int:
        return self.queue.qsize()

    def empty(self) -> bool:
        return self.queue.empty()

    def full(self) -> bool:
        return self.queue.full()

    def num_waiting(self) -> int:
        """How many puts and gets are blocked now (for tests and monitoring)."""
        return self.waiting

    def put_nowait(self, item):
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            return _Refusal(True, f"the queue is full ({self.queue.maxsize} items)")
        return None

    def get_nowait(self):
        try:
            return self.queue.get_nowait()
        except asyncio.QueueEmpty:
            return _Refusal(False, "the queue is empty")

    def put_nowait_batch(self, items: list):
        room = self.queue.maxsize - self.queue.qsize()
        if self.queue.maxsize > 0 and len(items) > room:
            # All or nothing: a half-put batch would be hard to recover from.
            return _Refusal(True, f"cannot put {len(items)} items: the queue holds "
                                  f"{self.queue.qsize()} of at most {self.queue.maxsize}")
        for item in items:
            self.queue.put_nowait(item)
        return None

    def get_nowait_batch(self, count: int):
        if count > self.queue.qsize():
            return _Refusal(False, f"cannot get {count} items: the queue holds "
                                   f"{self.queue.qsize()}")
        return [self.queue.get_nowait() for _ in range(count)]

    async def put(self, item, timeout: float | None):
        # Try at once first: asyncio.wait_for with a zero timeout gives up
        # before the put even runs, even when there is room.
        if self.put_nowait(item) is None:
            return None
        if timeout == 0:
            return _Refusal(True, f"the queue is full ({self.queue.maxsize} items)")
        with _counted_as_waiting(self):
            try:
                await asyncio.wait_for(self.queue.put(item), timeout)
            # asyncio's own TimeoutError: builtin TimeoutError only from Python 3.11.
            except asyncio.TimeoutError:  # noqa: UP041
                return _Refusal(True, f"the queue stayed full ({self.queue.maxsize} items) "
                                      f"for {timeout} s")
        return None

    async def get(self, timeout: float | None):
        item = self.get_nowait()
        if not isinstance(item, _Refusal) or timeout == 0:
            return item
        with _counted_as_waiting(self):
            try:
                return await asyncio.wait_for(self.queue.get(), timeout)
            except asyncio.TimeoutError:  # noqa: UP041
                return _Refusal(False, f"the queue stayed empty for {timeout} s")

    async def wait_until_nobody_waits(self) -> None:
        """Return once no put or get is blocked (shutdown's grace period)."""
        await self.nobody_waits.wait()


@contextlib.contextmanager
def _counted_as_waiting(actor: _QueueActor):
    """Count a put or get as blocked while it waits (for shutdown's grace period)."""
    actor.waiting += 1
    actor.nobody_waits.clear()
    try:
        yield
    finally:
        actor.waiting -= 1
        if not actor.waiting:
            actor.nobody_waits.set()


# Not a decorator: the class itself must stay importable by its name, so that
# it is pickled by reference and actor workers import this module for it.
_QueueActorClass = ActorClass(_QueueActor, {})


class Queue:
    """A first-in, first-out queue shared by drivers, tasks and actors.

    ``maxsize`` 0 means unbounded. ``actor_options`` go to the queue actor's
    ``.options(...)`` (e.g. ``{"name": "jobs"}`` or ``{"num_cpus": 1}``); by
    default the actor holds no CPU while it lives.
    """

    def __init__(self, maxsize: int = 0, actor_options: dict | None = None):
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be an int (0 for unbounded), "
                            f"got {type(maxsize).__name__}: {maxsize!r:.80}")
        if maxsize < 0:
            raise ValueError(f"maxsize must be >= 0 (0 for unbounded), got {maxsize}")
        if actor_options is not None and not isinstance(actor_options, dict):
            raise TypeError(f"actor_options must be a dict of actor options or None, "
                            f"got {type(actor_options).__name__}: {actor_options!r:.80}")
        self.maxsize = maxsize
        actor_class = _QueueActorClass.options(**actor_options) if actor_options \
            else _QueueActorClass
        self.actor: ActorHandle | None = actor_class.remote(maxsize)

    # ------------------------------------------------------------ size

    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        """How many items the queue holds now."""
        return api.get(self._actor().qsize.remote())

    qsize = size

    def empty(self) -> bool:
        return api.get(self._actor().empty.remote())

    def full(self) -> bool:
        """Whether a put would block now (never, when maxsize is 0)."""
        return api.get(self._actor().full.remote())

    # ------------------------------------------------------------ put

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Add item at the end; with block, wait up to timeout seconds (None:
        for ever) for room. Raises Full if there is none."""
        _raise_if_refused(api.get(self._put_call(item, block, timeout)))

    async def put_async(self, item: Any, block: bool = True,
                        timeout: float | None = None) -> None:
        """``put`` for coroutines: awaits the actor instead of blocking a thread."""
        _raise_if_refused(await self._put_call(item, block, timeout))

    def put_nowait(self, item: Any) -> None:
        """``put(item, block=False)``."""
        self.put(item, block=False)

    def put_nowait_batch(self, items: Iterable) -> None:
        """Add all of items in one call, or none of them (Full) if they do not fit."""
        if not isinstance(items, Iterable):
            raise TypeError(f"put_nowait_batch() takes an iterable of items, "
                            f"got {type(items).__name__}: {items!r:.80}")
        items = list(items)   # a generator cannot travel to the actor
        _raise_if_refused(api.get(self._actor().put_nowait_batch.remote(items)))

    def _put_call(self, item, block: bool, timeout):
        # Checked even with block=False, which ignores it: a bad value is a bug anyway.
        timeout = _check_timeout(timeout)
        actor = self._actor()
        if not block:
            return actor.put_nowait.remote(item)
        return actor.put.remote(item, timeout)

    # ------------------------------------------------------------ get

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the first item; with block, wait up to timeout
        seconds (None: for ever) for one. Raises Empty if there is none."""
        return _raise_if_refused(api.get(self._get_call(block, timeout)))

    async def get_async(self, block: bool = True, timeout: float | None = None) -> Any:
        """``get`` for coroutines: awaits the actor instead of blocking a thread."""
        return _raise_if_refused(await self._get_call(block, timeout))

    def get_nowait(self) -> Any:
        """``get(block=False)``."""
        return self.get(block=False)

    def get_nowait_batch(self, num_items: int) -> list:
        """The first num_items items, in one call; Empty (and nothing removed)
        if the queue holds fewer."""
        if isinstance(num_items, bool) or not isinstance(num_items, int):
            raise TypeError(f"num_items must be an int, got {type(num_items).__name__}: "
                            f"{num_items!r:.80}")
        if num_items < 0:
            raise ValueError(f"num_items must be >= 0, got {num_items}")
        return _raise_if_refused(api.get(self._actor().get_nowait_batch.remote(num_items)))

    def _get_call(self, block: bool, timeout):
        timeout = _check_timeout(timeout)
        actor = self._actor()
        if not block:
            return actor.get_nowait.remote()
        return actor.get.remote(timeout)

    # ------------------------------------------------------------ lifetime

    def shutdown(self, force: bool = False, grace_period_s: float = 5) -> None:
        """Stop the queue's actor, for every copy of this Queue; its items are lost.

        Without force, first wait up to grace_period_s seconds for the puts
        and gets blocked in the actor to be served; those still blocked then
        fail with ActorDiedError. Calling it again does nothing.
        """
        if not isinstance(grace_period_s, numbers.Real) or not grace_period_s >= 0:
            raise ValueError(f"grace_period_s must be a number >= 0, got {grace_period_s!r}")
        actor, self.actor = self.actor, None
        if actor is None:
            return
        if not force:
            api.wait([actor.wait_until_nobody_waits.remote()], timeout=grace_period_s)
        api.kill(actor)

    def _actor(self) -> ActorHandle:
        if self.actor is None:
            raise ActorDiedError("this Queue was shut down (Queue.shutdown())")
        return self.actor

    def __repr__(self):
        state = "shut down" if self.actor is None else repr(self.actor)
        return f"Queue(maxsize={self.maxsize}, {state})"


def _check_timeout(timeout) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"timeout must be None or a number of seconds, "
                        f"got {type(timeout).__name__}: {timeout!r:.80}")
    if not timeout >= 0:   # also refuses NaN
        raise ValueError(f"timeout must be None or a non-negative number, got {timeout!r}")
    return float(timeout)


def _raise_if_refused(outcome):
    if isinstance(outcome, _Refusal):
        raise outcome.error()
    return outcome
