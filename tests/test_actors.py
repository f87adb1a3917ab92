"""Actors: creation, method calls, ordering, handles, options, async actors,
named actors, the runtime context and bad input (issue 3).

Failures (kill, errors, restarts) are in test_actor_failures.py; when an actor
stops for lack of handles, and detached actors, in test_actor_lifetime.py.
"""
import asyncio
import os
import threading
import time

import numpy as np
import pytest
from conftest import available_cpus, wait_for, wait_for_file

import lightray
from lightray import exceptions

pytestmark = pytest.mark.both_modes


@lightray.remote
class Counter:
    def __init__(self, start=0):
        self.value = start

    def inc(self, by=1):
        self.value += by
        return self.value

    def read(self):
        return self.value

    def pid(self):
        return os.getpid()


@lightray.remote
class Log:
    def __init__(self):
        self.items = []

    def append(self, item):
        self.items.append(item)
        return len(self.items)

    def read(self):
        return list(self.items)


@lightray.remote
def task_pid():
    return os.getpid()


# ------------------------------------------------------------ creation and calls


@pytest.mark.process_only("actors in processes of their own")
@pytest.mark.timeout(30)
def test_each_actor_runs_in_a_process_of_its_own(runtime):
    first = Counter.remote()
    second = Counter.options(max_concurrency=1).remote(10)
    ref = first.pid.remote()
    assert isinstance(ref, lightray.ObjectRef)
    first_pid, second_pid = lightray.get([ref, second.pid.remote()], timeout=20)
    task_pids = set(lightray.get([task_pid.remote() for _ in range(4)], timeout=20))
    assert first_pid != second_pid
    assert os.getpid() not in (first_pid, second_pid)
    assert not task_pids & {first_pid, second_pid}
    # Each has its own state, built from its own constructor arguments.
    assert lightray.get([first.inc.remote(), second.inc.remote(5)], timeout=20) == [1, 15]


@pytest.mark.timeout(30)
def test_method_num_returns_from_decorator_and_from_options(runtime):
    @lightray.remote
    class Splitter:
        @lightray.method(num_returns=2)
        def pair(self, x):
            return x, x * 10

        def triple(self, x):
            return x, x + 1, x + 2

    splitter = Splitter.remote()
    refs = splitter.pair.remote(3)
    assert isinstance(refs, list) and len(refs) == 2
    assert all(isinstance(r, lightray.ObjectRef) for r in refs)
    assert lightray.get(refs, timeout=20) == [3, 30]
    refs = splitter.triple.options(num_returns=3).remote(7)
    assert len(refs) == 3
    assert lightray.get(refs, timeout=20) == [7, 8, 9]
    # The decorator's num_returns is the default; options override it.
    single = splitter.pair.options(num_returns=1).remote(4)
    assert lightray.get(single, timeout=20) == (4, 40)


@pytest.mark.timeout(30)
def test_calls_from_one_caller_run_in_submission_order(runtime):
    log = Log.remote()
    refs = [log.append.remote(i) for i in range(200)]
    assert lightray.get(log.read.remote(), timeout=20) == list(range(200))
    assert lightray.get(refs, timeout=20) == list(range(1, 201))


@pytest.mark.timeout(30)
def test_call_with_slow_ref_argument_submitted_first_still_runs_first(runtime, tmp_path):
    release = str(tmp_path / "release")

    @lightray.remote
    def produce_when_released(value, release):
        deadline = time.monotonic() + 20
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.02)
        return value

    @lightray.remote
    def produce(value):
        return value

    log = Log.remote()
    slow = produce_when_released.remote("slow", release)
    fast = produce.remote("fast")
    log.append.remote(slow)
    log.append.remote(fast)
    log.append.remote("plain")
    last = log.read.remote()
    assert lightray.get(fast, timeout=20) == "fast"
    ready, _ = lightray.wait([slow], timeout=0)
    assert not ready, "the slow argument must still be pending here"
    open(release, "w").close()
    assert lightray.get(last, timeout=20) == ["slow", "fast", "plain"]


@pytest.mark.timeout(30)
def test_handle_passed_to_a_task_works(runtime):
    @lightray.remote
    def add_through(counter, by):
        return lightray.get(counter.inc.remote(by), timeout=20)

    @lightray.remote
    def add_through_list(counters, by):
        return lightray.get(counters[0].inc.remote(by), timeout=20)

    counter = Counter.remote()
    assert lightray.get(add_through.remote(counter, 2), timeout=20) == 2
    assert lightray.get(add_through_list.remote([counter], 3), timeout=20) == 5
    assert lightray.get(counter.read.remote(), timeout=20) == 5


