"""Half-written objects: a segment whose writer dies before sealing it is
unlinked and its reservation given back, and a periodic sweep reclaims
segments of the session that nobody holds or writes, so that /dev/shm holds
exactly what the store reports (lightray.agent.segments).

Writers here are real driver processes attached to a real agent, killed with
SIGKILL: while a segment is half written (held there by the script), and at
random moments of a loop of large puts.
"""
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import lightray
from conftest import wait_for, wait_for_file
from cluster_utils import REPO
from lightray.agent import instructions as i
from lightray.agent.state import AgentState
from lightray.ids import IdMaker
from lightray.serialization import SHARED
from lightray.transport import messages as m

MB = 1 << 20
PREFIX = "lr_s_"
ids = IdMaker()

# A driver that attaches to the agent and puts arrays of SIZE bytes. With
# HOLD set, its first put stops half way through writing its segment (the
# store granted the room, part of the bytes are in /dev/shm), says so in the
# file HOLD, and waits to be killed.
DRIVER = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    import lightray
    from lightray.store import shm

    address, size, hold, progress = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if hold != "-":
        real_write = shm._write_all
        def write_half_then_wait(fd, data, offset):
            view = memoryview(data).cast("B")
            real_write(fd, view[:len(view) // 2], offset)
            with open(hold, "w") as f:
                f.write("half")
            while True:
                time.sleep(1)
        shm._write_all = write_half_then_wait
    lightray.init(address=address)
    kept = []
    for n in range(1000):
        kept.append(lightray.put(np.full(size // 8, n, dtype=np.int64)))
        with open(progress, "a") as f:
            f.write(".")
        if len(kept) > 1:
            kept.pop(0)
""")


def start_driver(address, size, hold, progress):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    return subprocess.Popen([sys.executable, "-c", DRIVER, address, str(size), hold, progress],
                            env=env, stdin=subprocess.DEVNULL)


def segment_prefix():
    return lightray.api._client_for_submission().node_info["segment_prefix"]


def segments_on_disk(prefix):
    """(name, size) of every segment of the agent's store in /dev/shm."""
    found = []
    for name in os.listdir("/dev/shm"):
        if name.startswith(prefix):
            try:
                found.append((name, os.stat(os.path.join("/dev/shm", name)).st_size))
            except FileNotFoundError:
                pass
    return found


def store_agrees_with_dev_shm(prefix):
    """The store's in-memory and warm bytes are exactly what /dev/shm holds,
    and no room is reserved for a writer that is gone."""
    summary = lightray.memory_summary()
    on_disk = sum(size for _, size in segments_on_disk(prefix))
    return (summary["reserved_bytes"] == 0
            and summary["used_bytes"] + summary["warm_bytes"] == on_disk)


def kill(process):
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


@pytest.fixture
def agent(own_cluster):
    """One real agent (sweeping every 0.3 s) and this process attached to it."""
    node = own_cluster.add_node(head=True, num_cpus=1, env={"LIGHTRAY_SEGMENT_SWEEP_S": "0.3"})
    lightray.init(address=node.address)
    return node


@pytest.mark.timeout(120)
def test_a_driver_killed_half_way_through_a_put_leaves_no_segment_and_no_reservation(
        agent, tmp_path):
    prefix = segment_prefix()
    for attempt in range(3):
        hold = str(tmp_path / f"hold{attempt}")
        driver = start_driver(agent.address, 64 * MB, hold, str(tmp_path / f"progress{attempt}"))
        try:
            assert wait_for_file(hold, timeout=30)
            # The half-written segment is in /dev/shm, its room reserved.
            assert segments_on_disk(prefix)
            assert lightray.memory_summary()["reserved_bytes"] >= 64 * MB
        finally:
            kill(driver)
        assert wait_for(lambda: not segments_on_disk(prefix)), segments_on_disk(prefix)
        assert wait_for(lambda: store_agrees_with_dev_shm(prefix))
        assert lightray.memory_summary()["used_bytes"] == 0


@pytest.mark.timeout(120)
def test_drivers_killed_at_random_moments_of_large_puts_leave_dev_shm_equal_to_the_store(
        agent, tmp_path):
    prefix = segment_prefix()
    rng = random.Random(14)
    mine = lightray.put(bytes(4 * MB))        # a live object: must survive everything
    for attempt in range(6):
        progress = tmp_path / f"progress{attempt}"
        driver = start_driver(agent.address, 200 * MB, "-", str(progress))
        try:
            assert wait_for(lambda: progress.exists() and progress.stat().st_size >= 1,
                            timeout=30)
            # Somewhere in the loop: mid-write, between puts, or mid-reservation.
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            kill(driver)
        assert wait_for(lambda: store_agrees_with_dev_shm(prefix)), (
            lightray.memory_summary(), segments_on_disk(prefix))
    assert len(lightray.get(mine)) == 4 * MB
    assert prefix + mine.binary().hex() in {name for name, _ in segments_on_disk(prefix)}


def test_the_sweep_reclaims_a_segment_nobody_holds_and_spares_live_writers_and_objects(
        agent, tmp_path):
    prefix = segment_prefix()
    kept = lightray.put(bytes(2 * MB))
    hold = str(tmp_path / "hold")
    writer = start_driver(agent.address, 8 * MB, hold, str(tmp_path / "progress"))
    try:
        assert wait_for_file(hold, timeout=30)
        (writing,) = [name for name, _ in segments_on_disk(prefix)
                      if name != prefix + kept.binary().hex()]
        # What a writer whose death went unnoticed leaves: a segment with an
        # object's name that the object table does not know.
        orphan = prefix + os.urandom(16).hex()
        with open(os.path.join("/dev/shm", orphan), "wb") as f:
            f.write(b"x" * 4096)
        assert wait_for(lambda: not os.path.exists(os.path.join("/dev/shm", orphan)))
        # Swept at least once since both were there: the live writer's
        # half-written segment and the stored object stayed.
        names = {name for name, _ in segments_on_disk(prefix)}
        assert writing in names and prefix + kept.binary().hex() in names
        assert lightray.get(kept) == bytes(2 * MB)
    finally:
        kill(writer)
    assert wait_for(lambda: not os.path.exists(os.path.join("/dev/shm", writing)))
    assert wait_for(lambda: store_agrees_with_dev_shm(prefix))


def test_a_sweep_period_that_is_not_a_positive_number_is_refused_at_start(monkeypatch):
    from lightray import config

    for bad in ("0", "-1", "nan", "soon"):
        monkeypatch.setenv("LIGHTRAY_SEGMENT_SWEEP_S", bad)
        with pytest.raises(ValueError, match="LIGHTRAY_SEGMENT_SWEEP_S"):
            config.segment_sweep_seconds()


# ------------------------------------------- the bookkeeping, without processes

@pytest.fixture
def state():
    agent = AgentState(node_id="node0000", session="s", resources={"CPU": 1.0},
                       pipeline_depth=1, max_workers=2, store_capacity=100 * MB,
                       spill_dir="/spill", spill_threshold=0.8, spilling=True,
                       segment_prefix=PREFIX)
    for n, client in enumerate((b"writer01", b"writer02")):
        agent.on_hello(client, "driver", 10 + n, "")
    agent.take_instructions()
    return agent


def granted(agent, client, size=10 * MB):
    object_id = ids.task_id() + b"\x00\x00"
    agent.handle(client, [(m.RESERVE, 1, size, object_id)])
    agent.turn()
    return object_id


def freed(agent):
    return [x.name for x in agent.take_instructions() if type(x) is i.FreeSegment]


def test_a_writers_death_unlinks_the_segments_it_was_granted_and_never_sealed(state):
    sealed, unsealed = granted(state, b"writer01"), granted(state, b"writer01")
    layout = (PREFIX + sealed.hex(), 10 * MB, 10, ())
    state.handle(b"writer01", [(m.PUT, sealed, (SHARED, layout), [], None)])
    state.take_instructions()
    assert state.store.reserved == 10 * MB
    state.on_client_gone(b"writer01")
    # (the sealed one goes too: its only holder died)
    assert sorted(freed(state)) == sorted([PREFIX + unsealed.hex(), PREFIX + sealed.hex()])
    assert state.store.reserved == 0


def test_room_given_back_by_a_writer_that_could_not_write_is_no_longer_its_segment(state):
    object_id = granted(state, b"writer01")
    state.handle(b"writer01", [(m.RESERVE, 0, -10 * MB, object_id)])
    state.on_client_gone(b"writer01")
    assert freed(state) == [] and state.store.reserved == 0


def test_the_sweep_takes_only_names_nobody_holds_writes_or_copies(state):
    stored = granted(state, b"writer01")
    layout = (PREFIX + stored.hex(), 10 * MB, 10, ())
    state.handle(b"writer01", [(m.PUT, stored, (SHARED, layout), [], None)])
    writing = granted(state, b"writer02")
    orphan, orphan_pull = os.urandom(16).hex(), os.urandom(16).hex()
    names = [PREFIX + stored.hex(), PREFIX + writing.hex(), PREFIX + orphan,
             PREFIX + orphan_pull + ".pulling", PREFIX + stored.hex() + ".restoring",
             PREFIX + "pool7", PREFIX + "not-an-object"]
    assert sorted(state.store.orphan_segments(names)) == sorted(
        [PREFIX + orphan, PREFIX + orphan_pull + ".pulling"])
    # Once its writer is gone, what it was writing is no one's either.
    state.on_client_gone(b"writer02")
    assert freed(state) == [PREFIX + writing.hex()]
