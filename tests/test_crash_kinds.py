"""Every way a worker can die mid-task is retried, then reported as WorkerCrashedError."""
import os
import signal

import pytest

import lightray
from lightray import exceptions


def _crash(how: str) -> None:
    if how == "segfault":
        import ctypes
        ctypes.string_at(0)          # reads address 0: SIGSEGV
    elif how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "os_exit":
        os._exit(3)
    elif how == "abort":
        os.abort()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["segfault", "sigkill", "os_exit", "abort"])
def test_worker_death_exhausts_retries_then_raises_worker_crashed(runtime, how):
    @lightray.remote(max_retries=1)
    def dies():
        _crash(how)

    with pytest.raises(exceptions.WorkerCrashedError) as info:
        lightray.get(dies.remote(), timeout=30)
    message = str(info.value)
    assert "dies()" in message
    assert "2 attempt(s)" in message


@pytest.mark.timeout(60)
def test_segfault_on_first_attempt_is_retried_and_succeeds(runtime, tmp_path):
    marker = tmp_path / "attempted"

    @lightray.remote
    def flaky(path):
        if not os.path.exists(path):
            open(path, "w").close()
            _crash("segfault")
        return "second attempt"

    assert lightray.get(flaky.remote(str(marker)), timeout=30) == "second attempt"
