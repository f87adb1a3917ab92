"""Object spilling (issue 4): capacity, LRU spilling and transparent restore,
back-pressure and ObjectStoreFullError, the lifetime of spill files, and the
headline test (1.5 GB of live arrays through a 200 MiB store).

Arrays are filled with a seed-dependent pattern (``np.arange(n) + seed``), so
that each read-back can be checked against a checksum known at creation.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import psutil
import pytest
from conftest import pid_alive, wait_for

import lightray
from lightray import exceptions as lrexc
from lightray.agent.instructions import FreeSegment, Send
from lightray.agent.state import AgentState
from lightray.serialization import SHARED
from lightray.transport import messages as m
from lightray.store.shm import shm_prefix

MiB = 1 << 20
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------- helpers

def pattern(n_items, seed):
    """int64 array [seed, seed+1, ...]: a position- and seed-dependent fill."""
    return np.arange(n_items, dtype=np.int64) + seed


def pattern_sum(n_items, seed):
    return n_items * (n_items - 1) // 2 + seed * n_items


def items(nbytes):
    return nbytes // 8


def check_pattern(array, n_items, seed):
    assert array.dtype == np.int64 and array.shape == (n_items,)
    assert int(array.sum()) == pattern_sum(n_items, seed)
    for k in (0, n_items // 3, n_items - 1):
        assert int(array[k]) == k + seed


def this_session():
    """(session dir, session id) of the runtime this process started."""
    runtime = lightray.api._runtime
    return runtime.session_dir, runtime.session


def session_segments(session):
    """Names and sizes of this session's shared-memory segments in /dev/shm."""
    prefix = shm_prefix(session)      # "lr_" (or LIGHTRAY_SEGMENT_PREFIX) + session + "_"
    out = {}
    for name in os.listdir("/dev/shm"):
        if name.startswith(prefix):
            try:
                out[name] = os.stat(os.path.join("/dev/shm", name)).st_size
            except FileNotFoundError:
                pass
    return out


def files_in(directory):
    try:
        return sorted(os.listdir(directory))
    except FileNotFoundError:
        return []


def total_file_bytes(directory):
    total = 0
    for name in files_in(directory):
        try:
            total += os.stat(os.path.join(directory, name)).st_size
        except FileNotFoundError:
            pass
    return total


def states(refs):
    """ref -> its state in lightray.memory_summary()."""
    rows = {row["object_id"]: row for row in lightray.memory_summary()["objects"]}
    return [rows[r.hex()]["state"] if r.hex() in rows else None for r in refs]


def wait_spilled(ref, timeout=10.0):
    assert wait_for(lambda: states([ref])[0] == "spilled", timeout), (
        f"{ref} was not spilled within {timeout} s: {states([ref])}")


def subprocess_env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


@lightray.remote
def make_pattern(n_items, seed):
    return np.arange(n_items, dtype=np.int64) + seed


@lightray.remote
def checksum(array):
    return int(array.sum()), int(array[0]), int(array[-1])


@lightray.remote
def checksum2(a, b):
    return int(a.sum()) + int(b.sum())


