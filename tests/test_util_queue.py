"""lightray.util.Queue: Ray's actor-backed FIFO queue, shared by drivers, tasks and actors."""
import asyncio
import pickle
import queue as stdlib_queue
import time

import pytest

import lightray
from lightray.exceptions import ActorDiedError, TaskError
from lightray.util import Empty, Full, Queue

pytestmark = pytest.mark.both_modes


@lightray.remote
def get_from(q, timeout):
    return q.get(timeout=timeout)


@lightray.remote
def put_after(q, delay, item):
    time.sleep(delay)
    q.put(item)


@lightray.remote
def put_into(q, items, timeout=None):
    for item in items:
        q.put(item, timeout=timeout)
    return len(items)


def wait_until_blocked(q, count):
    """Wait until count puts or gets are blocked in q's actor."""
    deadline = time.monotonic() + 30
    while lightray.get(q.actor.num_waiting.remote()) < count:
        assert time.monotonic() < deadline, "the call never blocked in the queue actor"
        time.sleep(0.02)


def test_items_come_out_in_the_order_they_went_in(runtime):
    q = Queue()
    assert q.empty() and len(q) == 0
    for item in ["a", {"b": 2}, None, 3]:
        q.put(item)
    assert (q.size(), q.qsize(), len(q)) == (4, 4, 4)
    assert not q.empty() and not q.full()   # unbounded: never full
    assert [q.get() for _ in range(4)] == ["a", {"b": 2}, None, 3]
    assert q.empty()


def test_get_without_blocking_on_an_empty_queue_raises_empty(runtime):
    q = Queue()
    with pytest.raises(Empty) as caught:
        q.get(block=False)
    # A plain Empty, catchable as the standard library's, not a remote TaskError.
    assert isinstance(caught.value, stdlib_queue.Empty)
    assert not isinstance(caught.value, TaskError)
    with pytest.raises(Empty, match="empty"):
        q.get_nowait()


def test_get_with_a_timeout_raises_empty_once_it_passes(runtime):
    q = Queue()
    started = time.monotonic()
    with pytest.raises(Empty, match="0.2 s"):
        q.get(timeout=0.2)
    assert 0.15 < time.monotonic() - started < 10
    with pytest.raises(Empty):
        q.get(timeout=0)


def test_put_on_a_full_queue_raises_full_without_blocking_or_after_the_timeout(runtime):
    q = Queue(maxsize=1)
    q.put_nowait("first")
    assert q.full()
    with pytest.raises(Full) as caught:
        q.put("second", block=False)
    assert isinstance(caught.value, stdlib_queue.Full)
    assert not isinstance(caught.value, TaskError)
    with pytest.raises(Full):
        q.put_nowait("second")
    started = time.monotonic()
    with pytest.raises(Full, match="0.2 s"):
        q.put("second", timeout=0.2)
    assert 0.15 < time.monotonic() - started < 10
    assert q.get() == "first" and q.empty()


def test_a_get_blocked_in_a_task_is_served_by_a_later_put_from_the_driver(runtime):
    q = Queue()
    result = get_from.remote(q, 30)
    wait_until_blocked(q, 1)            # other callers are not held up meanwhile
    assert q.size() == 0
    q.put("hello")
    assert lightray.get(result, timeout=30) == "hello"


def test_items_a_task_puts_reach_the_driver_in_order(runtime):
    q = Queue()
    done = put_into.remote(q, list(range(10)))
    assert [q.get(timeout=30) for _ in range(10)] == list(range(10))
    assert lightray.get(done) == 10


def test_a_put_blocked_on_a_full_queue_completes_once_the_driver_makes_room(runtime):
    q = Queue(maxsize=1)
    q.put("a")
    done = put_into.remote(q, ["b"], 30)
    wait_until_blocked(q, 1)
    assert q.get() == "a"
    assert q.get(timeout=30) == "b"
    assert lightray.get(done, timeout=30) == 1


