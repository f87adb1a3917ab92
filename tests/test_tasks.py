"""Task submission, arguments, nesting, ObjectRef behaviour, wait()."""
import asyncio
import concurrent.futures
import pickle
import time

import pytest

import lightray

pytestmark = pytest.mark.both_modes


@pytest.mark.timeout(30)
def test_remote_function_returns_value(runtime):
    @lightray.remote
    def add(a, b):
        return a + b

    ref = add.remote(1, 2)
    assert lightray.get(ref) == 3


@pytest.mark.timeout(30)
def test_remote_function_accepts_kwargs_and_defaults(runtime):
    @lightray.remote
    def f(a, b=10, *args, c=100, **kw):
        return (a, b, args, c, kw)

    assert lightray.get(f.remote(1)) == (1, 10, (), 100, {})
    assert lightray.get(f.remote(1, 2, 3, c=4, d=5)) == (1, 2, (3,), 4, {"d": 5})


@pytest.mark.timeout(30)
def test_remote_decorator_with_options(runtime):
    @lightray.remote(num_cpus=0.5, max_retries=1)
    def f(x):
        return x * 2

    assert lightray.get(f.remote(21)) == 42


@pytest.mark.timeout(30)
def test_task_returning_none(runtime):
    @lightray.remote
    def f():
        return None

    assert lightray.get(f.remote()) is None


@pytest.mark.timeout(30)
def test_num_returns_gives_list_of_refs(runtime):
    @lightray.remote(num_returns=3)
    def three():
        return 1, "two", [3]

    refs = three.remote()
    assert isinstance(refs, list)
    assert len(refs) == 3
    assert all(isinstance(r, lightray.ObjectRef) for r in refs)
    assert lightray.get(refs) == [1, "two", [3]]
    assert lightray.get(refs[1]) == "two"


@pytest.mark.timeout(30)
def test_options_overrides_num_returns(runtime):
    @lightray.remote
    def pair():
        return "a", "b"

    single = pair.remote()
    assert lightray.get(single) == ("a", "b")
    refs = pair.options(num_returns=2).remote()
    assert len(refs) == 2
    assert lightray.get(refs) == ["a", "b"]


@pytest.mark.timeout(30)
def test_get_list_returns_values_in_order(runtime):
    @lightray.remote
    def slow_identity(x, delay):
        import time

        time.sleep(delay)
        return x

    refs = [slow_identity.remote(i, 0.3 if i == 0 else 0.0) for i in range(6)]
    assert lightray.get(refs) == list(range(6))


@pytest.mark.timeout(30)
def test_top_level_ref_args_are_resolved_to_values(runtime):
    @lightray.remote
    def produce():
        return 20

    @lightray.remote
    def consume(x, y=None):
        return (type(x).__name__, x, type(y).__name__, y)

    put_ref = lightray.put(22)
    out = lightray.get(consume.remote(produce.remote(), y=put_ref))
    assert out == ("int", 20, "int", 22)


@pytest.mark.timeout(30)
def test_refs_nested_in_containers_arrive_as_objectrefs(runtime):
    @lightray.remote
    def inspect(lst, dct):
        import lightray as lr

        return (
            isinstance(lst[0], lr.ObjectRef),
            isinstance(dct["k"], lr.ObjectRef),
            lr.get(lst[0]) + lr.get(dct["k"]),
        )

    a = lightray.put(1)
    b = lightray.put(2)
    assert lightray.get(inspect.remote([a], {"k": b})) == (True, True, 3)


@pytest.mark.timeout(30)
def test_task_can_submit_and_get_child_tasks(runtime):
    @lightray.remote
    def square(x):
        return x * x

    @lightray.remote
    def sum_of_squares(n):
        import lightray as lr

        return sum(lr.get([square.remote(i) for i in range(n)]))

    assert lightray.get(sum_of_squares.remote(5)) == 0 + 1 + 4 + 9 + 16


@pytest.mark.timeout(45)
def test_worker_blocked_in_get_releases_cpu_so_nested_tasks_do_not_deadlock(runtime):
    # runtime has num_cpus=2; a chain of 5 tasks each blocked in get() on its
    # child needs the blocked ones to release their CPU.
    @lightray.remote
    def recurse(depth):
        import lightray as lr

        if depth == 0:
            return 0
        return 1 + lr.get(recurse.remote(depth - 1))

    assert lightray.get(recurse.remote(4), timeout=40) == 4