@lightray.remote
def wait_for_file(path, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.path.exists(path)


def full_error_mentions(message, capacity, spill_dir):
    """ObjectStoreFullError's message gives the capacity, the usage and the spill directory."""
    assert str(capacity) in message, message
    assert "bytes in memory" in message or "holds" in message, message
    assert spill_dir in message, message


# ------------------------------------------------------------ 1. capacity

def _store_state(capacity):
    """An AgentState with one driver (no sockets, no processes)."""
    state = AgentState(node_id="node0000", session="s", resources={"CPU": 1.0},
                       pipeline_depth=4, max_workers=4, store_capacity=capacity,
                       spill_dir="/spill", spill_threshold=0.8, spilling=True,
                       segment_prefix="lr_s_")
    state.on_hello(b"driver01", "driver", 1, "")
    state.take_instructions()
    return state


def _put_granted(state, size, request_id):
    object_id = os.urandom(14) + b"\x00\x00"
    state.handle(b"driver01", [(m.RESERVE, request_id, size, object_id)])
    state.turn()
    layout = (f"lr_s_{object_id.hex()}", size, 10, ())
    state.handle(b"driver01", [(m.PUT, object_id, (SHARED, layout), [], "test.py:1")])
    state.turn()
    return object_id, layout


def _order(instructions):
    """(kind, what) of the FreeSegment and grant (INFO_REPLY ok) instructions, in order."""
    out = []
    for instruction in instructions:
        if type(instruction) is FreeSegment:
            out.append(("free", instruction.name))
        elif type(instruction) is Send:
            out += [("grant", op[1]) for op in instruction.ops
                    if op[0] == m.INFO_REPLY and op[2] == ("ok",)]
    return out


def test_room_given_back_by_a_spill_is_unlinked_before_it_is_granted_again():
    """A writer told it may write must find the room empty in /dev/shm: the
    spilled segment whose room it reuses is unlinked first (it used to go
    after the reply, and under load the writer's new segment and the old one
    were both there: the store past its capacity)."""
    state = _store_state(100 * MiB)
    first, layout = _put_granted(state, 45 * MiB, 1)
    _put_granted(state, 30 * MiB, 2)
    state.take_instructions()
    state.handle(b"driver01", [(m.RESERVE, 3, 40 * MiB, os.urandom(14) + b"\x00\x00")])
    state.turn()
    assert _order(state.take_instructions()) == []      # waits for the spill
    state.on_spill_done(first, None)
    state.turn()
    assert _order(state.take_instructions()) == [("free", layout[0]), ("grant", 3)]


def test_a_turn_that_grants_no_room_frees_segments_after_its_replies():
    """Without a grant, freeing (milliseconds for a large segment) stays
    after the replies, which readers spend working meanwhile."""
    state = _store_state(100 * MiB)
    first, layout = _put_granted(state, 45 * MiB, 1)
    state.take_instructions()
    state.handle(b"driver01", [(m.DEC, [first]), (m.INFO, 9, "store")])
    state.turn()
    instructions = state.take_instructions()
    kinds = [type(instruction) for instruction in instructions]
    assert FreeSegment in kinds and Send in kinds
    assert kinds.index(Send) < kinds.index(FreeSegment)


def test_object_store_memory_sets_the_capacity():
    lightray.init(num_cpus=1, object_store_memory=123 * MiB)
    assert lightray.memory_summary()["capacity_bytes"] == 123 * MiB


def test_env_object_store_memory_sets_the_capacity(monkeypatch):
    monkeypatch.setenv("LIGHTRAY_OBJECT_STORE_MEMORY", str(77 * MiB))
    lightray.init(num_cpus=1)
    assert lightray.memory_summary()["capacity_bytes"] == 77 * MiB


def test_default_capacity_is_30_percent_of_ram_capped_by_dev_shm(monkeypatch):
    monkeypatch.delenv("LIGHTRAY_OBJECT_STORE_MEMORY", raising=False)
    ram_share = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.3)
    st = os.statvfs("/dev/shm")
    shm_free = st.f_bavail * st.f_frsize
    lightray.init(num_cpus=1)
    capacity = lightray.memory_summary()["capacity_bytes"]
    if shm_free > 1.2 * ram_share:
        assert capacity == ram_share
    else:   # /dev/shm is the cap (its free space moves a little)
        assert capacity == pytest.approx(min(ram_share, shm_free), rel=0.1)


FALLBACK_DRIVER = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import lightray

    capacity = int(sys.argv[1])
    lightray.init(num_cpus=1, object_store_memory=capacity)
    session_dir, session = lightray.api._runtime.session_dir, lightray.api._runtime.session

    @lightray.remote
    def make(n):
        return np.arange(n, dtype=np.int64) * 3

    n = (1 << 20) // 8                      # 1 MiB
    ref = lightray.put(np.arange(n, dtype=np.int64))
    ret = make.remote(n)
    lightray.wait([ret], num_returns=1, timeout=30)
    objects_dir = os.path.join(session_dir, "objects")
    files = sorted(os.listdir(objects_dir)) if os.path.isdir(objects_dir) else []
    prefix = lightray.store.shm.shm_prefix(session)
    shm = sorted(x for x in os.listdir("/dev/shm") if x.startswith(prefix))
    value = lightray.get(ref)
    returned = lightray.get(ret)
    print(json.dumps({
        "capacity": lightray.memory_summary()["capacity_bytes"],
        "objects_dir": objects_dir, "files": files, "shm": shm,
        "put_id": ref.hex(), "ret_id": ret.hex(),
        "put_ok": bool(np.array_equal(value, np.arange(n, dtype=np.int64))),
        "ret_ok": bool(np.array_equal(returned, np.arange(n, dtype=np.int64) * 3)),
    }))
    del value, returned
    lightray.shutdown()