@pytest.mark.timeout(30)
def test_handle_passed_to_another_actor_works(runtime):
    @lightray.remote
    class Relay:
        def __init__(self, target=None):
            self.target = target

        def forward(self, by):
            return lightray.get(self.target.inc.remote(by), timeout=20)

        def forward_to(self, other, by):
            return lightray.get(other.inc.remote(by), timeout=20)

    counter = Counter.remote()
    relay = Relay.remote(counter)          # a handle as constructor argument
    assert lightray.get(relay.forward.remote(1), timeout=20) == 1
    assert lightray.get(relay.forward_to.remote(counter, 10), timeout=20) == 11
    assert lightray.get(counter.read.remote(), timeout=20) == 11


@pytest.mark.timeout(30)
def test_object_ref_arguments_top_level_and_nested(runtime):
    @lightray.remote
    class Inspector:
        def describe(self, top, nested, keyword=None):
            inner = nested[0]
            return (top, type(inner).__name__, lightray.get(inner, timeout=20), keyword)

    @lightray.remote
    def make(value):
        return value

    inspector = Inspector.remote()
    top = make.remote("from a task")
    nested = lightray.put({"k": 1})
    assert lightray.get(inspector.describe.remote(top, [nested]), timeout=20) == (
        "from a task", "ObjectRef", {"k": 1}, None)
    # A top-level keyword argument arrives as its value too.
    assert lightray.get(inspector.describe.remote(top, [nested], keyword=top), timeout=20) == (
        "from a task", "ObjectRef", {"k": 1}, "from a task")


@pytest.mark.process_only("shared-memory segments")
@pytest.mark.timeout(30)
def test_large_numpy_arguments_reach_the_actor(runtime):
    @lightray.remote
    class Summer:
        def total(self, array):
            return float(array.sum()), array.shape, array.flags.writeable

        def total_nested(self, refs):
            return float(sum(lightray.get(r, timeout=20).sum() for r in refs))

        def make(self, n):
            return np.full(n, 2.0)

    @lightray.remote
    def make_array(n):
        return np.ones(n)

    array = np.arange(100_000, dtype=np.float64)      # 800 KB: shared memory
    expected = float(array.sum())
    summer = Summer.remote()
    # A large value passed directly (implicit put), through put(), from a task.
    value_total, shape, writeable = lightray.get(summer.total.remote(array), timeout=20)
    assert (value_total, shape) == (expected, (100_000,))
    assert not writeable, "a large argument is a read-only view on shared memory"
    put_ref = lightray.put(array)
    assert lightray.get(summer.total.remote(put_ref), timeout=20)[0] == expected
    task_ref = make_array.remote(50_000)
    assert lightray.get(summer.total.remote(task_ref), timeout=20)[0] == 50_000.0
    assert lightray.get(summer.total_nested.remote([put_ref, task_ref]), timeout=20) == (
        expected + 50_000.0)
    # A large result of a method, passed on to the actor again.
    made = summer.make.remote(60_000)
    assert float(lightray.get(made, timeout=20).sum()) == 120_000.0
    assert lightray.get(summer.total.remote(made), timeout=20)[0] == 120_000.0


# ----------------------------------------------------------------------- options


@pytest.mark.process_only("actors in processes of their own")
@pytest.mark.timeout(30)
def test_actors_without_num_cpus_need_a_cpu_to_start_but_hold_none(runtime):
    actors = [Counter.remote() for _ in range(3)]
    pids = lightray.get([a.pid.remote() for a in actors], timeout=20)
    assert len(set(pids)) == 3
    assert available_cpus() == 2.0
    # Tasks still get both CPUs.
    assert len(lightray.get([task_pid.remote() for _ in range(4)], timeout=20)) == 4


@pytest.mark.timeout(30)
def test_actor_with_num_cpus_holds_them_until_killed(runtime):
    actor = Counter.options(num_cpus=1).remote()
    assert lightray.get(actor.inc.remote(), timeout=20) == 1
    assert wait_for(lambda: available_cpus() == 1.0), lightray.available_resources()
    lightray.kill(actor)
    assert wait_for(lambda: available_cpus() == 2.0), lightray.available_resources()


