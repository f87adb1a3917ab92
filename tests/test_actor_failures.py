"""Actor failures: lightray.kill, exceptions in __init__ and in methods, the
actor's process dying (max_restarts) and calls in flight when it dies
(max_task_retries)."""
import os
import signal
import time

import numpy as np
import pytest
from conftest import attempts, available_cpus, pid_alive, wait_for

import lightray
from lightray import exceptions

pytestmark = pytest.mark.both_modes


def new_pid_after_restart(handle, old_pid, timeout=20.0):
    """Call handle.pid until the restarted actor answers; calls that reached the
    dead process before the caller heard of its death may fail meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = lightray.get(handle.pid.remote(), timeout=timeout)
        except exceptions.ActorDiedError:
            time.sleep(0.05)
            continue
        if pid != old_pid:
            return pid
        time.sleep(0.05)
    raise AssertionError(f"the actor did not come back after pid {old_pid} was killed")


@lightray.remote
class Phoenix:
    """Counts its constructions (characters in a file) and its calls."""

    def __init__(self, path, payload=None):
        with open(path, "a") as f:
            f.write("x")
        self.count = 0
        self.payload_total = None if payload is None else float(payload.sum())

    def payload(self):
        return self.payload_total

    def inc(self):
        self.count += 1
        return self.count

    def pid(self):
        return os.getpid()

    def sleep(self, started, seconds):
        open(started, "w").close()
        time.sleep(seconds)
        return "slept"

    def slow_first_attempt(self, path):
        """Sleeps 5 s on its first attempt only; returns (attempt, pid)."""
        with open(path, "a") as f:
            f.write("x")
        attempt = attempts(path)
        if attempt == 1:
            time.sleep(5)
        return attempt, os.getpid()


# -------------------------------------------------------------------------- kill


@pytest.mark.process_only("kills or watches the actor's process")
@pytest.mark.timeout(40)
def test_kill_fails_pending_and_later_calls_with_actor_died_error(runtime, tmp_path):
    started = str(tmp_path / "started")
    actor = Phoenix.options(max_restarts=1).remote(str(tmp_path / "built"))
    pid = lightray.get(actor.pid.remote(), timeout=20)
    running = actor.sleep.remote(started, 10)
    queued = [actor.inc.remote() for _ in range(3)]
    assert wait_for(lambda: os.path.exists(started))
    t0 = time.monotonic()
    lightray.kill(actor)
    for ref in [running] + queued:
        with pytest.raises(exceptions.ActorDiedError):
            lightray.get(ref, timeout=20)
    assert time.monotonic() - t0 < 8, "the running call must fail at kill, not when it ends"
    with pytest.raises(exceptions.ActorDiedError):
        lightray.get(actor.inc.remote(), timeout=20)
    # kill() means no restart, even with restarts left.
    assert wait_for(lambda: not pid_alive(pid)), f"actor process {pid} still running"
    assert attempts(str(tmp_path / "built")) == 1
    with pytest.raises(exceptions.ActorDiedError):
        lightray.get(actor.pid.remote(), timeout=20)


@pytest.mark.process_only("kills or watches the actor's process")
@pytest.mark.timeout(40)
def test_kill_from_a_task_fails_the_drivers_pending_calls(runtime, tmp_path):
    started = str(tmp_path / "started")

    @lightray.remote
    def kill_it(actor):
        lightray.kill(actor)
        return "killed"

    actor = Phoenix.remote(str(tmp_path / "built"))
    pid = lightray.get(actor.pid.remote(), timeout=20)
    running = actor.sleep.remote(started, 10)
    assert wait_for(lambda: os.path.exists(started))
    assert lightray.get(kill_it.remote(actor), timeout=20) == "killed"
    with pytest.raises(exceptions.ActorDiedError):
        lightray.get(running, timeout=8)
    with pytest.raises(exceptions.ActorDiedError):
        lightray.get(actor.inc.remote(), timeout=20)
    assert wait_for(lambda: not pid_alive(pid)), f"actor process {pid} still running"


# -------------------------------------------------------------------- exceptions


@pytest.mark.timeout(30)
def test_exception_in_init_makes_every_call_raise_actor_died_error(runtime):
    @lightray.remote
    class BrokenConfig:
        def __init__(self, key):
            self.value = {}[key]

        def read(self):
            return self.value

    actor = BrokenConfig.remote("missing-setting-42")
    for ref in [actor.read.remote(), actor.read.remote()]:
        with pytest.raises(exceptions.ActorDiedError) as ei:
            lightray.get(ref, timeout=20)
        assert "missing-setting-42" in str(ei.value)
        assert isinstance(ei.value.cause, KeyError)
        assert "missing-setting-42" in str(ei.value.cause)
    with pytest.raises(exceptions.ActorDiedError):
        lightray.get(actor.read.remote(), timeout=20)


@pytest.mark.timeout(30)
def test_exception_in_method_is_task_error_and_the_actor_lives_on(runtime):
    @lightray.remote
    class Account:
        def __init__(self):
            self.balance = 10

        def withdraw(self, amount):
            if amount > self.balance:
                raise ValueError(f"cannot withdraw {amount}, balance is {self.balance}")
            self.balance -= amount
            return self.balance

        def pid(self):
            return os.getpid()

    account = Account.remote()
    pid = lightray.get(account.pid.remote(), timeout=20)
    assert lightray.get(account.withdraw.remote(3), timeout=20) == 7
    with pytest.raises(ValueError) as ei:
        lightray.get(account.withdraw.remote(100), timeout=20)
    assert isinstance(ei.value, exceptions.TaskError)
    assert isinstance(ei.value.cause, ValueError)
    assert "cannot withdraw 100, balance is 7" in str(ei.value)
    assert lightray.get(account.withdraw.remote(2), timeout=20) == 5
    assert lightray.get(account.pid.remote(), timeout=20) == pid


# ------------------------------------------------------------ the process dies


@pytest.mark.process_only("kills or watches the actor's process")
@pytest.mark.timeout(45)
def test_killed_actor_process_restarts_until_restarts_are_used_up(runtime, tmp_path):
    built = str(tmp_path / "built")
    payload = np.ones(50_000)     # a constructor argument in shared memory
    actor = Phoenix.options(max_restarts=1, num_cpus=1).remote(built, payload)
    assert lightray.get([actor.inc.remote() for _ in range(3)], timeout=20) == [1, 2, 3]
    first_pid = lightray.get(actor.pid.remote(), timeout=20)
    assert wait_for(lambda: available_cpus() == 1.0)

    os.kill(first_pid, signal.SIGKILL)
    second_pid = new_pid_after_restart(actor, first_pid)
    assert second_pid != first_pid
    assert attempts(built) == 2, "the constructor runs again on restart"
    assert lightray.get(actor.payload.remote(), timeout=20) == 50_000.0
    assert lightray.get(actor.inc.remote(), timeout=20) == 1, "state starts afresh"
    assert lightray.get(actor.inc.remote(), timeout=20) == 2
    assert available_cpus() == 1.0, "the restarted actor still holds its CPU"

    os.kill(second_pid, signal.SIGKILL)
    assert wait_for(lambda: not pid_alive(second_pid))
    with pytest.raises(exceptions.ActorDiedError):
        lightray.get(actor.inc.remote(), timeout=20)
    with pytest.raises(exceptions.ActorDiedError):
        lightray.get(actor.pid.remote(), timeout=20)
    assert attempts(built) == 2, "no restart left"
    assert wait_for(lambda: available_cpus() == 2.0), lightray.available_resources()


@pytest.mark.process_only("kills or watches the actor's process")
@pytest.mark.timeout(45)
def test_kill_with_no_restart_false_restarts_the_actor(runtime, tmp_path):
    built = str(tmp_path / "built")
    actor = Phoenix.options(max_restarts=1).remote(built)
    assert lightray.get(actor.inc.remote(), timeout=20) == 1
    first_pid = lightray.get(actor.pid.remote(), timeout=20)
    lightray.kill(actor, no_restart=False)
    assert new_pid_after_restart(actor, first_pid) != first_pid
    assert attempts(built) == 2
    assert lightray.get(actor.inc.remote(), timeout=20) == 1


@pytest.mark.process_only("kills or watches the actor's process")
@pytest.mark.timeout(45)
def test_call_in_flight_when_the_process_dies_is_retried_with_max_task_retries(
        runtime, tmp_path):
    calls = str(tmp_path / "calls")
    actor = Phoenix.options(max_restarts=1, max_task_retries=1).remote(str(tmp_path / "built"))
    first_pid = lightray.get(actor.pid.remote(), timeout=20)
    ref = actor.slow_first_attempt.remote(calls)
    assert wait_for(lambda: attempts(calls) == 1)
    # Calls behind the one in flight are retried too, in their order.
    behind = [actor.inc.remote() for _ in range(3)]
    os.kill(first_pid, signal.SIGKILL)
    attempt, pid = lightray.get(ref, timeout=30)
    assert attempt == 2
    assert pid != first_pid
    assert attempts(calls) == 2
    assert lightray.get(behind, timeout=20) == [1, 2, 3]
    assert lightray.get(actor.inc.remote(), timeout=20) == 4


@pytest.mark.process_only("kills or watches the actor's process")
@pytest.mark.timeout(45)
def test_call_in_flight_when_the_process_dies_fails_without_task_retries(runtime, tmp_path):
    calls = str(tmp_path / "calls")
    actor = Phoenix.options(max_restarts=1).remote(str(tmp_path / "built"))
    first_pid = lightray.get(actor.pid.remote(), timeout=20)
    ref = actor.slow_first_attempt.remote(calls)
    assert wait_for(lambda: attempts(calls) == 1)
    os.kill(first_pid, signal.SIGKILL)
    with pytest.raises(exceptions.ActorDiedError):
        lightray.get(ref, timeout=30)
    # The actor itself restarted (max_restarts=1); the call was not retried.
    assert new_pid_after_restart(actor, first_pid) != first_pid
    assert attempts(calls) == 1
