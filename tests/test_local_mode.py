"""Local mode (issue 17): init(local_mode=True) runs everything in the driver's process.

The API test files run in both modes (the both_modes marker, conftest); this
file pins down what is particular to local mode: no processes, sockets or
shared memory; copies or the very objects (copy_values); inline runs with
num_cpus=0; the thread pool and its resources; cancel; debugging (breakpoint,
tracebacks, coverage) and the kv backend.
"""
import os
import subprocess
import sys
import textwrap
import threading

import coverage
import dask
import psutil
import pytest
from conftest import session_dirs, shm_entries, wait_for

import lightray
from lightray import exceptions

# Tasks of local mode run in this process: they share its module globals,
# which is how these tests hand them events and collect what they saw.
_seen: list = []
_events: dict = {}


@pytest.fixture
def local():
    lightray.init(local_mode=True, num_cpus=2)
    yield lightray
    lightray.shutdown()


@pytest.fixture(autouse=True)
def clear_globals():
    _seen.clear()
    _events.clear()
    yield
    for event in _events.values():
        event.set()     # let no task thread wait on past the test


def event(name: str) -> threading.Event:
    return _events.setdefault(name, threading.Event())


@lightray.remote
def where():
    return os.getpid(), threading.get_ident()


@lightray.remote
def record(item):
    _seen.append(item)
    return item


@lightray.remote
def identity(value):
    return value


@lightray.remote
def append_one(items):
    items.append(1)
    return items


# ------------------------------------------------------------ no processes

def test_local_mode_starts_no_process_socket_segment_or_session_dir():
    me = psutil.Process()
    shm_before, dirs_before = shm_entries(), session_dirs()
    sockets_before = len(me.net_connections(kind="all"))
    lightray.init(local_mode=True, num_cpus=2)

    @lightray.remote
    class Holder:
        def hold(self, value):
            return value

    holder = Holder.remote()
    big = lightray.put(b"x" * (4 << 20))                    # far above the inline threshold
    assert lightray.get(identity.remote(big)) == b"x" * (4 << 20)
    assert lightray.get(holder.hold.remote(big)) == b"x" * (4 << 20)
    pid, _ = lightray.get(where.remote())
    assert pid == os.getpid()
    assert me.children(recursive=True) == []
    assert shm_entries() == shm_before
    assert session_dirs() == dirs_before
    assert len(me.net_connections(kind="all")) == sockets_before
    lightray.shutdown()


def test_env_variable_turns_local_mode_on(monkeypatch):
    monkeypatch.setenv("LIGHTRAY_LOCAL_MODE", "1")
    lightray.init(num_cpus=1)
    assert lightray.get(where.remote())[0] == os.getpid()
    assert lightray.nodes()[0]["alive"] is True
    assert psutil.Process().children() == []


def test_nodes_and_resources_describe_the_one_local_node(local):
    assert lightray.cluster_resources() == {"CPU": 2.0}
    assert lightray.available_resources() == {"CPU": 2.0}
    (node,) = lightray.nodes()
    assert node["alive"] and node["resources"] == {"CPU": 2.0}
    assert lightray.get_runtime_context().node_id == node["node_id"]


# ------------------------------------------------------------ init options

def test_copy_values_without_local_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="copy_values is an option of local mode"):
        lightray.init(copy_values=False)
    assert not lightray.is_initialized()


@pytest.mark.parametrize("options, error, text", [
    ({"local_mode": "yes"}, TypeError, "local_mode must be a bool"),
    ({"local_mode": True, "copy_values": 0}, TypeError, "copy_values must be a bool"),
    ({"local_mode": True, "address": "auto"}, ValueError, "address cannot be used"),
    ({"local_mode": True, "object_store_memory": 1 << 20}, ValueError, "object_store_memory"),
    ({"local_mode": True, "spill_dir": "/tmp/x"}, ValueError, "spill_dir"),
    ({"local_mode": True, "num_cpus": -1}, ValueError, "num_cpus"),
    ({"local_mode": True, "forward_warnings": False}, ValueError, "forward_warnings"),
], ids=["local_mode-str", "copy_values-int", "address", "object_store_memory", "spill_dir",
        "num_cpus", "forward_warnings"])
