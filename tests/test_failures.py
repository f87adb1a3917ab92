"""Task errors, timeouts, worker crashes and retries, cancellation."""
import os
import time

import pytest
from conftest import attempts, wait_for_file

import lightray
from lightray import exceptions as lrexc

pytestmark = pytest.mark.both_modes


@pytest.mark.timeout(10)
def test_exception_classes_exist_with_expected_hierarchy():
    for name in (
        "TaskError",
        "GetTimeoutError",
        "WorkerCrashedError",
        "TaskCancelledError",
        "ObjectLostError",
        "ObjectStoreFullError",
    ):
        cls = getattr(lrexc, name)
        assert isinstance(cls, type) and issubclass(cls, Exception), name
    assert issubclass(lrexc.GetTimeoutError, TimeoutError)


@pytest.mark.timeout(30)
def test_task_exception_is_task_error_and_original_type(runtime, tmp_path):
    pidfile = str(tmp_path / "pid")

    @lightray.remote
    def exploding_function(pidfile):
        import os

        with open(pidfile, "w") as f:
            f.write(str(os.getpid()))
        raise ValueError("boom 1234")

    ref = exploding_function.remote(pidfile)
    with pytest.raises(ValueError) as ei:
        lightray.get(ref, timeout=20)
    err = ei.value
    assert isinstance(err, lrexc.TaskError)
    assert isinstance(err.cause, ValueError)
    assert not isinstance(err.cause, lrexc.TaskError)
    assert "boom 1234" in str(err.cause)
    text = str(err)
    assert "exploding_function" in text
    assert "Traceback" in text
    assert "boom 1234" in text
    with open(pidfile) as f:
        worker_pid = f.read().strip()
    assert worker_pid in text, f"worker pid {worker_pid} not in error message:\n{text}"


@pytest.mark.timeout(30)
def test_task_exception_can_be_caught_as_task_error(runtime):
    @lightray.remote
    def bad():
        return {}["missing"]

    with pytest.raises(lrexc.TaskError) as ei:
        lightray.get(bad.remote(), timeout=20)
    assert isinstance(ei.value, KeyError)
    assert isinstance(ei.value.cause, KeyError)


@pytest.mark.timeout(30)
def test_custom_exception_type_is_preserved(runtime):
    class QuotaExceeded(RuntimeError):
        pass

    @lightray.remote
    def f():
        raise QuotaExceeded("over quota")

    with pytest.raises(QuotaExceeded) as ei:
        lightray.get(f.remote(), timeout=20)
    assert isinstance(ei.value, lrexc.TaskError)
    assert type(ei.value.cause).__name__ == "QuotaExceeded"
    assert "over quota" in str(ei.value)


@pytest.mark.timeout(30)
def test_exception_in_dependency_propagates_to_dependent_task(runtime):
    @lightray.remote
    def fails():
        raise ZeroDivisionError("upstream")

    @lightray.remote
    def consumer(x):
        return x + 1

    with pytest.raises(ZeroDivisionError) as ei:
        lightray.get(consumer.remote(fails.remote()), timeout=20)
    assert isinstance(ei.value, lrexc.TaskError)
    assert "upstream" in str(ei.value)


@pytest.mark.timeout(30)
def test_runtime_keeps_working_after_task_exception(runtime):
    @lightray.remote
    def maybe_fail(x):
        if x % 2:
            raise ValueError(x)
        return x

    refs = [maybe_fail.remote(i) for i in range(6)]
    for i, r in enumerate(refs):
        if i % 2:
            with pytest.raises(ValueError):
                lightray.get(r, timeout=20)
        else:
            assert lightray.get(r, timeout=20) == i


@pytest.mark.timeout(30)
def test_get_timeout_raises_get_timeout_error(runtime):
    @lightray.remote
    def sleepy():
        import time

        time.sleep(20)

    ref = sleepy.remote()
    t0 = time.monotonic()
    with pytest.raises(lrexc.GetTimeoutError) as ei:
        lightray.get(ref, timeout=0.5)
    elapsed = time.monotonic() - t0
    assert isinstance(ei.value, TimeoutError)
    assert 0.4 <= elapsed < 5


@pytest.mark.timeout(30)
def test_get_timeout_zero_on_pending_ref_raises_immediately(runtime):
    @lightray.remote
    def sleepy():
        import time

        time.sleep(20)

    ref = sleepy.remote()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        lightray.get([lightray.put(1), ref], timeout=0)
    assert time.monotonic() - t0 < 3