""")


@pytest.mark.timeout(60)
def test_capacity_above_dev_shm_free_space_keeps_objects_in_files_with_one_warning():
    st = os.statvfs("/dev/shm")
    capacity = st.f_bavail * st.f_frsize + (1 << 30)   # only a number: nothing is allocated
    res = subprocess.run([sys.executable, "-c", FALLBACK_DRIVER, str(capacity)], check=False,
                         capture_output=True, text=True, env=subprocess_env(), timeout=50,
                         cwd=REPO_ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["capacity"] == capacity
    assert out["shm"] == [], f"segments in /dev/shm although it is too small: {out['shm']}"
    assert any(out["put_id"] in name for name in out["files"]), out
    assert any(out["ret_id"] in name for name in out["files"]), out
    assert out["put_ok"] and out["ret_ok"]
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one warning line on stderr, got:\n{res.stderr}"
    assert "/dev/shm" in lines[0] and "warning" in lines[0].lower(), lines[0]


def test_enough_dev_shm_gives_no_warning_and_uses_shared_memory():
    code = textwrap.dedent("""
        import numpy as np, lightray
        lightray.init(num_cpus=1, object_store_memory=64 << 20)
        ref = lightray.put(np.ones(1 << 20, dtype=np.uint8))
        assert int(lightray.get(ref).sum()) == 1 << 20
        lightray.shutdown()
    """)
    res = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                         text=True, env=subprocess_env(), timeout=50, cwd=REPO_ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stderr.strip() == ""


# ------------------------------------------------------------ 2. spilling

def test_spilling_starts_past_80_percent_and_takes_least_recently_used_first():
    capacity = 100 * MiB
    lightray.init(num_cpus=1, object_store_memory=capacity)
    n = items(10 * MiB)
    refs = [lightray.put(pattern(n, i)) for i in range(7)]    # about 70%: no spilling
    summary = lightray.memory_summary()
    assert summary["spilled_bytes"] == 0 and summary["spilled_bytes_total"] == 0
    assert set(states(refs)) == {"in memory"}
    spill_dir = summary["spill_dir"]
    assert files_in(spill_dir) == []

    refs += [lightray.put(pattern(n, i)) for i in range(7, 9)]   # about 90%: spill
    assert wait_for(lambda: lightray.memory_summary()["used_bytes"] <= 0.8 * capacity
                    and states(refs).count("spilled") >= 1)
    summary = lightray.memory_summary()
    spilled = [i for i, s in enumerate(states(refs)) if s == "spilled"]
    assert spilled == list(range(len(spilled))), f"not least recently used first: {spilled}"
    assert summary["spilled_bytes"] > 0
    assert total_file_bytes(spill_dir) == summary["spilled_bytes"]
    assert len(files_in(spill_dir)) == len(spilled)

    # Restored transparently on get: the oldest comes back, the next oldest goes.
    check_pattern(lightray.get(refs[0]), n, 0)
    assert wait_for(lambda: states(refs)[0] == "in memory")
    assert lightray.memory_summary()["restored_bytes"] >= 10 * MiB
    for i, ref in enumerate(refs):
        check_pattern(lightray.get(ref), n, i)
    assert lightray.memory_summary()["used_bytes"] <= capacity


def test_spill_dir_option_puts_files_in_a_session_subdirectory(tmp_path):
    lightray.init(num_cpus=1, object_store_memory=40 * MiB, spill_dir=str(tmp_path))
    _, session = this_session()
    expected = os.path.join(str(tmp_path), f"lightray-spill-{session}")
    assert lightray.memory_summary()["spill_dir"] == expected
    n = items(10 * MiB)
    refs = [lightray.put(pattern(n, i)) for i in range(6)]
    wait_spilled(refs[0])
    assert files_in(expected), "no spill file in the session's spill directory"
    assert os.listdir(str(tmp_path)) == [f"lightray-spill-{session}"]
    for i, ref in enumerate(refs):
        check_pattern(lightray.get(ref), n, i)
    lightray.shutdown()
    assert not os.path.exists(expected), "spill directory not removed at shutdown"
    assert os.path.isdir(str(tmp_path)), "the user's spill_dir itself must stay"


def test_spill_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTRAY_SPILL_DIR", str(tmp_path))
    lightray.init(num_cpus=1, object_store_memory=40 * MiB)
    _, session = this_session()
    expected = os.path.join(str(tmp_path), f"lightray-spill-{session}")
    assert lightray.memory_summary()["spill_dir"] == expected
    n = items(10 * MiB)
    refs = [lightray.put(pattern(n, i)) for i in range(6)]
    wait_spilled(refs[0])
    assert files_in(expected)
    check_pattern(lightray.get(refs[0]), n, 0)
    lightray.shutdown()
    assert not os.path.exists(expected)


def test_default_spill_dir_is_inside_the_session_directory(monkeypatch):
    monkeypatch.delenv("LIGHTRAY_SPILL_DIR", raising=False)
    lightray.init(num_cpus=1, object_store_memory=40 * MiB)
    session_dir, _ = this_session()
    spill_dir = lightray.memory_summary()["spill_dir"]
    assert os.path.commonpath([spill_dir, session_dir]) == session_dir
    n = items(10 * MiB)
    refs = [lightray.put(pattern(n, i)) for i in range(6)]
    wait_spilled(refs[0])
    assert files_in(spill_dir)
    lightray.shutdown()
    assert not os.path.exists(spill_dir)


def test_a_numpy_view_held_by_the_user_stays_valid_after_its_object_is_spilled():
    lightray.init(num_cpus=1, object_store_memory=40 * MiB)
    n = items(10 * MiB)
    ref = lightray.put(pattern(n, 7))
    view = lightray.get(ref)
    check_pattern(view, n, 7)
    others = [lightray.put(pattern(n, 100 + i)) for i in range(5)]
    wait_spilled(ref)
    check_pattern(view, n, 7)                      # the same values, still readable
    check_pattern(lightray.get(ref), n, 7)         # and a fresh get restores it
    for i, other in enumerate(others):
        check_pattern(lightray.get(other), n, 100 + i)


def test_the_argument_of_a_running_task_is_not_spilled_while_others_can_be(tmp_path):
    lightray.init(num_cpus=1, object_store_memory=40 * MiB)
    gate = str(tmp_path / "gate")
    n = items(10 * MiB)

    @lightray.remote
    def hold(array, path):
        deadline = time.monotonic() + 30
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        return int(array.sum())

    x = lightray.put(pattern(n, 3))               # the least recently used...
    running = hold.remote(x, gate)
    assert wait_for(lambda: lightray.wait([running], timeout=0)[0] == [] and
                    not os.path.exists(gate))
    others = [lightray.put(pattern(n, 30 + i)) for i in range(4)]
    assert wait_for(lambda: states(others).count("spilled") >= 1)
    assert states([x]) == ["in memory"]           # ... but in use: the others go first
    open(gate, "w").close()
    assert lightray.get(running, timeout=30) == pattern_sum(n, 3)
    for i, other in enumerate(others):
        check_pattern(lightray.get(other), n, 30 + i)


def test_task_returns_are_spilled_and_restored_on_get():
    lightray.init(num_cpus=2, object_store_memory=40 * MiB)
    n = items(8 * MiB)
    refs = [make_pattern.remote(n, i) for i in range(10)]
    lightray.wait(refs, num_returns=len(refs), timeout=30)
    summary = lightray.memory_summary()
    assert summary["spilled_bytes_total"] > 0
    for i, ref in enumerate(refs):
        check_pattern(lightray.get(ref), n, i)
    assert lightray.memory_summary()["restored_bytes"] > 0


# ----------------------------------- 7. tasks with spilled arguments

def test_tasks_consume_spilled_objects_as_arguments():
    lightray.init(num_cpus=2, object_store_memory=40 * MiB)
    n = items(10 * MiB)
    refs = [lightray.put(pattern(n, i)) for i in range(6)]
    wait_spilled(refs[0])
    restored_before = lightray.memory_summary()["restored_bytes"]
    results = lightray.get([checksum.remote(ref) for ref in refs], timeout=30)
    for i, (total, first, last) in enumerate(results):
        assert (total, first, last) == (pattern_sum(n, i), i, n - 1 + i)
    assert lightray.memory_summary()["restored_bytes"] > restored_before
    # Two spilled arguments of one task, together in memory.
    a, b = lightray.put(pattern(n, 41)), lightray.put(pattern(n, 42))
    more = [lightray.put(pattern(n, 43 + i)) for i in range(4)]
    wait_spilled(a)
    wait_spilled(b)
    assert lightray.get(checksum2.remote(a, b), timeout=30) == \
        pattern_sum(n, 41) + pattern_sum(n, 42)
    assert len(more) == 4


def test_argument_spilled_while_its_task_waits_in_the_agent_queue(tmp_path, monkeypatch):
    # No pipelining: the consumer waits in the agent's queue, not on a worker.
    monkeypatch.setenv("LIGHTRAY_PIPELINE_DEPTH", "1")
    lightray.init(num_cpus=1, object_store_memory=40 * MiB)
    gate = str(tmp_path / "gate")
    n = items(10 * MiB)
    blocker = wait_for_file.remote(gate)
    x = lightray.put(pattern(n, 5))
    consumer = checksum.remote(x)
    others = [lightray.put(pattern(n, 50 + i)) for i in range(4)]
    wait_spilled(x)
    assert lightray.wait([consumer], timeout=0.2)[0] == []   # still queued
    open(gate, "w").close()
    assert lightray.get(blocker, timeout=30) is True
    assert lightray.get(consumer, timeout=30) == (pattern_sum(n, 5), 5, n - 1 + 5)
    for i, other in enumerate(others):
        check_pattern(lightray.get(other), n, 50 + i)


def test_argument_spilled_while_its_task_is_pipelined_on_a_busy_worker(tmp_path, monkeypatch):
    # Through the agent (no lease), so the consumer is pipelined behind the
    # blocker on its worker; its argument is in use, and is spilled only
    # because a producer waits and nothing else can go.
    monkeypatch.setenv("LIGHTRAY_DIRECT_SUBMIT", "0")
    lightray.init(num_cpus=1, object_store_memory=50 * MiB)
    gate = str(tmp_path / "gate")
    n = items(30 * MiB)
    blocker = wait_for_file.remote(gate)
    x = lightray.put(pattern(n, 9))
    consumer = checksum.remote(x)
    y = lightray.put(pattern(n, 10))               # waits until x is spilled
    wait_spilled(x)
    open(gate, "w").close()
    assert lightray.get(blocker, timeout=30) is True
    assert lightray.get(consumer, timeout=30) == (pattern_sum(n, 9), 9, n - 1 + 9)
    check_pattern(lightray.get(y), n, 10)
    check_pattern(lightray.get(x), n, 9)


# ------------------------------------------------------- 3. back-pressure

def test_puts_beyond_capacity_wait_and_never_fail():
    capacity = 32 * MiB
    lightray.init(num_cpus=1, object_store_memory=capacity)
    n = items(8 * MiB)
    refs, errors = {}, []

    def producer(base):
        try:
            for i in range(6):
                refs[base + i] = lightray.put(pattern(n, base + i))
        except Exception as error:  # noqa: BLE001  (reported below)
            errors.append(error)

    threads = [threading.Thread(target=producer, args=(100 * t,)) for t in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(40)
    assert not errors, errors
    assert len(refs) == 18                         # 144 MiB through a 32 MiB store
    for seed, ref in refs.items():
        check_pattern(lightray.get(ref), n, seed)
    assert lightray.memory_summary()["used_bytes"] <= capacity


def test_task_returns_beyond_capacity_wait_and_never_fail():
    lightray.init(num_cpus=2, object_store_memory=30 * MiB)
    n = items(9 * MiB)
    refs = [make_pattern.remote(n, i) for i in range(12)]
    puts = [lightray.put(pattern(n, 1000 + i)) for i in range(4)]
    for i, ref in enumerate(refs):
        check_pattern(lightray.get(ref, timeout=30), n, i)
    for i, ref in enumerate(puts):
        check_pattern(lightray.get(ref, timeout=30), n, 1000 + i)


def test_full_store_without_spilling_raises_with_capacity_usage_and_spill_dir(monkeypatch):
    monkeypatch.setenv("LIGHTRAY_SPILLING", "0")
    capacity = 64 * MiB
    lightray.init(num_cpus=1, object_store_memory=capacity)
    spill_dir = lightray.memory_summary()["spill_dir"]
    n = items(30 * MiB)
    kept = [lightray.put(pattern(n, 0)), lightray.put(pattern(n, 1))]
    start = time.monotonic()
    with pytest.raises(lrexc.ObjectStoreFullError) as info:
        lightray.put(pattern(n, 2))
    assert time.monotonic() - start < 10
    full_error_mentions(str(info.value), capacity, spill_dir)
    used = lightray.memory_summary()["used_bytes"]
    assert str(used) in str(info.value)
    # A task's return is refused too, with the same error.
    with pytest.raises(lrexc.ObjectStoreFullError):
        lightray.get(make_pattern.remote(n, 3), timeout=20)
    for i, ref in enumerate(kept):                 # nothing stored was lost
        check_pattern(lightray.get(ref), n, i)
    assert files_in(spill_dir) == []


def test_an_object_larger_than_the_store_raises_and_loses_nothing():
    capacity = 32 * MiB
    lightray.init(num_cpus=1, object_store_memory=capacity)
    spill_dir = lightray.memory_summary()["spill_dir"]
    n = items(10 * MiB)
    kept = [lightray.put(pattern(n, i)) for i in range(4)]     # one is spilled
    big = items(40 * MiB)
    start = time.monotonic()
    with pytest.raises(lrexc.ObjectStoreFullError) as info:
        lightray.put(pattern(big, 0))
    full_error_mentions(str(info.value), capacity, spill_dir)
    with pytest.raises(lrexc.ObjectStoreFullError):             # as a task's return
        lightray.get(make_pattern.remote(big, 1), timeout=20)
    with pytest.raises(lrexc.ObjectStoreFullError):             # as an implicit put
        lightray.get(checksum.remote(pattern(big, 2)), timeout=20)
    assert time.monotonic() - start < 20
    for i, ref in enumerate(kept):
        check_pattern(lightray.get(ref), n, i)
    check_pattern(lightray.get(lightray.put(pattern(n, 9))), n, 9)   # still usable


def test_a_task_whose_arguments_can_never_fit_together_fails_promptly():
    capacity = 50 * MiB
    lightray.init(num_cpus=1, object_store_memory=capacity)
    n = items(30 * MiB)
    a = lightray.put(pattern(n, 1))
    b = lightray.put(pattern(n, 2))
    start = time.monotonic()
    with pytest.raises(lrexc.ObjectStoreFullError):
        lightray.get(checksum2.remote(a, b), timeout=30)
    with pytest.raises(lrexc.ObjectStoreFullError):             # implicit puts
        lightray.get(checksum2.remote(pattern(n, 3), pattern(n, 4)), timeout=30)
    assert time.monotonic() - start < 15
    check_pattern(lightray.get(a), n, 1)
    check_pattern(lightray.get(b), n, 2)
    assert lightray.get(checksum.remote(a), timeout=30)[0] == pattern_sum(n, 1)


def test_the_error_for_arguments_that_cannot_fit_gives_capacity_usage_and_spill_dir():
    capacity = 50 * MiB
    lightray.init(num_cpus=1, object_store_memory=capacity)
    spill_dir = lightray.memory_summary()["spill_dir"]
    n = items(30 * MiB)
    a = lightray.put(pattern(n, 1))
    b = lightray.put(pattern(n, 2))
    with pytest.raises(lrexc.ObjectStoreFullError) as info:
        lightray.get(checksum2.remote(a, b), timeout=30)
    full_error_mentions(str(info.value), capacity, spill_dir)


def _put_in_thread(value):
    """Put value from a helper thread: (thread, outcome list)."""
    outcome = []

    def run():
        try:
            outcome.append(lightray.put(value))
        except BaseException as error:  # noqa: BLE001  (reported by the caller)
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _check_failing_spill_disk(spill_dir, capacity, n, must_fail=True):
    """The store fills up and the spill disk fails: no producer waits for
    ever; it gets ObjectStoreFullError promptly (required when must_fail,
    else the agent may also recover), and nothing stored is lost."""
    kept = []
    error = None
    for i in range(6):
        thread, outcome = _put_in_thread(pattern(n, i))
        thread.join(10)
        assert not thread.is_alive(), (
            f"put #{i} still waits 10 s after the spill disk failed (it should raise "
            f"ObjectStoreFullError); store: "
            f"{ {k: v for k, v in lightray.memory_summary().items() if k != 'objects'} }")
        if isinstance(outcome[0], BaseException):
            error = outcome[0]
            break
        kept.append((i, outcome[0]))
    if must_fail or error is not None:
        assert error is not None, "no ObjectStoreFullError although nothing can be spilled"
        assert isinstance(error, lrexc.ObjectStoreFullError), repr(error)
        full_error_mentions(str(error), capacity, spill_dir)
    # Nothing stored is lost: what is in memory reads back now; what was
    # spilled before the disk failed reads back once there is room for it.
    in_memory = [(i, ref) for (i, ref), state in zip(kept, states([r for _, r in kept]))
                 if state == "in memory"]
    spilled = [(i, ref) for i, ref in kept if all(ref is not r for _, r in in_memory)]
    for i, ref in in_memory:
        check_pattern(lightray.get(ref, timeout=10), n, i)
    del in_memory, kept
    for i, ref in spilled:
        check_pattern(lightray.get(ref, timeout=10), n, i)


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 12 MiB tmpfs (needs root); its spill files fill it after one object."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount_point)],
                         check=False, capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {res.stderr.strip()}")
    try:
        yield str(mount_point)
    finally:
        if lightray.is_initialized():
            lightray.shutdown()
        subprocess.run(["umount", "-l", str(mount_point)], check=False, capture_output=True)


@pytest.mark.timeout(60)
def test_full_spill_disk_raises_object_store_full_error(tiny_filesystem):
    capacity = 25 * MiB
    lightray.init(num_cpus=1, object_store_memory=capacity, spill_dir=tiny_filesystem)
    spill_dir = lightray.memory_summary()["spill_dir"]
    _check_failing_spill_disk(spill_dir, capacity, items(10 * MiB))


@pytest.mark.timeout(60)
def test_vanished_spill_directory_never_makes_a_put_wait_for_ever(tmp_path):
    capacity = 25 * MiB
    lightray.init(num_cpus=1, object_store_memory=capacity, spill_dir=str(tmp_path))
    spill_dir = lightray.memory_summary()["spill_dir"]
    os.rmdir(spill_dir)                  # the spill disk is gone: every spill fails
    # (Recreating the directory and going on is fine too; waiting for ever is not.)
    _check_failing_spill_disk(spill_dir, capacity, items(10 * MiB), must_fail=False)


# ------------------------------------------------------------ 4. lifetime

def test_a_spill_file_is_deleted_when_its_object_is_freed():
    lightray.init(num_cpus=1, object_store_memory=40 * MiB)
    spill_dir = lightray.memory_summary()["spill_dir"]
    n = items(10 * MiB)
    refs = [lightray.put(pattern(n, i)) for i in range(6)]
    wait_spilled(refs[0])
    assert files_in(spill_dir)
    del refs
    assert wait_for(lambda: files_in(spill_dir) == [], 10), files_in(spill_dir)
    summary = lightray.memory_summary()
    assert summary["spilled_bytes"] == 0 and summary["used_bytes"] == 0


CRASH_DRIVER = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    import lightray

    lightray.init(num_cpus=1, object_store_memory=40 << 20, spill_dir=sys.argv[1])
    runtime = lightray.api._runtime
    refs = [lightray.put(np.full(10 << 20, i, dtype=np.uint8)) for i in range(7)]
    deadline = time.monotonic() + 20
    while lightray.memory_summary()["spilled_bytes"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    with open(os.path.join(runtime.session_dir, "agent.pid")) as f:
        agent_pid = int(f.read())
    print(json.dumps({"session_dir": runtime.session_dir, "session": runtime.session,
                      "spill_dir": lightray.memory_summary()["spill_dir"],
                      "agent_pid": agent_pid}), flush=True)
    time.sleep(300)
""")


