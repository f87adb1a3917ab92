"""Local mode (issue 17): cancel, actors in threads of their own, and the kv backend.

Force-cancel in local mode: a thread cannot be killed, so force=True fails
the task's refs with TaskCancelledError at once, gives its resources back,
never retries it and leaves KeyboardInterrupt pending in its thread (it lands
when the thread next runs Python code). These tests block tasks on events
they set themselves: nothing here depends on timing.
"""
import asyncio
import os
import threading
import time

import pytest
from conftest import wait_for

import lightray
from lightray import exceptions, runtime
from lightray.local.kv import LocalKV


@pytest.fixture
def shared():
    """A local-mode runtime handing tasks the very objects (events, lists)."""
    lightray.init(local_mode=True, num_cpus=2, copy_values=False)
    yield lightray
    lightray.shutdown()


@lightray.remote
def wait_for_gate(gate, log):
    log.append("started")
    try:
        gate.wait(timeout=30)
    except KeyboardInterrupt:
        log.append("interrupted")
        raise
    log.append("finished")
    return "finished"


@lightray.remote
def spin_until(gate, log):
    log.append("started")
    try:
        while not gate.is_set():
            time.sleep(0.005)
    except KeyboardInterrupt:
        log.append("interrupted")
        raise
    return "finished"


@lightray.remote
def note(log, item):
    log.append(item)
    return item


# ------------------------------------------------------------------ cancel

def test_cancelled_queued_task_never_runs():
    lightray.init(local_mode=True, num_cpus=1, copy_values=False)
    gate, log, queued_log = threading.Event(), [], []
    blocker = wait_for_gate.remote(gate, log)
    assert wait_for(lambda: log == ["started"])
    queued = note.remote(queued_log, "ran")
    lightray.cancel(queued)
    with pytest.raises(exceptions.TaskCancelledError, match="before it started"):
        lightray.get(queued, timeout=10)
    gate.set()
    assert lightray.get(blocker, timeout=10) == "finished"
    assert lightray.get(note.remote(log, "after"), timeout=10) == "after"
    assert queued_log == []


def test_cancel_of_a_running_task_raises_keyboard_interrupt_in_its_thread(shared):
    gate, log = threading.Event(), []
    ref = spin_until.remote(gate, log)
    assert wait_for(lambda: log == ["started"])
    lightray.cancel(ref)
    with pytest.raises(exceptions.TaskCancelledError, match="cancelled while running"):
        lightray.get(ref, timeout=10)
    assert log == ["started", "interrupted"]
    assert lightray.available_resources() == {"CPU": 2.0}


def test_cancel_reaches_a_task_blocked_in_get(shared):
    gate, log, inner_log = threading.Event(), [], []

    @lightray.remote
    def outer():
        log.append("started")
        try:
            return lightray.get(spin_until.remote(gate, inner_log))
        except KeyboardInterrupt:
            log.append("interrupted")
            raise

    ref = outer.remote()
    assert wait_for(lambda: log == ["started"] and inner_log == ["started"])
    lightray.cancel(ref)
    with pytest.raises(exceptions.TaskCancelledError):
        lightray.get(ref, timeout=10)
    assert log == ["started", "interrupted"]
    gate.set()


def test_force_cancel_fails_the_ref_at_once_frees_its_cpu_and_never_retries(shared):
    gate, log = threading.Event(), []
    # Blocked in C (Event.wait): the interrupt cannot land before the wait returns.
    ref = wait_for_gate.options(max_retries=3, retry_exceptions=True).remote(gate, log)
    assert wait_for(lambda: log == ["started"])
    assert lightray.available_resources() == {"CPU": 1.0}
    lightray.cancel(ref, force=True)
    with pytest.raises(exceptions.TaskCancelledError, match="force-cancelled"):
        lightray.get(ref, timeout=10)
    assert lightray.available_resources() == {"CPU": 2.0}
    assert lightray.get(note.remote([], "next"), timeout=10) == "next"
    gate.set()
    assert wait_for(lambda: log == ["started", "interrupted"])
    with pytest.raises(exceptions.TaskCancelledError):
        lightray.get(ref, timeout=10)
    assert log == ["started", "interrupted"], "a force-cancelled task was retried"
    assert lightray.available_resources() == {"CPU": 2.0}