@pytest.mark.timeout(30)
def test_actor_killed_while_blocked_in_get_gives_back_exactly_its_cpu(runtime, tmp_path):
    started, release = str(tmp_path / "started"), str(tmp_path / "release")

    @lightray.remote
    def wait_for_release(started, release):
        open(started, "w").close()
        deadline = time.monotonic() + 20
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.02)
        return "released"

    @lightray.remote(num_cpus=1)
    class Waiter:
        def wait(self, started, release):
            return lightray.get(wait_for_release.remote(started, release), timeout=25)

    waiter = Waiter.remote()
    call = waiter.wait.remote(started, release)
    assert wait_for_file(started)
    lightray.kill(waiter)
    with pytest.raises(exceptions.ActorDiedError):
        lightray.get(call, timeout=20)
    open(release, "w").close()
    assert wait_for(lambda: available_cpus() == 2.0), lightray.available_resources()
    # Not more than the runtime has, either.
    assert lightray.get(task_pid.remote(), timeout=20) > 0
    assert wait_for(lambda: available_cpus() == 2.0), lightray.available_resources()
    assert lightray.cluster_resources()["CPU"] == 2.0


@pytest.mark.timeout(30)
def test_gpu_actor_sees_its_gpu_and_a_second_one_waits_for_it():
    lightray.init(num_cpus=2, num_gpus=1)

    @lightray.remote(num_gpus=1)
    class GpuUser:
        def devices(self):
            context = lightray.get_runtime_context()
            return os.environ.get("CUDA_VISIBLE_DEVICES"), context.get_assigned_resources()

    first = GpuUser.remote()
    visible, assigned = lightray.get(first.devices.remote(), timeout=20)
    assert visible == "0"
    assert assigned.get("GPU") == 1
    assert lightray.available_resources().get("GPU", 0) == 0
    second = GpuUser.remote()
    waiting = second.devices.remote()
    ready, _ = lightray.wait([waiting], timeout=1.0)
    assert not ready, "a second num_gpus=1 actor must wait for the only GPU"
    lightray.kill(first)
    visible, assigned = lightray.get(waiting, timeout=20)
    assert visible == "0"
    assert assigned.get("GPU") == 1


@pytest.mark.timeout(30)
def test_killing_an_actor_still_waiting_for_its_gpu_never_starts_it():
    lightray.init(num_cpus=2, num_gpus=1)

    @lightray.remote(num_gpus=1)
    class GpuUser:
        def pid(self):
            return os.getpid()

    first = GpuUser.remote()
    lightray.get(first.pid.remote(), timeout=20)
    second = GpuUser.remote()
    waiting = second.pid.remote()
    ready, _ = lightray.wait([waiting], timeout=0.5)
    assert not ready
    lightray.kill(second)
    with pytest.raises(exceptions.ActorDiedError):
        lightray.get(waiting, timeout=20)
    lightray.kill(first)
    assert wait_for(lambda: lightray.available_resources().get("GPU") == 1), (
        lightray.available_resources())
    third = GpuUser.remote()
    assert lightray.get(third.pid.remote(), timeout=20) > 0


@pytest.mark.timeout(30)
def test_custom_resources_are_held_by_the_actor():
    lightray.init(num_cpus=2, resources={"widget": 1})
    holder = Counter.options(resources={"widget": 1}).remote()
    assert lightray.get(holder.inc.remote(), timeout=20) == 1
    assert lightray.available_resources().get("widget", 0) == 0
    lightray.kill(holder)
    assert wait_for(lambda: lightray.available_resources().get("widget") == 1)


@pytest.mark.timeout(30)
def test_threaded_actor_with_max_concurrency_runs_calls_at_once(runtime):
    @lightray.remote(max_concurrency=8)
    class Sleeper:
        def ready(self):
            return True

        def nap(self, seconds):
            time.sleep(seconds)
            return threading.get_ident()

    sleeper = Sleeper.remote()
    assert lightray.get(sleeper.ready.remote(), timeout=20)
    t0 = time.monotonic()
    threads = lightray.get([sleeper.nap.remote(0.5) for _ in range(8)], timeout=20)
    elapsed = time.monotonic() - t0
    assert elapsed < 3.0, f"8 calls of 0.5 s on 8 threads took {elapsed:.2f} s"
    assert len(set(threads)) > 1


@pytest.mark.timeout(30)
def test_get_if_exists_returns_the_existing_actor(runtime):
    first = Counter.options(name="shared-counter", get_if_exists=True).remote()
    assert lightray.get(first.inc.remote(), timeout=20) == 1
    second = Counter.options(name="shared-counter", get_if_exists=True).remote(100)
    assert lightray.get(second.inc.remote(), timeout=20) == 2
    assert lightray.get(first.read.remote(), timeout=20) == 2
    assert lightray.get(second.pid.remote(), timeout=20) == lightray.get(
        first.pid.remote(), timeout=20)