def _start_crash_driver(spill_root):
    proc = subprocess.Popen([sys.executable, "-c", CRASH_DRIVER, spill_root],
                            stdout=subprocess.PIPE, text=True, env=subprocess_env(),
                            cwd=REPO_ROOT)
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        proc.wait()
        pytest.fail("the driver subprocess died before spilling")
    info = json.loads(line)
    assert files_in(info["spill_dir"]), "nothing was spilled before the crash"
    assert session_segments(info["session"]), "no segment in /dev/shm before the crash"
    return proc, info


def _gone(info):
    return (not os.path.exists(info["spill_dir"]) and not session_segments(info["session"])
            and not os.path.exists(info["session_dir"]))


@pytest.mark.timeout(60)
def test_embedded_agent_cleans_up_segments_and_spill_files_when_its_driver_is_killed(tmp_path):
    proc, info = _start_crash_driver(str(tmp_path))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert wait_for(lambda: _gone(info), 10), (
        f"left behind: spill files {files_in(info['spill_dir'])}, "
        f"segments {sorted(session_segments(info['session']))}, "
        f"session dir exists: {os.path.exists(info['session_dir'])}")
    assert wait_for(lambda: not pid_alive(info["agent_pid"]), 10)


@pytest.mark.timeout(60)
def test_new_runtime_reclaims_segments_and_spill_dir_of_a_crashed_session(tmp_path):
    proc, info = _start_crash_driver(str(tmp_path))
    os.kill(info["agent_pid"], signal.SIGKILL)      # no clean-up by anyone...
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    # Until reaped (by init here) the dead agent is a zombie, which counts as
    # alive for a pid check: wait until it is gone altogether.
    assert wait_for(lambda: not psutil.pid_exists(info["agent_pid"]), 15)
    assert files_in(info["spill_dir"]) and session_segments(info["session"]), \
        "the crashed session left nothing behind: the test proves nothing"
    lightray.init(num_cpus=1)                       # ... until a new agent starts
    assert wait_for(lambda: _gone(info), 10), (
        f"left behind: spill files {files_in(info['spill_dir'])}, "
        f"segments {sorted(session_segments(info['session']))}, "
        f"session dir exists: {os.path.exists(info['session_dir'])}")
    assert os.listdir(str(tmp_path)) == []