@pytest.mark.timeout(45)
def test_nested_fan_out_with_two_cpus_does_not_deadlock(runtime):
    @lightray.remote
    def leaf(i):
        return i

    @lightray.remote
    def mid(i):
        import lightray as lr

        return sum(lr.get([leaf.remote(i * 10 + j) for j in range(3)]))

    @lightray.remote
    def top():
        import lightray as lr

        return sum(lr.get([mid.remote(i) for i in range(3)]))

    expected = sum(i * 10 + j for i in range(3) for j in range(3))
    assert lightray.get(top.remote(), timeout=40) == expected


@pytest.mark.timeout(30)
def test_objectref_is_hashable_and_has_readable_repr(runtime):
    r1 = lightray.put(1)
    r2 = lightray.put(2)
    assert r1 != r2
    assert r1 == r1
    d = {r1: "one", r2: "two"}
    assert d[r1] == "one" and d[r2] == "two"
    assert len({r1, r2, r1}) == 2
    assert "ObjectRef" in repr(r1)


@pytest.mark.timeout(30)
def test_objectref_survives_pickle_roundtrip(runtime):
    r = lightray.put({"x": 1})
    r2 = pickle.loads(pickle.dumps(r))
    assert r2 == r
    assert hash(r2) == hash(r)
    assert lightray.get(r2) == {"x": 1}


@pytest.mark.timeout(30)
def test_ref_future_returns_concurrent_future(runtime):
    @lightray.remote
    def f():
        return "done"

    fut = f.remote().future()
    assert isinstance(fut, concurrent.futures.Future)
    assert fut.result(timeout=20) == "done"


@pytest.mark.timeout(30)
def test_objectref_is_awaitable_in_asyncio(runtime):
    @lightray.remote
    def f(x):
        return x + 1

    async def main():
        a, b = await asyncio.gather(f.remote(1), f.remote(2))
        c = await lightray.put("p")
        return a, b, c

    assert asyncio.run(asyncio.wait_for(main(), 20)) == (2, 3, "p")


@pytest.mark.timeout(30)
def test_wait_returns_ready_and_not_ready_in_input_order(runtime):
    @lightray.remote
    def sleeper(x, delay):
        import time

        time.sleep(delay)
        return x

    fast_a = sleeper.remote("a", 0.0)
    slow = sleeper.remote("slow", 5.0)
    fast_b = sleeper.remote("b", 0.0)
    refs = [fast_a, slow, fast_b]
    ready, not_ready = lightray.wait(refs, num_returns=2, timeout=15)
    assert ready == [fast_a, fast_b]
    assert not_ready == [slow]
    assert lightray.get(ready) == ["a", "b"]


@pytest.mark.timeout(30)
def test_wait_with_timeout_returns_what_is_ready(runtime):
    @lightray.remote
    def sleeper(delay):
        import time

        time.sleep(delay)
        return delay

    slow = sleeper.remote(10.0)
    done = lightray.put("ready")
    t0 = time.monotonic()
    ready, not_ready = lightray.wait([slow, done], num_returns=2, timeout=0.5)
    elapsed = time.monotonic() - t0
    assert ready == [done]
    assert not_ready == [slow]
    assert elapsed < 5


@pytest.mark.timeout(30)
def test_wait_default_num_returns_is_one(runtime):
    refs = [lightray.put(i) for i in range(3)]
    ready, not_ready = lightray.wait(refs)
    assert len(ready) == 1
    assert len(not_ready) == 2
    assert set(ready) | set(not_ready) == set(refs)
    # order among not_ready follows the input
    assert not_ready == [r for r in refs if r not in ready]


@pytest.mark.timeout(30)
def test_wait_all_returns_everything_ready(runtime):
    @lightray.remote
    def f(i):
        return i

    refs = [f.remote(i) for i in range(5)]
    ready, not_ready = lightray.wait(refs, num_returns=5, timeout=20)
    assert ready == refs
    assert not_ready == []


@pytest.mark.timeout(40)
def test_one_remote_function_called_100_times(runtime):
    @lightray.remote
    def inc(x):
        return x + 1

    refs = [inc.remote(i) for i in range(100)]
    assert lightray.get(refs, timeout=30) == [i + 1 for i in range(100)]


def _make_fn_returning(tag):
    @lightray.remote
    def work():
        return tag

    return work


@pytest.mark.timeout(30)
def test_same_named_functions_in_different_scopes_do_not_clash(runtime):
    def scope_a():
        @lightray.remote
        def work(x):
            return ("a", x)

        return work

    def scope_b():
        @lightray.remote
        def work(x):
            return ("b", x)

        return work

    fa, fb = scope_a(), scope_b()
    ra = [fa.remote(i) for i in range(3)]
    rb = [fb.remote(i) for i in range(3)]
    assert lightray.get(ra) == [("a", i) for i in range(3)]
    assert lightray.get(rb) == [("b", i) for i in range(3)]
    # closures over different values with identical code/name
    f1, f2 = _make_fn_returning(1), _make_fn_returning(2)
    assert lightray.get([f1.remote(), f2.remote(), f1.remote()]) == [1, 2, 1]


