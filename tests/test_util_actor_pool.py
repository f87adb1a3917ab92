"""lightray.util.ActorPool: Ray's ActorPool over lightray actors.

Slow calls are made deterministic with gates: an async actor's ``run`` may
wait on an asyncio.Event that the test opens with ``open_gate`` (an async
actor serves that call while ``run`` waits).
"""
import asyncio
import time

import pytest

import lightray
from lightray.exceptions import GetTimeoutError, TaskError
from lightray.util import ActorPool

pytestmark = pytest.mark.both_modes


@lightray.remote
class Gated:
    """run(v) doubles v; run(v, gated=True) first waits for open_gate()."""

    def __init__(self, name):
        self.name = name
        self.gate = asyncio.Event()

    async def run(self, value, gated=False):
        if gated:
            await self.gate.wait()
        if value == "boom":
            raise ValueError("boom")
        return (self.name, value * 2)

    async def open_gate(self):
        self.gate.set()


def run(actor, value):
    return actor.run.remote(value)


def run_gated_if_negative(actor, value):
    # Negative values wait for the actor's gate: the test decides when they finish.
    return actor.run.remote(value, gated=value < 0)


def values_only(results):
    return [value for _name, value in results]


def open_gates(*actors):
    lightray.get([actor.open_gate.remote() for actor in actors])


def test_map_returns_results_in_submission_order(runtime):
    pool = ActorPool([Gated.remote("a"), Gated.remote("b")])
    assert values_only(pool.map(run, range(8))) == [2 * v for v in range(8)]
    assert not pool.has_next()


def test_map_is_lazy_until_iterated(runtime):
    pool = ActorPool([Gated.remote("a")])
    results = pool.map(run, [1, 2])
    assert not pool.has_next()   # a generator: nothing submitted yet
    assert values_only(results) == [2, 4]


def test_map_unordered_returns_the_fast_result_before_a_slow_earlier_one(runtime):
    actors = [Gated.remote("a"), Gated.remote("b")]
    pool = ActorPool(actors)
    results = pool.map_unordered(run_gated_if_negative, [-1, 5])
    assert next(results)[1] == 10
    open_gates(*actors)
    assert next(results)[1] == -2
    assert list(results) == []


def test_submissions_beyond_the_idle_actors_wait_and_run_in_order(runtime):
    pool = ActorPool([Gated.remote("only")])
    for value in range(3):
        pool.submit(run, value)
    assert pool.has_next()
    assert not pool.has_free()
    assert pool.pop_idle() is None
    assert [pool.get_next() for _ in range(3)] == [("only", 0), ("only", 2), ("only", 4)]
    assert pool.has_free()


def test_get_next_with_nothing_submitted_raises_stop_iteration(runtime):
    pool = ActorPool([Gated.remote("a")])
    with pytest.raises(StopIteration):
        pool.get_next()
    with pytest.raises(StopIteration):
        pool.get_next_unordered()


def test_get_next_times_out_with_a_timeout_error_and_keeps_the_call(runtime):
    actor = Gated.remote("a")
    pool = ActorPool([actor])
    pool.submit(run_gated_if_negative, -3)
    started = time.monotonic()
    with pytest.raises(GetTimeoutError) as caught:
        pool.get_next(timeout=0.2)
    assert isinstance(caught.value, TimeoutError)
    assert 0.1 < time.monotonic() - started < 10
    assert pool.has_next() and not pool.has_free()
    open_gates(actor)
    assert pool.get_next(timeout=10) == ("a", -6)


def test_get_next_ignore_if_timedout_drops_the_call_and_frees_its_actor(runtime):
    actor = Gated.remote("a")
    pool = ActorPool([actor])
    pool.submit(run_gated_if_negative, -1)
    with pytest.raises(TimeoutError, match="dropped"):
        pool.get_next(timeout=0.1, ignore_if_timedout=True)
    assert not pool.has_next()
    assert pool.has_free()
    pool.submit(run, 4)          # queues on the actor behind the dropped call
    open_gates(actor)
    assert pool.get_next(timeout=10) == ("a", 8)