# ----------------------------------------------------- 6. the headline test

def _build_and_check(capacity, session, spill_dir):
    """Build about 1.5 GB of live arrays (10 to 50 MiB; puts and task returns
    alternately), read each back against its checksum; returns the peak of
    the session's shared memory and the largest object."""
    rng = np.random.default_rng(2024)
    peak = [0]
    sampling = threading.Event()

    def sample():
        while not sampling.is_set():
            peak[0] = max(peak[0], sum(session_segments(session).values()))
            time.sleep(0.003)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        made = []          # (ref, n_items, fill)
        total = largest = 0
        while total < 1536 * MiB:
            nbytes = int(rng.integers(10, 51)) * MiB
            fill = 1000 * (len(made) + 1)
            if len(made) % 2:
                ref = make_pattern.remote(items(nbytes), fill)
            else:
                ref = lightray.put(pattern(items(nbytes), fill))
            made.append((ref, items(nbytes), fill))
            total += nbytes
            largest = max(largest, nbytes)
        del ref
        assert len(lightray.wait([r for r, _, _ in made], num_returns=len(made),
                                 timeout=60)[0]) == len(made)
        assert lightray.memory_summary()["spilled_bytes"] >= total - capacity
        for ref, n, fill in made:     # one at a time, each view dropped before the next
            value = lightray.get(ref, timeout=30)
            check_pattern(value, n, fill)
            del value
        del ref
    finally:
        sampling.set()
        sampler.join(5)
    return peak[0], largest


@pytest.mark.timeout(120)
def test_headline_1_5_gb_of_live_arrays_through_a_200_mb_store():
    capacity = 200 * MiB
    lightray.init(num_cpus=2, object_store_memory=capacity)
    _, session = this_session()
    spill_dir = lightray.memory_summary()["spill_dir"]
    peak, largest = _build_and_check(capacity, session, spill_dir)
    # Every segment here is the store's (no other session shares the
    # prefix), and each is written under a grant that fits the capacity,
    # after the segments whose room it reuses were unlinked: no slack.
    assert peak <= capacity, (
        f"shared memory peaked at {peak} bytes, more than the capacity {capacity} "
        f"(the largest object is {largest} bytes)")
    assert peak >= capacity // 2, f"the store was hardly used: peak {peak}"
    summary = lightray.memory_summary()
    assert summary["restored_bytes"] > 0
    # The refs are gone: the spill directory empties, and so does memory.
    assert wait_for(lambda: files_in(spill_dir) == [], 15), \
        f"spill files left after the refs are gone: {len(files_in(spill_dir))}"
    assert wait_for(lambda: not session_segments(session), 15)
    summary = lightray.memory_summary()
    assert summary["spilled_bytes"] == 0 and summary["used_bytes"] == 0
