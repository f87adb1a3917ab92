"""init/shutdown, process and shared-memory cleanup, killed drivers, examples."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import psutil
import pytest
from conftest import pid_alive, shm_entries, wait_for

import lightray

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




def subprocess_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.timeout(30)
def test_is_initialized_tracks_init_and_shutdown():
    assert not lightray.is_initialized()
    lightray.init(num_cpus=1)
    assert lightray.is_initialized()
    lightray.shutdown()
    assert not lightray.is_initialized()


@pytest.mark.timeout(30)
def test_init_returns_a_runtime_that_runs_the_first_task():
    # How fast is measured by benchmarks/microbench.py (init_first_result),
    # not asserted here.
    lightray.init(num_cpus=2)

    @lightray.remote
    def f():
        return 1

    assert lightray.get(f.remote(), timeout=20) == 1


@pytest.mark.timeout(30)
def test_second_init_raises_runtime_error():
    lightray.init(num_cpus=1)
    with pytest.raises(RuntimeError):
        lightray.init(num_cpus=1)
    assert lightray.is_initialized()


@pytest.mark.timeout(30)
def test_second_init_with_ignore_reinit_error_keeps_runtime():
    lightray.init(num_cpus=1)
    r = lightray.put("still here")
    lightray.init(num_cpus=1, ignore_reinit_error=True)
    assert lightray.is_initialized()
    assert lightray.get(r, timeout=10) == "still here"


@pytest.mark.timeout(30)
def test_init_accepts_all_documented_arguments():
    lightray.init(
        address=None,
        num_cpus=2,
        num_gpus=0,
        resources={"custom": 1},
        object_store_memory=200 * 2**20,
        namespace="tests",
        ignore_reinit_error=False,
    )

    @lightray.remote(resources={"custom": 1})
    def f():
        return "ok"

    assert lightray.get(f.remote(), timeout=20) == "ok"


@pytest.mark.timeout(30)
def test_shutdown_when_not_initialized_is_noop():
    lightray.shutdown()
    lightray.shutdown()
    assert not lightray.is_initialized()


@pytest.mark.timeout(40)
def test_init_after_shutdown_starts_fresh_runtime():
    @lightray.remote
    def f(x):
        return x + 1

    for i in range(3):
        lightray.init(num_cpus=1)
        assert lightray.get(f.remote(i), timeout=20) == i + 1
        lightray.shutdown()
        assert not lightray.is_initialized()


@pytest.mark.timeout(30)
def test_remote_after_shutdown_auto_initializes_again():
    lightray.init(num_cpus=1)

    @lightray.remote
    def f():
        return "again"

    assert lightray.get(f.remote()) == "again"
    lightray.shutdown()
    assert lightray.get(f.remote(), timeout=20) == "again"
    assert lightray.is_initialized()


@pytest.mark.timeout(30)
def test_agent_runs_as_child_process_of_driver():
    lightray.init(num_cpus=1)
    cmdlines = []
    for p in psutil.Process().children(recursive=False):
        try:
            cmdlines.append(" ".join(p.cmdline()))
        except psutil.NoSuchProcess:
            pass
    assert any("lightray.agent" in c for c in cmdlines), cmdlines


@pytest.mark.timeout(30)
def test_shutdown_terminates_agent_and_workers():
    lightray.init(num_cpus=2)

    @lightray.remote
    def busy(x):
        import time

        time.sleep(0.2)
        return x

    assert lightray.get([busy.remote(i) for i in range(4)], timeout=20) == [0, 1, 2, 3]
    sleeper = busy.remote(30)  # keep a worker busy at shutdown time
    time.sleep(0.2)
    pids = [p.pid for p in psutil.Process().children(recursive=True)]
    assert len(pids) >= 2, "expected an agent plus at least one worker"
    del sleeper
    t0 = time.monotonic()
    lightray.shutdown()
    assert wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=5), [
        p for p in pids if pid_alive(p)
    ]
    assert time.monotonic() - t0 < 6


@pytest.mark.timeout(30)
def test_shutdown_unlinks_shared_memory_segments():
    before = shm_entries()
    lightray.init(num_cpus=1)

    @lightray.remote
    def make():
        import numpy as np

        return np.ones(1 << 20, dtype=np.uint8)

    refs = [lightray.put(np.zeros(1 << 20, dtype=np.uint8)) for _ in range(3)]
    refs.append(make.remote())
    lightray.get(refs, timeout=20)
    assert shm_entries() - before, "expected lr_* segments while refs are alive"
    lightray.shutdown()  # refs still held by the test
    assert wait_for(lambda: not (shm_entries() - before), timeout=5), sorted(
        shm_entries() - before
    )


DRIVER_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    import numpy as np
    import psutil
    import lightray

    prefix = os.environ.get("LIGHTRAY_SEGMENT_PREFIX", "lr_")
    def shm_entries():
        return {n for n in os.listdir("/dev/shm") if n.startswith(prefix)}

    before = shm_entries()
    lightray.init(num_cpus=2)

    @lightray.remote
    def f(x):
        import os
        return os.getpid()

    worker_pids = lightray.get([f.remote(i) for i in range(4)])
    arr_ref = lightray.put(np.ones(1 << 20, dtype=np.uint8))
    assert lightray.get(arr_ref).sum() == 1 << 20
    segments = sorted(shm_entries() - before)
    children = [p.pid for p in psutil.Process().children(recursive=True)]
    print(json.dumps({"children": children, "workers": sorted(set(worker_pids)),
                      "segments": segments}), flush=True)
    time.sleep(120)
    """
)