def test_get_next_unordered_times_out_and_can_drop_the_oldest_call(runtime):
    actor = Gated.remote("a")
    pool = ActorPool([actor])
    pool.submit(run_gated_if_negative, -1)
    with pytest.raises(GetTimeoutError):
        pool.get_next_unordered(timeout=0.1)
    assert pool.has_next()
    with pytest.raises(GetTimeoutError, match="dropped"):
        pool.get_next_unordered(timeout=0.1, ignore_if_timedout=True)
    assert not pool.has_next() and pool.has_free()
    open_gates(actor)


def test_ordered_get_next_frees_actors_of_later_calls_while_the_oldest_is_slow(runtime):
    slow, fast = Gated.remote("slow"), Gated.remote("fast")
    pool = ActorPool([fast, slow])      # pop() takes from the end: slow gets -1
    for value in [-1, 1, 2, 3]:
        pool.submit(run_gated_if_negative, value)
    # While get_next waits for -1, the actor that ran 1 is freed and runs 2, then 3.
    with pytest.raises(GetTimeoutError):
        pool.get_next(timeout=1.0)
    assert pool.has_free()              # nothing pending any more
    open_gates(slow)
    assert [pool.get_next(timeout=10) for _ in range(4)] == [
        ("slow", -2), ("fast", 2), ("fast", 4), ("fast", 6)]


def test_a_failing_call_raises_from_get_next_and_its_actor_stays_in_the_pool(runtime):
    pool = ActorPool([Gated.remote("a")])
    for value in [1, "boom", 3]:
        pool.submit(run, value)
    assert pool.get_next() == ("a", 2)
    with pytest.raises(ValueError, match="boom") as caught:
        pool.get_next()
    assert isinstance(caught.value, TaskError)
    assert pool.get_next() == ("a", 6)
    assert pool.has_free()


def test_pop_idle_and_push_move_actors_out_of_and_into_the_pool(runtime):
    actor = Gated.remote("a")
    pool = ActorPool([actor])
    assert pool.has_free()
    assert pool.pop_idle() == actor
    assert not pool.has_free() and pool.pop_idle() is None
    pool.submit(run, 1)                 # no actor: it waits
    with pytest.raises(GetTimeoutError, match="push"):
        pool.get_next(timeout=0.1)
    pool.push(actor)                    # takes the waiting value at once
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(actor)
    assert pool.get_next(timeout=10) == ("a", 2)


def test_empty_pool_reports_waiting_submissions_instead_of_hanging():
    pool = ActorPool([])
    assert not pool.has_free() and pool.pop_idle() is None
    pool.submit(run, 1)
    assert pool.has_next()
    with pytest.raises(RuntimeError, match="push"):
        pool.get_next()
    with pytest.raises(GetTimeoutError, match="push"):
        pool.get_next_unordered(timeout=5)


def test_map_drops_results_an_earlier_map_left_unreturned(runtime):
    pool = ActorPool([Gated.remote("a"), Gated.remote("b")])
    first = pool.map(run, [1, 2, 3])
    assert next(first)[1] == 2
    assert values_only(pool.map(run, [10, 20])) == [20, 40]
    assert not pool.has_next()


def test_fn_not_returning_an_object_ref_raises_type_error_and_keeps_the_actor(runtime):
    pool = ActorPool([Gated.remote("a")])
    with pytest.raises(TypeError, match="ObjectRef"):
        pool.submit(lambda actor, value: value, 1)
    assert pool.has_free() and not pool.has_next()
    pool.submit(run, 2)
    assert pool.get_next() == ("a", 4)


def test_constructor_rejects_what_is_not_an_actor_handle():
    with pytest.raises(TypeError, match="actor handles"):
        ActorPool([Gated])
    with pytest.raises(TypeError, match="actor handles"):
        ActorPool([1, 2])


def test_pool_of_the_same_actor_twice_is_refused(runtime):
    actor = Gated.remote("a")
    with pytest.raises(ValueError, match="more than once"):
        ActorPool([actor, actor])