@pytest.mark.timeout(10)
def test_unknown_actor_option_raises_value_error_naming_it():
    with pytest.raises(ValueError) as ei:
        Counter.options(num_cpu=1)
    assert "num_cpu" in str(ei.value)

    with pytest.raises(ValueError) as ei:
        @lightray.remote(max_restart=1)
        class Bad:
            pass
    assert "max_restart" in str(ei.value)

    with pytest.raises(ValueError) as ei:
        @lightray.method(num_return=2)
        def f(self):
            pass
    assert "num_return" in str(ei.value)


@pytest.mark.timeout(30)
def test_unknown_method_option_raises_value_error_naming_it(runtime):
    counter = Counter.remote()
    with pytest.raises(ValueError) as ei:
        counter.inc.options(num_return=2)
    assert "num_return" in str(ei.value)
    assert lightray.get(counter.inc.remote(), timeout=20) == 1


# ------------------------------------------------------------------ async actors


@lightray.remote
class AsyncSleeper:
    def __init__(self):
        self.active = 0
        self.most_active = 0
        self.threads = set()

    async def nap(self, seconds):
        self.threads.add(threading.get_ident())
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        await asyncio.sleep(seconds)
        self.active -= 1
        return seconds

    async def peak(self):
        return self.most_active

    async def threads_used(self):
        return len(self.threads)


@pytest.mark.timeout(30)
def test_async_actor_runs_calls_concurrently(runtime):
    sleeper = AsyncSleeper.remote()
    assert lightray.get(sleeper.peak.remote(), timeout=20) == 0
    t0 = time.monotonic()
    assert lightray.get([sleeper.nap.remote(0.5) for _ in range(100)], timeout=30) == [0.5] * 100
    elapsed = time.monotonic() - t0
    assert elapsed < 10.0, f"100 async calls of 0.5 s took {elapsed:.2f} s"
    assert lightray.get(sleeper.peak.remote(), timeout=20) > 1
    assert lightray.get(sleeper.threads_used.remote(), timeout=20) == 1, "one event loop"


@pytest.mark.timeout(30)
def test_async_actor_max_concurrency_bounds_running_calls(runtime):
    sleeper = AsyncSleeper.options(max_concurrency=2).remote()
    assert lightray.get(sleeper.peak.remote(), timeout=20) == 0
    t0 = time.monotonic()
    lightray.get([sleeper.nap.remote(0.5) for _ in range(4)], timeout=20)
    elapsed = time.monotonic() - t0
    assert elapsed >= 1.0, f"4 calls of 0.5 s, 2 at a time, took only {elapsed:.2f} s"
    assert lightray.get(sleeper.peak.remote(), timeout=20) == 2


@pytest.mark.timeout(30)
def test_await_object_refs_inside_an_async_method(runtime):
    @lightray.remote
    def double(x):
        time.sleep(0.2)
        return 2 * x

    @lightray.remote
    class Awaiter:
        async def await_task(self, x):
            return await double.remote(x)

        async def await_actor(self, other, by):
            first = await other.inc.remote(by)
            second = await other.inc.remote(by)
            return first, second

    awaiter = Awaiter.remote()
    counter = Counter.remote()
    assert lightray.get(awaiter.await_task.remote(21), timeout=20) == 42
    assert lightray.get(awaiter.await_actor.remote(counter, 5), timeout=20) == (5, 10)


# ------------------------------------------------------------------ named actors


@pytest.mark.timeout(30)
def test_get_actor_from_driver_task_and_another_actor(runtime):
    @lightray.remote
    def inc_named(name):
        return lightray.get(lightray.get_actor(name).inc.remote(), timeout=20)

    @lightray.remote
    class Finder:
        def inc_named(self, name, namespace):
            handle = lightray.get_actor(name, namespace=namespace)
            return lightray.get(handle.inc.remote(), timeout=20)

    original = Counter.options(name="global-counter").remote()
    found = lightray.get_actor("global-counter")
    assert found == original
    assert lightray.get(found.inc.remote(), timeout=20) == 1
    assert lightray.get(inc_named.remote("global-counter"), timeout=20) == 2
    finder = Finder.remote()
    assert lightray.get(finder.inc_named.remote("global-counter", None), timeout=20) == 3
    assert lightray.get(original.read.remote(), timeout=20) == 3


@pytest.mark.timeout(30)
def test_namespaces_keep_equal_names_apart(runtime):
    red = Counter.options(name="twin", namespace="red").remote(100)
    blue = Counter.options(name="twin", namespace="blue").remote(200)
    assert lightray.get(lightray.get_actor("twin", namespace="red").read.remote(), timeout=20) == 100
    assert lightray.get(lightray.get_actor("twin", namespace="blue").read.remote(), timeout=20) == 200
    with pytest.raises(ValueError):
        lightray.get_actor("twin")          # not in the default namespace
    assert lightray.get([red.inc.remote(), blue.inc.remote()], timeout=20) == [101, 201]


