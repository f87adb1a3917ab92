"""ActorPool: spread calls over a fixed set of actors, one call per actor at a time.

    submit(fn, v) ──an idle actor?── yes ─▶ ref = fn(actor, v) ─▶ in flight (actor busy)
                          │                                             │ ref ready, seen by
                          no                                            │ a get_next*()
                          ▼                                             ▼
                  pending (FIFO) ◀──── dispatched as soon as ─── the actor is idle again
    get_next()           ◀── the oldest in-flight result (submission order)
    get_next_unordered() ◀── whichever in-flight result is ready first

Everything happens in the caller's thread; the pool holds no thread and no
process of its own, and is not thread-safe (as in Ray).

An actor is busy from the call ``fn`` makes on it until its result is seen
ready. Unlike Ray, which frees an actor only when its result is *returned*,
``get_next`` frees the actors of later calls that finish while it waits for
the oldest one, and gives them pending work: one slow value no longer idles
the rest of the pool during an ordered ``map``.
"""
from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .. import api
from ..actor import ActorHandle
from ..exceptions import GetTimeoutError
from ..object_ref import ObjectRef


class _Call:
    """One submitted value whose result has not been returned yet."""

    __slots__ = ("actor", "result", "refs")

    def __init__(self, result, actor: ActorHandle):
        self.result = result    # what fn(actor, value) returned: a ref, or a list of them
        # (a method of num_returns > 1)
        self.refs = [result] if isinstance(result, ObjectRef) else list(result)
        self.actor = actor      # the actor running it; None once the result was seen ready