def test_bad_local_mode_options_are_refused_naming_them(options, error, text):
    with pytest.raises(error, match=text):
        lightray.init(**options)
    assert not lightray.is_initialized()


# ------------------------------------------------------------ copy_values

def test_values_are_copies_by_default(local):
    items = []
    assert lightray.get(append_one.remote(items)) == [1]
    assert items == [], "the task changed the driver's own list"
    ref = lightray.put(items)
    assert lightray.get(ref) is not items
    assert lightray.get(ref) is not lightray.get(ref)


def test_an_unpicklable_argument_fails_as_in_cluster_mode(local):
    with pytest.raises(TypeError, match="argument 0 of identity"):
        identity.remote(threading.Lock())
    with pytest.raises(TypeError, match="could not serialize"):
        lightray.put(threading.Lock())


def test_an_unpicklable_function_fails_at_each_remote_call(local):
    lock = threading.Lock()

    @lightray.remote
    def holds_lock():
        return lock.locked()

    for _ in range(2):   # a refused function leaves nothing behind that lets it pass
        with pytest.raises(TypeError, match="holds_lock cannot be serialized"):
            holds_lock.remote()


@lightray.remote
def pair():
    return 1, 2


def test_each_options_call_runs_with_its_own_options(local):
    first, second = pair.options(num_returns=2).remote()
    assert lightray.get([first, second]) == [1, 2]
    assert lightray.get(pair.remote()) == (1, 2)
    for _ in range(2):
        with pytest.raises(exceptions.TaskUnschedulableError, match="asks for 3.0 CPU"):
            lightray.get(pair.options(num_cpus=3).remote(), timeout=0)
    assert lightray.get(pair.remote()) == (1, 2)
    # More distinct options than local mode keeps worked out: each still takes effect.
    refs = [pair.options(num_returns=1 + i % 2).remote() for i in range(1500)]
    values = [lightray.get(r) if i % 2 == 0 else lightray.get(list(r))
              for i, r in enumerate(refs)]
    assert values == [(1, 2) if i % 2 == 0 else [1, 2] for i in range(1500)]


def test_a_get_in_the_driver_runs_the_task_with_its_resources_taken(local):
    @lightray.remote(num_cpus=2)
    def cpus_left():
        return lightray.available_resources().get("CPU", 0.0)

    assert [lightray.get(cpus_left.remote()) for _ in range(20)] == [0.0] * 20
    assert lightray.available_resources()["CPU"] == 2.0


def test_without_copy_values_tasks_get_the_very_objects():
    lightray.init(local_mode=True, num_cpus=2, copy_values=False)
    items = []
    assert lightray.get(append_one.remote(items)) is items
    assert items == [1]
    lock = threading.Lock()               # unpicklable: fine without copies
    assert lightray.get(identity.remote(lock)) is lock
    assert lightray.get(lightray.put(lock)) is lock


# ------------------------------------------------------------ inline and the pool

def test_num_cpus_zero_runs_tasks_inline_in_submission_order():
    lightray.init(local_mode=True, num_cpus=0)
    refs = [record.remote(i) for i in range(20)]
    assert _seen == list(range(20)), "each task ran at its submission"
    assert lightray.get(refs) == list(range(20))
    assert lightray.get(where.remote()) == (os.getpid(), threading.get_ident())


def test_num_cpus_zero_still_refuses_resources_it_does_not_have():
    lightray.init(local_mode=True, num_cpus=0)
    with pytest.raises(exceptions.TaskUnschedulableError, match="GPU"):
        lightray.get(where.options(num_gpus=1).remote())


@lightray.remote
def count_running(gate, lock, running):
    with lock:
        running[0] += 1
        running[1] = max(running[1], running[0])
    gate.wait(timeout=20)
    with lock:
        running[0] -= 1