@pytest.mark.parametrize("recursive", [True, False])
def test_cancel_of_a_parent_reaches_the_tasks_it_submitted_only_when_recursive(
        shared, recursive):
    gate, log, children = threading.Event(), [], []

    @lightray.remote
    def parent():
        children.extend(spin_until.remote(gate, log) for _ in range(2))
        return lightray.get(children)

    ref = parent.remote()
    assert wait_for(lambda: log == ["started", "started"])
    lightray.cancel(ref, recursive=recursive)
    with pytest.raises(exceptions.TaskCancelledError):
        lightray.get(ref, timeout=10)
    if recursive:
        for child in children:
            with pytest.raises(exceptions.TaskCancelledError):
                lightray.get(child, timeout=10)
        assert log == ["started", "started", "interrupted", "interrupted"]
    else:
        assert lightray.wait(children, num_returns=2, timeout=0)[0] == []
        gate.set()
        assert lightray.get(children, timeout=10) == ["finished", "finished"]
    gate.set()


# ------------------------------------------------------------------ actors

def actor_threads(class_name: str) -> list:
    return [t for t in threading.enumerate()
            if t.name.startswith(f"lightray-local-actor-{class_name}")]


@lightray.remote
class Where:
    def __init__(self):
        self.born_in = threading.get_ident()

    def thread(self):
        return self.born_in, threading.get_ident(), os.getpid()


@lightray.remote(max_concurrency=2)
class Meeting:
    def __init__(self):
        self.barrier = threading.Barrier(2)

    def meet(self):
        # Returns only once two calls wait here at the same time.
        return self.barrier.wait(timeout=20) in (0, 1)


@lightray.remote
class Loop:
    async def which(self):
        await asyncio.sleep(0)
        return id(asyncio.get_running_loop()), threading.get_ident()


def test_each_actor_runs_in_a_thread_of_its_own_in_the_driver_process(shared):
    first, second = Where.remote(), Where.remote()
    a1, a2, b = lightray.get([first.thread.remote(), first.thread.remote(),
                              second.thread.remote()], timeout=20)
    assert a1 == a2 and a1[0] == a1[1], "a sync actor runs every call in its one thread"
    assert a1[1] != b[1] != threading.get_ident()
    assert a1[2] == b[2] == os.getpid()


def test_threaded_actor_runs_max_concurrency_calls_at_once(shared):
    meeting = Meeting.remote()
    assert lightray.get([meeting.meet.remote(), meeting.meet.remote()], timeout=30) == [True] * 2


def test_async_actors_each_run_on_their_own_event_loop(shared):
    first, second = Loop.remote(), Loop.remote()
    (loop1, thread1), (loop1b, thread1b), (loop2, thread2) = lightray.get(
        [first.which.remote(), first.which.remote(), second.which.remote()], timeout=20)
    assert (loop1, thread1) == (loop1b, thread1b)
    assert loop1 != loop2 and thread1 != thread2 != threading.get_ident()


@lightray.remote(num_cpus=1)
class Busy:
    def __init__(self):
        self.calls = 0

    def block(self, gate, log):
        log.append("started")
        while not gate.is_set():
            time.sleep(0.005)
        return "done"

    def count(self):
        self.calls += 1
        return self.calls


def test_kill_fails_running_and_queued_calls_and_frees_the_actors_resources(shared):
    gate, log = threading.Event(), []
    busy = Busy.remote()
    running = busy.block.remote(gate, log)
    assert wait_for(lambda: log == ["started"])
    queued = busy.count.remote()
    assert lightray.available_resources() == {"CPU": 1.0}
    lightray.kill(busy)
    for ref in (running, queued):
        with pytest.raises(exceptions.ActorDiedError, match="killed"):
            lightray.get(ref, timeout=10)
    with pytest.raises(exceptions.ActorDiedError):
        lightray.get(busy.count.remote(), timeout=10)
    assert lightray.available_resources() == {"CPU": 2.0}
    assert wait_for(lambda: not actor_threads("Busy")), "the killed call's thread lives on"
    assert log == ["started"]


def test_kill_without_no_restart_starts_a_new_instance(shared):
    busy = Busy.options(max_restarts=1).remote()
    assert lightray.get([busy.count.remote(), busy.count.remote()], timeout=10) == [1, 2]
    lightray.kill(busy, no_restart=False)
    assert lightray.get(busy.count.remote(), timeout=10) == 1
    lightray.kill(busy, no_restart=False)       # no restarts left
    with pytest.raises(exceptions.ActorDiedError):
        lightray.get(busy.count.remote(), timeout=10)
    assert wait_for(lambda: not actor_threads("Busy")), "a thread of an ended instance lives on"


