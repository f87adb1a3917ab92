"""A task whose arguments are being produced on one worker is queued right
behind its producer there, and takes the results from that worker directly.

Whatever happens to the producer (a retried exception, a killed worker, an
error), the dependent must see exactly what it would have seen through the
agent.
"""
import os
import signal

import pytest

import lightray
from lightray import exceptions


@lightray.remote
def inc(x):
    return x + 1


@lightray.remote
def fails_once(path, value):
    if not os.path.exists(path):
        open(path, "w").close()
        raise ConnectionError("transient")
    return value


@lightray.remote
def killed_once(path, value):
    if not os.path.exists(path):
        open(path, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return value


@lightray.remote
def boom():
    raise ValueError("producer failed")


@pytest.mark.timeout(60)
def test_long_chain_of_dependent_tasks_gives_the_right_result(runtime):
    ref = inc.remote(0)
    for _ in range(499):
        ref = inc.remote(ref)
    assert lightray.get(ref, timeout=50) == 500


@pytest.mark.timeout(60)
def test_dependent_of_a_retried_producer_sees_the_retry_result(runtime, tmp_path):
    first = fails_once.options(retry_exceptions=True).remote(str(tmp_path / "once"), 10)
    chained = inc.remote(inc.remote(first))
    assert lightray.get(chained, timeout=30) == 12


@pytest.mark.timeout(60)
def test_dependents_of_a_producer_whose_worker_dies_still_complete(runtime, tmp_path):
    first = killed_once.remote(str(tmp_path / "once"), 20)
    chained = inc.remote(inc.remote(first))
    assert lightray.get(chained, timeout=30) == 22


@pytest.mark.timeout(60)
def test_dependent_of_a_failed_producer_raises_the_producer_error(runtime):
    with pytest.raises(ValueError, match="producer failed") as info:
        lightray.get(inc.remote(boom.remote()), timeout=30)
    assert isinstance(info.value, exceptions.TaskError)