@pytest.mark.process_only("kills or exits worker processes")
@pytest.mark.timeout(45)
def test_worker_killed_mid_task_is_retried(runtime, tmp_path):
    counter = str(tmp_path / "attempts")

    @lightray.remote
    def crash_once(counter):
        import os
        import signal

        with open(counter, "a") as f:
            f.write("x")
        with open(counter) as f:
            n = len(f.read())
        if n == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return n

    assert lightray.get(crash_once.remote(counter), timeout=40) == 2
    assert attempts(counter) == 2


@pytest.mark.process_only("kills or exits worker processes")
@pytest.mark.timeout(45)
def test_worker_os_exit_mid_task_is_retried(runtime, tmp_path):
    counter = str(tmp_path / "attempts")

    @lightray.remote(max_retries=2)
    def exit_twice(counter):
        import os

        with open(counter, "a") as f:
            f.write("x")
        with open(counter) as f:
            n = len(f.read())
        if n <= 2:
            os._exit(1)
        return "ok"

    assert lightray.get(exit_twice.remote(counter), timeout=40) == "ok"
    assert attempts(counter) == 3


@pytest.mark.process_only("kills or exits worker processes")
@pytest.mark.timeout(30)
def test_worker_killed_with_max_retries_zero_raises_worker_crashed(runtime, tmp_path):
    counter = str(tmp_path / "attempts")

    @lightray.remote(max_retries=0)
    def die(counter):
        import os
        import signal

        with open(counter, "a") as f:
            f.write("x")
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(lrexc.WorkerCrashedError):
        lightray.get(die.remote(counter), timeout=20)
    assert attempts(counter) == 1


@pytest.mark.process_only("kills or exits worker processes")
@pytest.mark.timeout(30)
def test_os_exit_in_task_with_max_retries_zero_raises_worker_crashed(runtime):
    @lightray.remote
    def bail():
        import os

        os._exit(1)

    with pytest.raises(lrexc.WorkerCrashedError):
        lightray.get(bail.options(max_retries=0).remote(), timeout=20)


@pytest.mark.process_only("kills or exits worker processes")
@pytest.mark.timeout(60)
def test_always_crashing_task_retried_three_times_by_default(runtime, tmp_path):
    counter = str(tmp_path / "attempts")

    @lightray.remote
    def always_die(counter):
        import os
        import signal

        with open(counter, "a") as f:
            f.write("x")
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(lrexc.WorkerCrashedError):
        lightray.get(always_die.remote(counter), timeout=50)
    assert attempts(counter) == 4  # 1 attempt + max_retries=3


@pytest.mark.process_only("kills or exits worker processes")
@pytest.mark.timeout(45)
def test_runtime_keeps_working_after_worker_crash(runtime):
    @lightray.remote(max_retries=0)
    def die():
        import os

        os._exit(3)

    @lightray.remote
    def ok(x):
        return x * 2

    with pytest.raises(lrexc.WorkerCrashedError):
        lightray.get(die.remote(), timeout=20)
    assert lightray.get([ok.remote(i) for i in range(4)], timeout=20) == [0, 2, 4, 6]


@pytest.mark.timeout(30)
def test_user_exception_is_not_retried_by_default(runtime, tmp_path):
    counter = str(tmp_path / "attempts")

    @lightray.remote(max_retries=3)
    def flaky(counter):
        with open(counter, "a") as f:
            f.write("x")
        raise RuntimeError("flaky")

    with pytest.raises(RuntimeError):
        lightray.get(flaky.remote(counter), timeout=20)
    time.sleep(0.3)
    assert attempts(counter) == 1


@pytest.mark.timeout(45)
def test_retry_exceptions_true_retries_user_exceptions(runtime, tmp_path):
    counter = str(tmp_path / "attempts")

    @lightray.remote(max_retries=3, retry_exceptions=True)
    def flaky(counter):
        with open(counter, "a") as f:
            f.write("x")
        with open(counter) as f:
            n = len(f.read())
        if n < 3:
            raise RuntimeError(f"attempt {n}")
        return n

    assert lightray.get(flaky.remote(counter), timeout=40) == 3
    assert attempts(counter) == 3


@pytest.mark.timeout(45)
def test_retry_exceptions_gives_up_after_max_retries(runtime, tmp_path):
    counter = str(tmp_path / "attempts")

    @lightray.remote
    def always_fails(counter):
        with open(counter, "a") as f:
            f.write("x")
        raise RuntimeError("nope")

    ref = always_fails.options(max_retries=2, retry_exceptions=True).remote(counter)
    with pytest.raises(RuntimeError) as ei:
        lightray.get(ref, timeout=40)
    assert isinstance(ei.value, lrexc.TaskError)
    assert attempts(counter) == 3