def test_an_actor_whose_handles_are_gone_finishes_its_calls_then_stops(shared):
    def threads():
        return actor_threads("Busy")

    busy = Busy.remote()
    refs = [busy.count.remote() for _ in range(5)]
    handle_object = busy._lr_ref._id
    del busy
    assert lightray.get(refs, timeout=10) == [1, 2, 3, 4, 5]
    lightray.get(note.remote([], "drain"))        # applies the dropped handle
    counts = runtime.current_client_or_none().objects.counts
    assert wait_for(lambda: not threads()), (threads(), counts.get(handle_object))


def test_named_detached_actor_outlives_its_handles_and_is_found_by_name(shared):
    Busy.options(name="keeper", lifetime="detached").remote().count.remote()
    lightray.get(note.remote([], "drain"))
    found = lightray.get_actor("keeper")
    assert lightray.get(found.count.remote(), timeout=10) == 2
    with pytest.raises(ValueError, match="taken"):
        Busy.options(name="keeper").remote()
    lightray.kill(found)
    with pytest.raises(ValueError, match="no live actor named 'keeper'"):
        lightray.get_actor("keeper")


def test_a_failing_constructor_kills_the_actor_with_its_cause(shared):
    @lightray.remote
    class Broken:
        def __init__(self):
            raise LookupError("no config")

        def ping(self):
            return "pong"

    with pytest.raises(exceptions.ActorDiedError, match="no config") as caught:
        lightray.get(Broken.remote().ping.remote(), timeout=10)
    assert isinstance(caught.value.cause, LookupError)


# ------------------------------------------------------------------ kv backend

def test_kv_backend_put_get_delete_and_overwrite():
    kv = LocalKV()
    assert kv.get("ns", "a", True, None) is None
    assert kv.put("ns", "a", b"1", True, None) is True
    assert kv.put("ns", "a", b"2", False, None) is False
    assert kv.get("ns", "a", True, None) == b"1"
    assert kv.put("ns", "a", b"3", True, None) is True
    assert kv.get("other", "a", True, None) is None, "namespaces are apart"
    assert kv.delete("ns", "a", None) is True
    assert kv.delete("ns", "a", None) is False
    assert kv.get("ns", "a", False, 1.0) is None


def test_kv_backend_lists_keys_by_prefix_sorted():
    kv = LocalKV()
    for key in ("job/2", "job/1", "other", "jobs"):
        kv.put("ns", key, b"x", True, None)
    kv.put("elsewhere", "job/3", b"x", True, None)
    assert kv.list("ns", "job/", True, None) == ["job/1", "job/2"]
    assert kv.list("ns", "", False, None) == ["job/1", "job/2", "jobs", "other"]


def test_kv_backend_compare_and_set():
    kv = LocalKV()
    assert kv.compare_and_set("ns", "k", None, b"first", None) is True
    assert kv.compare_and_set("ns", "k", None, b"again", None) is False
    assert kv.compare_and_set("ns", "k", b"wrong", b"x", None) is False
    assert kv.compare_and_set("ns", "k", b"first", b"second", None) is True
    assert kv.get("ns", "k", True, None) == b"second"
    assert kv.compare_and_set("ns", "k", b"second", None, None) is True
    assert kv.get("ns", "k", True, None) is None


def test_kv_backend_compare_and_set_is_atomic_across_threads():
    kv = LocalKV()
    kv.put("ns", "n", b"0", True, None)

    def add(times):
        for _ in range(times):
            while True:
                now = kv.get("ns", "n", True, None)
                if kv.compare_and_set("ns", "n", now, str(int(now) + 1).encode(), None):
                    break

    threads = [threading.Thread(target=add, args=(300,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert kv.get("ns", "n", True, None) == b"2400"


@pytest.mark.parametrize("call, error", [
    (lambda kv: kv.put("ns", 1, b"x", True, None), TypeError),
    (lambda kv: kv.put(None, "k", b"x", True, None), TypeError),
    (lambda kv: kv.put("ns", "k", "text", True, None), TypeError),
    (lambda kv: kv.get("ns", "k", True, -1), ValueError),
    (lambda kv: kv.compare_and_set("ns", "k", "old", b"new", None), TypeError),
], ids=["key-int", "namespace-none", "value-str", "timeout-negative", "expected-str"])
def test_kv_backend_refuses_bad_input_naming_it(call, error):
    with pytest.raises(error):
        call(LocalKV())


def test_local_client_serves_one_kv_backend_while_it_runs():
    lightray.init(local_mode=True, num_cpus=1)
    client = runtime.client_for_submission()
    backend = client.kv_backend()
    backend.put("ns", "k", b"v", True, None)
    assert client.kv_backend().get("ns", "k", True, None) == b"v"
    lightray.shutdown()
    with pytest.raises(exceptions.RuntimeNotRunningError):
        client.kv_backend()