class ActorPool:
    """Run ``fn(actor, value)`` calls over ``actors``, at most one per actor at a time.

    ``fn`` must call a method of the actor and return its ObjectRef, e.g.
    ``lambda actor, v: actor.double.remote(v)``, or the list of refs of a
    method with ``num_returns`` > 1 (its result is then the list of values,
    ready once all are). It runs when the value is
    dispatched to an actor: in ``submit`` if an actor is idle, else later,
    inside whichever pool method frees an actor. If ``fn`` raises (or returns
    something other than an ObjectRef) that method raises, the actor goes
    back to the idle list, and the value is dropped.
    """

    def __init__(self, actors: Iterable[ActorHandle]):
        idle = list(actors)
        for actor in idle:
            _check_actor(actor)
        if len(set(idle)) != len(idle):
            raise ValueError("ActorPool got the same actor more than once")
        self._idle: list[ActorHandle] = idle
        # (fn, value) submitted while no actor was idle, oldest first
        self._pending: collections.deque[tuple[Callable, Any]] = collections.deque()
        # submission number -> its call; dispatch is FIFO, so oldest first
        self._in_flight: dict[int, _Call] = {}
        self._next_number = 0

    # ------------------------------------------------------------ submitting

    def map(self, fn: Callable[[ActorHandle, Any], ObjectRef],
            values: Iterable) -> Iterator:
        """Results of fn over values, in the order of values.

        A generator: nothing is submitted until it is first advanced. Results
        an earlier ``submit`` or ``map`` left unreturned are dropped first (as
        in Ray), so they cannot be mistaken for this map's results.
        """
        return self._map(fn, values, self.get_next)

    def map_unordered(self, fn: Callable[[ActorHandle, Any], ObjectRef],
                      values: Iterable) -> Iterator:
        """Like ``map``, but yields each result as soon as it is ready."""
        return self._map(fn, values, self.get_next_unordered)

    def _map(self, fn, values, get_next) -> Iterator:
        self._drop_unreturned()
        count = 0
        for value in values:
            self.submit(fn, value)
            count += 1
        # Counted rather than `while has_next()`: values submitted by someone
        # else during the iteration are not this map's results.
        for _ in range(count):
            yield get_next()

    def submit(self, fn: Callable[[ActorHandle, Any], ObjectRef], value: Any) -> None:
        """Run fn(actor, value) on an idle actor, or as soon as one is free."""
        self._pending.append((fn, value))
        self._dispatch_pending()

    # ------------------------------------------------------------ results

    def has_next(self) -> bool:
        """Whether a submitted value's result has not been returned yet."""
        return bool(self._in_flight or self._pending)

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The result of the oldest submission not returned yet (submission order).

        Raises StopIteration when there is none, and GetTimeoutError (a
        TimeoutError) after ``timeout`` seconds; with ``ignore_if_timedout`` that
        submission is dropped first, and its actor taken back (later calls on
        it queue behind the dropped one). A call's error is raised here, as by
        ``lightray.get``; its actor stays in the pool.
        """
        self._check_can_return(timeout)
        number, call = next(iter(self._in_flight.items()))
        if not self._wait_for_oldest(call, timeout):
            raise self._timeout_error(number, timeout, ignore_if_timedout)
        self._retire(number)
        return api.get(call.result)

    def get_next_unordered(self, timeout: float | None = None,
                           ignore_if_timedout: bool = False) -> Any:
        """The result of any submission not returned yet, the first ready one.

        Timeouts and errors as in ``get_next``; on a timeout with
        ``ignore_if_timedout`` the oldest submission is the one dropped.
        """
        self._check_can_return(timeout)
        number = self._first_ready(timeout)
        if number is None:
            raise self._timeout_error(next(iter(self._in_flight)), timeout, ignore_if_timedout)
        call = self._retire(number)
        return api.get(call.result)

    # ------------------------------------------------------------ actors

    def has_free(self) -> bool:
        """Whether an actor is idle and no submitted value waits for one."""
        return bool(self._idle) and not self._pending

    def pop_idle(self) -> ActorHandle | None:
        """Take an idle actor out of the pool; None if none is free."""
        return self._idle.pop() if self.has_free() else None

    def push(self, actor: ActorHandle) -> None:
        """Add an actor to the pool; it takes pending work at once."""
        _check_actor(actor)
        busy = (call.actor for call in self._in_flight.values())
        if actor in self._idle or actor in busy:
            raise ValueError(f"{actor!r} already belongs to this ActorPool")
        self._idle.append(actor)
        self._dispatch_pending()

    # ------------------------------------------------------------ internals

    def _dispatch_pending(self) -> None:
        while self._idle and self._pending:
            fn, value = self._pending.popleft()
            actor = self._idle.pop()
            try:
                ref = fn(actor, value)
            except BaseException:
                self._idle.append(actor)
                raise
            if not _is_result(ref):
                self._idle.append(actor)
                raise TypeError(f"ActorPool's fn must return the ObjectRef of an actor call "
                                f"(or the list of them of a method with num_returns > 1), "
                                f"e.g. lambda actor, v: actor.method.remote(v); "
                                f"it returned {type(ref).__name__}: {ref!r:.80}")
            self._in_flight[self._next_number] = _Call(ref, actor)
            self._next_number += 1

    def _check_can_return(self, timeout) -> None:
        """Raise unless an in-flight call exists to return a result from."""
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be None or >= 0, got {timeout!r}")
        self._dispatch_pending()
        if self._in_flight:
            return
        if not self._pending:
            raise StopIteration("no more results to get: every submitted value's "
                                "result was returned")
        # Submissions wait but no actor will ever take them: fail now rather
        # than hang (Ray would raise StopIteration and lose them silently).
        message = (f"{len(self._pending)} submitted value(s) wait for an actor, but the pool "
                   f"has none (it was created empty, or pop_idle() took them all): push() an "
                   f"actor first")
        if timeout is not None:
            raise GetTimeoutError(message)
        raise RuntimeError(message)

    def _wait_for_oldest(self, oldest: _Call, timeout) -> bool:
        """Wait until oldest's result is ready; meanwhile free the actors of
        other calls as they finish. False on timeout."""
        return self._wait_until(lambda: oldest.actor is None, timeout)

    def _first_ready(self, timeout) -> int | None:
        """Number of the oldest call whose result is ready, waiting up to
        timeout for one; None on timeout."""
        def first_seen_ready():
            return next((number for number, call in self._in_flight.items()
                         if call.actor is None), None)
        if not self._wait_until(lambda: first_seen_ready() is not None, timeout):
            return None
        return first_seen_ready()

    def _wait_until(self, done, timeout) -> bool:
        """Free finished calls' actors until done() holds; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            not_ready = self._free_finished_actors()
            if done():
                return True
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            # One more ref ready may finish a call (all of a call's refs must be).
            ready, _ = api.wait(not_ready, num_returns=min(1, len(not_ready)),
                                timeout=remaining)
            if not ready:
                return False

    def _free_finished_actors(self) -> list:
        """Give back to the idle list the actors of the calls all of whose
        refs are ready, and hand them pending work; the refs of busy calls
        still not ready."""
        while True:
            # dict.fromkeys: lightray.wait refuses duplicates, and nothing
            # stops fn from returning one ref twice.
            refs = list(dict.fromkeys(
                ref for call in self._in_flight.values() if call.actor is not None
                for ref in call.refs))
            if not refs:
                return []
            ready, not_ready = api.wait(refs, num_returns=len(refs), timeout=0)
            ready = set(ready)
            freed = False
            for call in self._in_flight.values():
                if call.actor is not None and all(ref in ready for ref in call.refs):
                    self._idle.append(call.actor)
                    call.actor = None
                    freed = True
            if not freed:
                return not_ready
            self._dispatch_pending()   # new calls: their refs count too

    def _retire(self, number: int) -> _Call:
        """Forget submission number (its result is being returned or dropped)."""
        call = self._in_flight.pop(number)
        if call.actor is not None:
            self._idle.append(call.actor)
            call.actor = None
            self._dispatch_pending()
        return call

    def _timeout_error(self, number: int, timeout, ignore: bool) -> GetTimeoutError:
        """The error to raise on a timeout; drops submission number if ignore."""
        message = f"ActorPool: no result within {timeout} s"
        if ignore:
            call = self._retire(number)
            message += f"; the call {call.result!r} was dropped from the pool"
        return GetTimeoutError(message)

    def _drop_unreturned(self) -> None:
        # Pending values never ran: drop them. In-flight calls keep running;
        # their actors return to the pool, later calls queue behind them.
        self._pending.clear()
        for number in list(self._in_flight):
            self._retire(number)

    def __repr__(self):
        busy = sum(1 for call in self._in_flight.values() if call.actor is not None)
        return (f"ActorPool(idle={len(self._idle)}, busy={busy}, "
                f"unreturned={len(self._in_flight)}, pending={len(self._pending)})")


def _is_result(result) -> bool:
    """An actor call's ObjectRef, or a non-empty list of them (num_returns > 1)."""
    if isinstance(result, ObjectRef):
        return True
    return (isinstance(result, (list, tuple)) and bool(result)
            and all(isinstance(ref, ObjectRef) for ref in result))


def _check_actor(actor) -> None:
    if not isinstance(actor, ActorHandle):
        raise TypeError(f"ActorPool takes actor handles (from ActorClass.remote()), "
                        f"got {type(actor).__name__}: {actor!r:.80}")