def test_the_pool_runs_as_many_tasks_at_once_as_cpus_allow():
    lightray.init(local_mode=True, num_cpus=2, copy_values=False)
    gate, lock, running = threading.Event(), threading.Lock(), [0, 0]   # now, at most
    refs = [count_running.remote(gate, lock, running) for _ in range(6)]
    assert wait_for(lambda: running[0] == 2)
    assert "CPU" not in lightray.available_resources()   # as Ray: nothing left, left out
    gate.set()
    lightray.get(refs, timeout=20)
    assert running[1] == 2
    assert lightray.available_resources()["CPU"] == 2.0


def test_a_task_needing_no_cpu_runs_while_cpu_tasks_wait_in_the_queue():
    lightray.init(local_mode=True, num_cpus=2, copy_values=False)
    gate, lock, running = threading.Event(), threading.Lock(), [0, 0]
    waiting = [count_running.remote(gate, lock, running) for _ in range(4)]
    assert wait_for(lambda: running[0] == 2)   # two run, two wait for a CPU
    no_cpu = count_running.options(num_cpus=0)
    gate_zero = threading.Event()
    gate_zero.set()
    assert lightray.get(no_cpu.remote(gate_zero, threading.Lock(), [0, 0]), timeout=20) is None
    assert running[0] == 2
    gate.set()
    assert lightray.get(waiting, timeout=20) == [None] * 4
    assert running[1] == 2


def test_pool_tasks_run_in_threads_of_the_driver_process(local):
    pid, thread = lightray.get(where.remote())
    assert pid == os.getpid() and thread != threading.get_ident()


def test_an_infeasible_request_fails_at_once(local):
    ref = where.options(num_cpus=3).remote()
    with pytest.raises(exceptions.TaskUnschedulableError, match="asks for 3.0 CPU"):
        lightray.get(ref, timeout=0)

    @lightray.remote(resources={"widget": 1})
    class NeedsWidget:
        def ping(self):
            return "pong"

    with pytest.raises(exceptions.ActorDiedError, match="widget"):
        lightray.get(NeedsWidget.remote().ping.remote(), timeout=10)


def test_runtime_context_of_each_task_is_its_own(local):
    @lightray.remote
    def context():
        ctx = lightray.get_runtime_context()
        return ctx.task_id, ctx.get_assigned_resources()

    (first, resources), (second, _) = lightray.get([context.remote(), context.remote()])
    assert first and second and first != second
    assert resources == {"CPU": 1.0}
    assert lightray.get_runtime_context().task_id is None


# ------------------------------------------------------------ retries

_attempts: list = []


@lightray.remote(max_retries=2, retry_exceptions=[KeyError])
def flaky(name):
    _attempts.append(name)
    if len(_attempts) < 3:
        raise KeyError(name)
    return len(_attempts)


@lightray.remote(max_retries=2, retry_exceptions=[KeyError])
def wrong_error():
    _attempts.append("wrong")
    raise ValueError("not retried")


def test_retry_exceptions_retries_the_listed_errors_only(local):
    _attempts.clear()
    assert lightray.get(flaky.remote("x"), timeout=20) == 3
    _attempts.clear()
    with pytest.raises(ValueError, match="not retried"):
        lightray.get(wrong_error.remote(), timeout=20)
    assert _attempts == ["wrong"]


# ------------------------------------------------------------ memory

def test_objects_no_ref_points_at_are_dropped(local):
    from lightray import runtime

    client = runtime.current_client_or_none()
    kept = lightray.put("kept")
    for i in range(200):
        lightray.get(identity.remote(lightray.put(i)))
    lightray.get(identity.remote(0))   # applies the drops queued so far
    assert len(client.objects.entries) < 10
    assert lightray.get(kept) == "kept"


# ------------------------------------------------------------ shutdown

def test_shutdown_ends_every_local_mode_thread():
    lightray.init(local_mode=True, num_cpus=2)

    @lightray.remote
    class Sync:
        def ping(self):
            return 1

    @lightray.remote
    class Async:
        async def ping(self):
            return 2

    actors = [Sync.remote(), Async.remote()]
    assert lightray.get([a.ping.remote() for a in actors] + [where.remote()])[:2] == [1, 2]
    lightray.shutdown()
    assert wait_for(lambda: not [t for t in threading.enumerate()
                                 if t.name.startswith("lightray-local")])
    with pytest.raises(exceptions.RuntimeNotRunningError):
        lightray.get(actors[0].ping.remote())