@pytest.mark.timeout(30)
def test_driver_namespace_is_the_default_for_named_actors():
    lightray.init(num_cpus=2, namespace="team")

    @lightray.remote
    def read_named(name):
        return lightray.get(lightray.get_actor(name).read.remote(), timeout=20)

    Counter.options(name="in-team").remote(7)
    assert lightray.get(lightray.get_actor("in-team", namespace="team").read.remote(),
                        timeout=20) == 7
    assert lightray.get(lightray.get_actor("in-team").read.remote(), timeout=20) == 7
    assert lightray.get(read_named.remote("in-team"), timeout=20) == 7
    with pytest.raises(ValueError):
        lightray.get_actor("in-team", namespace="other")


@pytest.mark.timeout(30)
def test_taken_name_raises_value_error(runtime):
    first = Counter.options(name="only-one").remote()
    with pytest.raises(ValueError) as ei:
        Counter.options(name="only-one").remote()
    assert "only-one" in str(ei.value)
    assert lightray.get(first.inc.remote(), timeout=20) == 1


@pytest.mark.timeout(30)
def test_unknown_actor_name_raises_value_error_naming_it(runtime):
    with pytest.raises(ValueError) as ei:
        lightray.get_actor("no-such-actor-here")
    assert "no-such-actor-here" in str(ei.value)


# ---------------------------------------------------------------- runtime context


@pytest.mark.timeout(30)
def test_runtime_context_actor_id(runtime):
    @lightray.remote
    def task_actor_id():
        return lightray.get_runtime_context().get_actor_id()

    @lightray.remote
    class WhoAmI:
        def actor_id(self):
            return lightray.get_runtime_context().get_actor_id()

    first, second = WhoAmI.remote(), WhoAmI.remote()
    ids = lightray.get([first.actor_id.remote(), first.actor_id.remote(),
                        second.actor_id.remote()], timeout=20)
    for actor_id in ids:
        assert isinstance(actor_id, str) and actor_id
        int(actor_id, 16)
    assert ids[0] == ids[1] != ids[2]
    assert lightray.get_runtime_context().get_actor_id() is None
    assert lightray.get(task_actor_id.remote(), timeout=20) is None


# --------------------------------------------------------------------- bad input


@pytest.mark.timeout(30)
def test_unknown_method_raises_attribute_error_naming_it(runtime):
    counter = Counter.remote()
    with pytest.raises(AttributeError) as ei:
        _ = counter.nope
    assert "nope" in str(ei.value)


@pytest.mark.timeout(30)
def test_calling_a_method_without_remote_raises_type_error(runtime):
    counter = Counter.remote()
    with pytest.raises(TypeError) as ei:
        counter.inc()
    assert ".remote" in str(ei.value)
    assert lightray.get(counter.read.remote(), timeout=20) == 0


@pytest.mark.timeout(10)
def test_instantiating_an_actor_class_directly_raises_type_error():
    with pytest.raises(TypeError) as ei:
        Counter()
    assert ".remote" in str(ei.value)


@pytest.mark.timeout(10)
def test_kill_of_a_non_handle_raises_type_error():
    with pytest.raises(TypeError):
        lightray.kill(123)


@pytest.mark.timeout(10)
def test_get_actor_with_a_non_str_name_raises_type_error():
    with pytest.raises(TypeError):
        lightray.get_actor(123)


@pytest.mark.timeout(30)
def test_unpicklable_method_argument_raises_type_error_naming_it(runtime):
    counter = Counter.remote()
    with pytest.raises(TypeError) as ei:
        counter.inc.remote(by=threading.Lock())
    assert "'by'" in str(ei.value)
    assert "lock" in str(ei.value).lower()
    with pytest.raises(TypeError) as ei:
        counter.inc.remote(threading.Lock())
    assert "argument 0" in str(ei.value)
    assert lightray.get(counter.inc.remote(), timeout=20) == 1


@pytest.mark.timeout(60)
def test_thousands_of_calls_to_threaded_and_async_actors_all_complete(runtime):
    # Calls finish on pool threads or the event loop and wake the actor's main
    # thread through one pipe: none may be left unanswered, however they race.
    @lightray.remote
    class Threaded:
        def echo(self, i):
            return i

    @lightray.remote
    class Async:
        async def echo(self, i):
            return i

    for actor in (Threaded.options(max_concurrency=16).remote(), Async.remote()):
        for _ in range(3):
            refs = [actor.echo.remote(i) for i in range(2000)]
            assert lightray.get(refs, timeout=30) == list(range(2000))