@pytest.mark.timeout(45)
def test_cancel_queued_task_raises_task_cancelled_error(start_runtime, tmp_path):
    start_runtime(num_cpus=1)
    started = str(tmp_path / "started")

    @lightray.remote
    def blocker(started):
        import time

        open(started, "w").close()
        time.sleep(3)
        return "blocker"

    @lightray.remote
    def queued():
        return "should not run"

    b = blocker.remote(started)
    assert wait_for_file(started)
    q = queued.remote()
    lightray.cancel(q)
    t0 = time.monotonic()
    with pytest.raises(lrexc.TaskCancelledError):
        lightray.get(q, timeout=20)
    assert time.monotonic() - t0 < 10
    assert lightray.get(b, timeout=20) == "blocker"


@pytest.mark.process_only("a thread in time.sleep(30) sees an interrupt only after the sleep: local mode's cancel tests are in test_local_mode.py")
@pytest.mark.timeout(45)
def test_force_cancel_of_running_task_raises_task_cancelled_error(runtime, tmp_path):
    started = str(tmp_path / "started")

    @lightray.remote
    def long_sleep(started):
        import time

        open(started, "w").close()
        time.sleep(30)
        return "finished"

    ref = long_sleep.remote(started)
    assert wait_for_file(started)
    t0 = time.monotonic()
    lightray.cancel(ref, force=True)
    with pytest.raises(lrexc.TaskCancelledError) as ei:
        lightray.get(ref, timeout=20)
    assert not isinstance(ei.value, lrexc.WorkerCrashedError)
    assert time.monotonic() - t0 < 10


@pytest.mark.process_only("a thread in time.sleep(30) sees an interrupt only after the sleep: local mode's cancel tests are in test_local_mode.py")
@pytest.mark.timeout(45)
def test_cancel_of_running_task_delivers_keyboard_interrupt(runtime, tmp_path):
    started = str(tmp_path / "started")
    interrupted = str(tmp_path / "interrupted")

    @lightray.remote
    def long_sleep(started, interrupted):
        import time

        open(started, "w").close()
        try:
            time.sleep(30)
        except KeyboardInterrupt:
            open(interrupted, "w").close()
            raise
        return "finished"

    ref = long_sleep.remote(started, interrupted)
    assert wait_for_file(started)
    t0 = time.monotonic()
    lightray.cancel(ref)
    with pytest.raises(lrexc.TaskCancelledError):
        lightray.get(ref, timeout=20)
    assert time.monotonic() - t0 < 10
    assert wait_for_file(interrupted, timeout=5), "task did not see KeyboardInterrupt"


@pytest.mark.process_only("a thread in time.sleep(30) sees an interrupt only after the sleep: local mode's cancel tests are in test_local_mode.py")
@pytest.mark.timeout(45)
def test_runtime_usable_after_force_cancel(runtime, tmp_path):
    started = str(tmp_path / "started")

    @lightray.remote
    def long_sleep(started):
        import time

        open(started, "w").close()
        time.sleep(30)

    @lightray.remote
    def ok():
        return "ok"

    ref = long_sleep.remote(started)
    assert wait_for_file(started)
    lightray.cancel(ref, force=True)
    with pytest.raises(lrexc.TaskCancelledError):
        lightray.get(ref, timeout=20)
    assert lightray.get([ok.remote() for _ in range(3)], timeout=20) == ["ok"] * 3


@pytest.mark.process_only("kills or exits worker processes")
@pytest.mark.timeout(45)
def test_worker_killed_externally_mid_task_is_retried(runtime, tmp_path):
    import signal

    counter = str(tmp_path / "attempts")
    pidfile = str(tmp_path / "pid")

    @lightray.remote
    def slow_first_attempt(counter, pidfile):
        import os
        import time

        with open(counter, "a") as f:
            f.write("x")
        with open(counter) as f:
            n = len(f.read())
        if n == 1:
            with open(pidfile + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.rename(pidfile + ".tmp", pidfile)
            time.sleep(30)
        return n

    ref = slow_first_attempt.remote(counter, pidfile)
    assert wait_for_file(pidfile)
    with open(pidfile) as f:
        os.kill(int(f.read()), signal.SIGKILL)
    assert lightray.get(ref, timeout=30) == 2


@pytest.mark.process_only("kills or exits worker processes")
@pytest.mark.timeout(45)
def test_crash_in_nested_task_surfaces_as_worker_crashed_in_driver(runtime):
    @lightray.remote(max_retries=0)
    def child():
        import os

        os._exit(7)

    @lightray.remote(max_retries=0)
    def parent():
        import lightray as lr

        return lr.get(child.remote())

    with pytest.raises(lrexc.WorkerCrashedError):
        lightray.get(parent.remote(), timeout=30)