@pytest.mark.timeout(30)
def test_runtime_context_inside_task(runtime):
    @lightray.remote
    def ctx_info():
        import os

        import lightray as lr

        ctx = lr.get_runtime_context()
        return {
            "node_id": str(ctx.node_id),
            "worker_id": str(ctx.worker_id),
            "task_id": str(ctx.task_id),
            "resources": dict(ctx.get_assigned_resources()),
            "pid": os.getpid(),
        }

    a, b = lightray.get([ctx_info.remote(), ctx_info.remote()])
    assert a["resources"] == {"CPU": 1.0}
    assert a["task_id"] not in ("", "None")
    assert a["task_id"] != b["task_id"]
    assert a["worker_id"] not in ("", "None")
    assert a["node_id"] not in ("", "None")
    assert a["node_id"] == b["node_id"]  # single node
    assert str(lightray.get_runtime_context().node_id) == a["node_id"]
    if a["pid"] != b["pid"]:
        assert a["worker_id"] != b["worker_id"]

    half = lightray.get(ctx_info.options(num_cpus=0.5).remote())
    assert half["resources"] == {"CPU": 0.5}


@pytest.mark.process_only("tasks run in worker processes")
@pytest.mark.timeout(30)
def test_tasks_run_in_worker_processes_not_the_driver(runtime):
    import os

    @lightray.remote
    def pid():
        import os

        return os.getpid()

    assert lightray.get(pid.remote()) != os.getpid()


@pytest.mark.timeout(30)
def test_first_remote_call_auto_initializes():
    assert not lightray.is_initialized()

    @lightray.remote
    def f():
        return "auto"

    assert lightray.get(f.remote()) == "auto"
    assert lightray.is_initialized()


@pytest.mark.timeout(30)
def test_future_of_failing_task_carries_task_error(runtime):
    from lightray import exceptions as lrexc

    @lightray.remote
    def bad():
        raise ValueError("future boom")

    fut = bad.remote().future()
    exc = fut.exception(timeout=20)
    assert isinstance(exc, lrexc.TaskError)
    assert isinstance(exc, ValueError)


@pytest.mark.timeout(30)
def test_awaiting_failing_task_raises_original_type(runtime):
    @lightray.remote
    def bad():
        raise KeyError("await boom")

    async def main():
        with pytest.raises(KeyError):
            await bad.remote()
        return True

    assert asyncio.run(asyncio.wait_for(main(), 20)) is True


@pytest.mark.timeout(30)
def test_error_in_nested_task_propagates_through_parent(runtime):
    from lightray import exceptions as lrexc

    @lightray.remote
    def child():
        raise ValueError("deep failure")

    @lightray.remote
    def parent():
        import lightray as lr

        return lr.get(child.remote())

    with pytest.raises(ValueError) as ei:
        lightray.get(parent.remote(), timeout=20)
    assert isinstance(ei.value, lrexc.TaskError)
    assert "deep failure" in str(ei.value)


@pytest.mark.timeout(30)
def test_wait_inside_task(runtime):
    @lightray.remote
    def leaf(i):
        return i

    @lightray.remote
    def waiter():
        import lightray as lr

        refs = [leaf.remote(i) for i in range(4)]
        ready, not_ready = lr.wait(refs, num_returns=4, timeout=15)
        return len(ready), len(not_ready), sum(lr.get(ready))

    assert lightray.get(waiter.remote(), timeout=25) == (4, 0, 6)


@pytest.mark.timeout(30)
def test_task_with_many_ref_arguments(runtime):
    @lightray.remote
    def total(*xs):
        return sum(xs)

    refs = [lightray.put(i) for i in range(50)]
    assert lightray.get(total.remote(*refs), timeout=20) == sum(range(50))


@pytest.mark.timeout(45)
def test_concurrent_submission_and_get_from_driver_threads(runtime):
    @lightray.remote
    def double(x):
        return 2 * x

    def worker(base):
        refs = [double.remote(base + i) for i in range(15)]
        return lightray.get(refs, timeout=30)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(worker, [0, 100, 200, 300]))
    assert results == [[2 * (b + i) for i in range(15)] for b in (0, 100, 200, 300)]


@pytest.mark.timeout(30)
def test_cancel_of_finished_task_is_noop(runtime):
    @lightray.remote
    def f():
        return "done"

    ref = f.remote()
    assert lightray.get(ref, timeout=20) == "done"
    lightray.cancel(ref)
    assert lightray.get(ref, timeout=20) == "done"
