"""ObjectRef is future-like, as concurrent.futures.Future: result, exception,
done, cancel, cancelled, add_done_callback, and as_future (Ray's name)."""
import concurrent.futures
import os
import threading
import time

import pytest

import lightray
from conftest import wait_for_file


@lightray.remote
def wait_for_gate_then_return(gate, value):
    # Polls a file the test creates: the task stays pending until the test says.
    deadline = time.monotonic() + 60
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise RuntimeError("the test never opened the gate")
        time.sleep(0.01)
    return value


@lightray.remote
def raise_value_error(message):
    raise ValueError(message)


@lightray.remote
def announce_then_wait_for_gate(started, gate):
    open(started, "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise RuntimeError("the test never opened the gate")
        time.sleep(0.01)
    return "finished"


def open_gate(gate):
    open(gate, "w").close()


@pytest.mark.timeout(60)
def test_result_returns_the_value_and_waits_for_it(runtime, tmp_path):
    gate = str(tmp_path / "gate")
    ref = wait_for_gate_then_return.remote(gate, 41)
    assert not ref.done()
    open_gate(gate)
    assert ref.result() == 41
    assert ref.done()
    assert ref.result(timeout=5) == 41


@pytest.mark.timeout(60)
def test_result_with_timeout_raises_timeout_error_while_pending(runtime, tmp_path):
    gate = str(tmp_path / "gate")
    ref = wait_for_gate_then_return.remote(gate, 1)
    with pytest.raises(TimeoutError):
        ref.result(timeout=0)
    with pytest.raises(concurrent.futures.TimeoutError):
        ref.exception(timeout=0)
    open_gate(gate)
    assert ref.result() == 1


@pytest.mark.timeout(60)
def test_result_raises_the_task_error_and_exception_returns_it(runtime):
    ref = raise_value_error.remote("bad block")
    with pytest.raises(ValueError, match="bad block"):
        ref.result()
    error = ref.exception()
    assert isinstance(error, ValueError)
    assert isinstance(error, lightray.exceptions.TaskError)
    assert "bad block" in str(error)
    assert ref.done()
    assert not ref.cancelled()


@pytest.mark.timeout(60)
def test_exception_of_a_successful_task_is_none(runtime):
    ref = lightray.put([1, 2, 3])
    assert ref.exception() is None
    assert ref.exception(timeout=0) is None


@pytest.mark.timeout(60)
def test_cancel_of_a_finished_task_returns_false_and_keeps_the_value(runtime):
    ref = lightray.put("kept")
    assert ref.done()
    assert ref.cancel() is False
    assert not ref.cancelled()
    assert ref.result() == "kept"


@pytest.mark.timeout(60)
def test_cancel_of_a_running_task_returns_true_and_result_raises_cancelled_error(
        runtime, tmp_path):
    started, gate = str(tmp_path / "started"), str(tmp_path / "gate")
    ref = announce_then_wait_for_gate.remote(started, gate)
    assert wait_for_file(started)
    assert ref.cancel() is True
    with pytest.raises(concurrent.futures.CancelledError):
        ref.result()
    with pytest.raises(lightray.exceptions.TaskCancelledError):
        ref.result()
    assert ref.done()
    assert ref.cancelled()
    with pytest.raises(concurrent.futures.CancelledError):
        ref.exception()


@pytest.mark.timeout(60)
def test_add_done_callback_is_called_with_the_ref_once_ready(runtime, tmp_path):
    gate = str(tmp_path / "gate")
    ref = wait_for_gate_then_return.remote(gate, "value")
    seen, called = [], threading.Event()

    def on_done(done_ref):
        seen.append((done_ref is ref, done_ref.result()))
        called.set()

    ref.add_done_callback(on_done)
    assert not called.is_set()
    open_gate(gate)
    assert called.wait(30)
    assert seen == [(True, "value")]


@pytest.mark.timeout(60)
def test_add_done_callback_on_a_ready_ref_is_called_at_once(runtime):
    ref = lightray.put(7)
    seen = []
    ref.add_done_callback(lambda r: seen.append(r.result()))
    assert seen == [7]


@pytest.mark.timeout(60)
def test_add_done_callback_is_called_for_a_failed_task_too(runtime):
    ref = raise_value_error.remote("boom")
    called = threading.Event()
    errors = []

    def on_done(done_ref):
        errors.append(done_ref.exception())
        called.set()

    ref.add_done_callback(on_done)
    assert called.wait(30)
    assert isinstance(errors[0], ValueError)


@pytest.mark.timeout(60)
def test_a_raising_done_callback_is_logged_and_others_still_run(runtime, caplog):
    ref = lightray.put(1)
    seen = []

    def broken(_ref):
        raise RuntimeError("callback bug")

    with caplog.at_level("ERROR", logger="lightray.object_ref"):
        ref.add_done_callback(broken)
        ref.add_done_callback(lambda r: seen.append(r.result()))
    assert seen == [1]
    assert any("exception calling callback" in r.getMessage() for r in caplog.records)


def test_add_done_callback_refuses_a_non_callable(runtime):
    ref = lightray.put(1)
    with pytest.raises(TypeError, match="callable"):
        ref.add_done_callback("not a function")


@pytest.mark.timeout(60)
def test_as_future_returns_a_concurrent_future_resolving_to_the_value(runtime, tmp_path):
    gate = str(tmp_path / "gate")
    ref = wait_for_gate_then_return.remote(gate, {"a": 1})
    future = ref.as_future()
    assert isinstance(future, concurrent.futures.Future)
    assert not future.done()
    open_gate(gate)
    assert future.result(timeout=30) == {"a": 1}
    assert isinstance(ref.future(), concurrent.futures.Future)


@pytest.mark.timeout(60)
def test_as_future_of_a_failed_task_holds_its_error(runtime):
    future = raise_value_error.remote("in future").as_future()
    assert isinstance(future.exception(timeout=30), ValueError)


def test_object_ref_tokenizes_deterministically_for_dask(runtime):
    dask_base = pytest.importorskip("dask.base")
    ref = lightray.put(3)
    assert dask_base.tokenize(ref) == dask_base.tokenize(ref)
    assert dask_base.tokenize(ref) != dask_base.tokenize(lightray.put(3))