def test_batches_go_in_and_come_out_whole_or_not_at_all(runtime):
    q = Queue(maxsize=3)
    q.put_nowait_batch(x for x in [1, 2])
    with pytest.raises(Full, match="cannot put 2 items"):
        q.put_nowait_batch([3, 4])
    assert q.size() == 2                # nothing of the refused batch went in
    with pytest.raises(Empty, match="cannot get 3 items"):
        q.get_nowait_batch(3)
    assert q.get_nowait_batch(0) == []
    assert q.get_nowait_batch(2) == [1, 2]
    assert q.empty()


def test_an_object_ref_inside_an_item_stays_usable(runtime):
    q = Queue()
    ref = lightray.put("payload")
    q.put([ref])                        # nested: travels as a ref
    del ref
    [got] = q.get()
    assert lightray.get(got) == "payload"


def test_a_pickled_queue_is_the_same_queue(runtime):
    q = Queue()
    copy = pickle.loads(pickle.dumps(q))
    copy.put(1)
    assert q.get() == 1


def test_async_put_and_get_await_the_actor(runtime):
    q = Queue(maxsize=1)

    async def exchange():
        await q.put_async("x")
        with pytest.raises(Full):
            await q.put_async("y", timeout=0.05)
        return await q.get_async(timeout=5)

    assert asyncio.run(exchange()) == "x"


def test_actor_options_reach_the_queue_actor(runtime):
    q = Queue(actor_options={"name": "jobs"})
    q.put("job")
    assert lightray.get(lightray.get_actor("jobs").qsize.remote()) == 1


def test_shutdown_stops_the_actor_and_fails_calls_still_blocked_after_the_grace_period(runtime):
    q = Queue()
    blocked = get_from.remote(q, None)
    wait_until_blocked(q, 1)
    started = time.monotonic()
    q.shutdown(grace_period_s=0.2)
    assert time.monotonic() - started < 10
    with pytest.raises(ActorDiedError):
        lightray.get(blocked, timeout=30)
    with pytest.raises(ActorDiedError, match="shut down"):
        q.put(1)
    q.shutdown()                        # a second time: nothing to do


def test_graceful_shutdown_lets_a_blocked_get_be_served_first(runtime):
    q = Queue()
    blocked = get_from.remote(q, 30)
    wait_until_blocked(q, 1)
    put_after.remote(q, 0.5, "last")    # serves the get while shutdown waits
    q.shutdown(grace_period_s=20)
    assert lightray.get(blocked, timeout=30) == "last"


def test_forced_shutdown_does_not_wait(runtime):
    q = Queue()
    blocked = get_from.remote(q, None)
    wait_until_blocked(q, 1)
    started = time.monotonic()
    q.shutdown(force=True, grace_period_s=30)
    assert time.monotonic() - started < 10
    with pytest.raises(ActorDiedError):
        lightray.get(blocked, timeout=30)


@pytest.mark.parametrize("maxsize, error", [
    (-1, ValueError), ("3", TypeError), (1.5, TypeError), (True, TypeError), (None, TypeError)])
def test_bad_maxsize_is_refused_before_any_actor_starts(maxsize, error):
    with pytest.raises(error, match="maxsize"):
        Queue(maxsize=maxsize)


def test_bad_actor_options_are_refused():
    with pytest.raises(TypeError, match="actor_options"):
        Queue(actor_options=["num_cpus", 1])


def test_bad_timeouts_and_batch_sizes_are_refused(runtime):
    q = Queue()
    with pytest.raises(ValueError, match="timeout"):
        q.put(1, timeout=-1)
    with pytest.raises(ValueError, match="timeout"):
        q.get(timeout=-0.5)
    with pytest.raises(ValueError, match="timeout"):
        q.get(timeout=float("nan"))
    with pytest.raises(TypeError, match="timeout"):
        q.get(timeout="1")
    with pytest.raises(ValueError, match="num_items"):
        q.get_nowait_batch(-1)
    with pytest.raises(TypeError, match="num_items"):
        q.get_nowait_batch("2")
    with pytest.raises(TypeError, match="iterable"):
        q.put_nowait_batch(5)
    with pytest.raises(ValueError, match="grace_period_s"):
        q.shutdown(grace_period_s=-1)
    assert q.empty()                    # nothing refused went in