@pytest.mark.timeout(60)
def test_sigkilled_driver_leaves_no_agent_workers_or_segments(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env=subprocess_env(),
    )
    info = None
    try:
        line = proc.stdout.readline()
        assert line, "driver exited early: " + proc.stderr.read()
        info = json.loads(line)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    pids = set(info["children"]) | set(info["workers"])
    assert info["children"], "driver reported no agent/worker processes"
    assert info["segments"], "driver's 1 MiB put created no lr_* segment"
    try:
        assert wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=5), (
            "still alive 5s after driver SIGKILL: %s" % [p for p in pids if pid_alive(p)]
        )
        left = [s for s in info["segments"] if os.path.exists(os.path.join("/dev/shm", s))]
        assert wait_for(
            lambda: not any(os.path.exists(os.path.join("/dev/shm", s)) for s in info["segments"]),
            timeout=5,
        ), "segments not unlinked after driver SIGKILL: %s" % left
    finally:
        for p in pids:  # these were started (indirectly) by this test
            if pid_alive(p):
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for s in info["segments"]:
            try:
                os.unlink(os.path.join("/dev/shm", s))
            except FileNotFoundError:
                pass


@pytest.mark.timeout(60)
def test_quickstart_example_runs():
    path = os.path.join(REPO_ROOT, "examples", "quickstart.py")
    if not os.path.exists(path):
        pytest.skip("examples/quickstart.py does not exist")
    res = subprocess.run(
        [sys.executable, path],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=subprocess_env(),
        timeout=50,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip(), "quickstart printed nothing"
    assert "counter after two calls: 2" in res.stdout, res.stdout


@pytest.mark.timeout(45)
def test_a_full_store_without_spilling_raises_object_store_full_error(monkeypatch):
    from lightray import exceptions as lrexc

    monkeypatch.setenv("LIGHTRAY_SPILLING", "0")
    lightray.init(num_cpus=1, object_store_memory=64 * 2**20)
    held = []
    with pytest.raises(lrexc.ObjectStoreFullError, match="spilling is turned off"):
        for _ in range(4):  # 4 x 30 MiB, all kept alive, cannot fit in 64 MiB
            held.append(lightray.put(np.zeros(30 * 2**20, dtype=np.uint8)))
    assert len(held) == 2
    assert all(int(lightray.get(ref)[0]) == 0 for ref in held)   # nothing stored was lost


@pytest.mark.timeout(30)
def test_shutdown_with_running_and_queued_tasks_is_prompt():
    lightray.init(num_cpus=1)

    @lightray.remote
    def sleepy(i):
        import time

        time.sleep(20)
        return i

    refs = [sleepy.remote(i) for i in range(5)]
    time.sleep(0.5)
    pids = [p.pid for p in psutil.Process().children(recursive=True)]
    t0 = time.monotonic()
    lightray.shutdown()
    assert time.monotonic() - t0 < 5
    assert wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=5)
    del refs