# ------------------------------------------------------------ debugging

def test_breakpoint_in_a_task_is_reached_in_the_driver_process(local, monkeypatch):
    reached = []
    monkeypatch.setattr(sys, "breakpointhook",
                        lambda *a, **k: reached.append((os.getpid(), threading.get_ident())))

    @lightray.remote
    def stops():
        breakpoint()
        return "after"

    assert lightray.get(stops.remote(), timeout=20) == "after"
    assert len(reached) == 1 and reached[0][0] == os.getpid()


def test_breakpoint_in_an_inline_task_is_reached_in_the_driver_thread(monkeypatch):
    lightray.init(local_mode=True, num_cpus=0)
    reached = []
    monkeypatch.setattr(sys, "breakpointhook",
                        lambda *a, **k: reached.append((os.getpid(), threading.get_ident())))

    @lightray.remote
    class Debugged:
        def method(self):
            breakpoint()
            return "after"

    @lightray.remote
    def stops():
        breakpoint()
        return "after"

    assert lightray.get(stops.remote()) == "after"
    assert reached == [(os.getpid(), threading.get_ident())]
    assert lightray.get(Debugged.remote().method.remote(), timeout=20) == "after"
    assert reached[1][0] == os.getpid()


def failing_helper(value):
    raise ArithmeticError(f"no good: {value}")


@lightray.remote
def fails_deep(value):
    return failing_helper(value)


def test_traceback_of_a_failing_task_shows_its_frames_and_none_of_lightrays(local):
    with pytest.raises(ArithmeticError) as caught:
        lightray.get(fails_deep.remote(7))
    text = str(caught.value)
    assert "in fails_deep" in text and "in failing_helper" in text
    assert "no good: 7" in text
    assert f"pid={os.getpid()}" in text
    assert os.path.join("lightray", "local") not in text


def test_coverage_counts_lines_inside_tasks_and_actor_methods(tmp_path):
    script = tmp_path / "covered.py"
    script.write_text(textwrap.dedent("""\
        import lightray

        @lightray.remote
        def task(x):
            if x > 0:
                return x + 1          # line 6: runs
            return -1                 # line 7: never

        @lightray.remote
        class Actor:
            def method(self, x):
                y = x * 2             # line 12: runs
                return y

            async def coroutine(self):
                return "async"        # line 16: runs

        lightray.init(local_mode=True, num_cpus=2)
        assert lightray.get(task.remote(1)) == 2
        assert lightray.get(Actor.remote().method.remote(3)) == 6

        @lightray.remote
        class AsyncActor:
            async def run(self):
                return "async"        # line 25: runs

        assert lightray.get(AsyncActor.remote().run.remote()) == "async"
        lightray.shutdown()
        """))
    env = dict(os.environ, COVERAGE_FILE=str(tmp_path / ".coverage"))
    env.pop("LIGHTRAY_LOCAL_MODE", None)
    run = subprocess.run([sys.executable, "-m", "coverage", "run", str(script)], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    data = coverage.Coverage(data_file=str(tmp_path / ".coverage"))
    data.load()
    lines = set(data.get_data().lines(str(script)))
    assert {6, 12, 13, 25} <= lines, sorted(lines)
    assert 7 not in lines and 16 not in lines


# ------------------------------------------------------------ dask

def test_dask_config_scheduler_runs_in_one_process_with_the_same_objects():
    lightray.init(local_mode=True, num_cpus=0, copy_values=False)
    shared = {"calls": []}

    def step(state, name):
        state["calls"].append(name)
        return state

    a = dask.delayed(step)(shared, "a")
    b = dask.delayed(step)(a, "b")
    with dask.config.set(scheduler=lightray.get):
        (result,) = dask.compute(b)
    assert result is shared
    assert shared["calls"] == ["a", "b"]
    assert psutil.Process().children() == []
