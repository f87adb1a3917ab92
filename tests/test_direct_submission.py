"""Direct submission: a driver holding a worker lease sends tasks to it without the agent.

Every behaviour of a task must be the same on the direct path; these tests
first make sure a lease is held, so the task under test really goes direct.
"""
import os
import signal
import time

import numpy as np
import pytest
from conftest import shm_entries

import lightray
from lightray import exceptions
from lightray.runtime import current_client_or_none


@lightray.remote
def echo(value):
    return value


@lightray.remote
def add_one(value):
    return value + 1


def hold_lease():
    """Run small tasks until the driver holds a lease, as a get() loop does."""
    direct = current_client_or_none().direct
    deadline = time.monotonic() + 10
    while not direct.book.leases and time.monotonic() < deadline:
        lightray.get(echo.remote(0))
    assert direct.book.leases, "the driver never got a lease"
    return direct


@pytest.mark.timeout(30)
def test_get_loop_takes_the_direct_path_and_returns_values(runtime):
    direct = hold_lease()
    assert [lightray.get(add_one.remote(i)) for i in range(50)] == list(range(1, 51))
    assert direct.book.leases


@pytest.mark.timeout(30)
def test_pending_direct_result_passed_to_another_task_is_promised_then_fulfilled(runtime):
    hold_lease()

    @lightray.remote
    def slow(value):
        time.sleep(0.3)
        return value

    first = slow.remote(41)          # direct, still running
    second = add_one.remote(first)   # needs the agent to know `first`
    assert lightray.get(second, timeout=20) == 42
    assert lightray.get(first) == 41


@pytest.mark.timeout(30)
def test_finished_direct_result_nested_in_a_list_reaches_another_task(runtime):
    hold_lease()
    ref = add_one.remote(1)
    assert lightray.get(ref) == 2

    @lightray.remote
    def unwrap(refs):
        return lightray.get(refs[0]) * 10

    assert lightray.get(unwrap.remote([ref]), timeout=20) == 20


@pytest.mark.timeout(30)
def test_large_direct_result_is_in_shared_memory_and_freed_with_its_ref(runtime):
    hold_lease()
    before = shm_entries()

    @lightray.remote
    def big():
        return np.ones(2_000_000)

    ref = big.remote()
    array = lightray.get(ref, timeout=20)
    assert array.sum() == 2_000_000 and not array.flags.writeable
    assert shm_entries() - before
    del ref, array
    deadline = time.monotonic() + 5
    while shm_entries() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (shm_entries() - before)


@pytest.mark.timeout(60)
def test_direct_task_whose_worker_is_killed_is_retried(runtime, tmp_path):
    hold_lease()
    marker = tmp_path / "killed-once"

    @lightray.remote
    def dies_once(path):
        if not os.path.exists(path):
            open(path, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return "survived"

    assert lightray.get(dies_once.remote(str(marker)), timeout=30) == "survived"


@pytest.mark.timeout(60)
def test_direct_task_without_retries_raises_worker_crashed(runtime):
    hold_lease()

    @lightray.remote(max_retries=0)
    def dies():
        os._exit(1)

    with pytest.raises(exceptions.WorkerCrashedError):
        lightray.get(dies.remote(), timeout=30)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("force", [False, True])
def test_running_direct_task_can_be_cancelled(runtime, force):
    hold_lease()

    @lightray.remote
    def sleeps():
        time.sleep(30)

    ref = sleeps.remote()
    time.sleep(0.5)
    lightray.cancel(ref, force=force)
    with pytest.raises(exceptions.TaskCancelledError):
        lightray.get(ref, timeout=20)
    assert lightray.get(add_one.remote(1), timeout=20) == 2


@pytest.mark.timeout(30)
def test_exception_from_direct_task_keeps_its_type(runtime):
    hold_lease()

    @lightray.remote
    def fails():
        raise KeyError("missing")

    with pytest.raises(KeyError):
        lightray.get(fails.remote(), timeout=20)


@pytest.mark.timeout(30)
def test_every_task_goes_through_the_agent_when_direct_submission_is_off(monkeypatch):
    monkeypatch.setenv("LIGHTRAY_DIRECT_SUBMIT", "0")
    lightray.init(num_cpus=2)
    assert current_client_or_none().direct is None
    assert [lightray.get(add_one.remote(i)) for i in range(20)] == list(range(1, 21))

