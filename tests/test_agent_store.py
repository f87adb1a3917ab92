"""The store's bookkeeping in AgentState (lightray.agent.store, state.store), driven without sockets:
reservations, what gets spilled, restores, and freeing during copies.

Segments here are only layouts: nothing is written, the SpillIO jobs the
state asks for are checked and their completion is fed back by hand.
"""
import pickle

import pytest

from lightray import task_spec as ts
from lightray.agent.state import AgentState
from lightray.states import RESTORING, SPILLED, SPILLING
from lightray.ids import IdMaker, return_ids
from lightray.serialization import SHARED
from lightray.agent.instructions import RestoreJob as RESTORE, SpillJob as SPILL
from lightray.transport import messages as m

DRIVER = b"driver01"
MB = 1 << 20
ids = IdMaker()


@pytest.fixture
def state():
    agent = AgentState(node_id="node0000", session="s", resources={"CPU": 2.0},
                       pipeline_depth=4, max_workers=8, store_capacity=100 * MB,
                       spill_dir="/spill", spill_threshold=0.8, spilling=True,
                       segment_prefix="lr_s_")
    agent.on_hello(DRIVER, "driver", 1, "")
    agent.initial_workers(1)
    for pid, worker_id in enumerate(agent.effects.spawn, start=100):
        agent.on_spawned(worker_id, pid)
        agent.on_hello(worker_id.encode(), "worker", pid, worker_id)
    agent.effects.spawn.clear()
    agent.effects.outbox.clear()
    return agent


def replies(agent, identity=DRIVER + b"r"):
    out = [op for op in agent.effects.outbox.get(identity, []) if op[0] == m.INFO_REPLY]
    agent.effects.outbox.clear()
    return out


def reserve(agent, size, request_id=1, object_id=None):
    object_id = object_id or ids.task_id() + b"\x00\x00"
    agent.handle(DRIVER, [(m.RESERVE, request_id, size, object_id)])
    agent.store.work()
    return replies(agent)


def put(agent, size):
    """A put of size bytes, reserved first; returns its object id."""
    object_id = ids.task_id() + b"\x00\x00"
    assert reserve(agent, size, object_id=object_id) == [(m.INFO_REPLY, 1, ("ok",))]
    layout = (f"lr_s_{object_id.hex()}", size, 10, ())
    agent.handle(DRIVER, [(m.PUT, object_id, (SHARED, layout), [], "test.py:1")])
    agent.store.work()
    return object_id


def jobs(agent, kind):
    found = [job for job in agent.effects.io_jobs if type(job) is kind]
    agent.effects.io_jobs[:] = [job for job in agent.effects.io_jobs if type(job) is not kind]
    return found


def spill_files_of(object_id, paths):
    return [path for path in paths if path.startswith(f"/spill/{object_id.hex()}.")]


def test_puts_under_the_threshold_are_granted_at_once_and_nothing_spills(state):
    for _ in range(3):
        put(state, 20 * MB)
    assert state.store.used == 60 * MB and state.store.reserved == 0
    assert state.effects.io_jobs == []


def test_passing_the_threshold_spills_the_least_recently_used_object(state):
    first, _second, _third = (put(state, 30 * MB) for _ in range(3))
    (job,) = jobs(state, SPILL)           # 90 MB > 80 MB: one 30 MB object must go
    assert job.object_id == first and job.path.startswith(f"/spill/{first.hex()}.")
    assert state.objects[first].spill == SPILLING
    state.on_spill_done(first, None)
    assert state.objects[first].spill == SPILLED
    assert state.store.used == 60 * MB and state.store.spilled_now == 30 * MB
    assert f"lr_s_{first.hex()}" in state.effects.free_segments   # the segment is unlinked


def test_holders_are_told_to_drop_their_mappings_of_a_spilled_object(state):
    first = put(state, 50 * MB)
    put(state, 40 * MB)
    (_job,) = jobs(state, SPILL)
    state.effects.outbox.clear()
    state.on_spill_done(first, None)
    assert (m.SPILLED, [first]) in state.effects.outbox[DRIVER + b"r"]


def test_a_reservation_that_does_not_fit_waits_for_spilling_then_is_granted(state):
    first = put(state, 45 * MB)
    put(state, 30 * MB)
    # 75 MB in memory: 40 MB more does not fit in 100 MB; the writer waits.
    assert reserve(state, 40 * MB, request_id=7) == []
    (job,) = jobs(state, SPILL)
    assert job.object_id == first
    state.on_spill_done(first, None)
    state.store.work()
    assert replies(state) == [(m.INFO_REPLY, 7, ("ok",))]
    assert state.store.reserved == 40 * MB


def test_an_object_larger_than_the_store_is_refused_with_capacity_usage_and_spill_dir(state):
    put(state, 10 * MB)
    (reply,) = reserve(state, 101 * MB)
    outcome, message = reply[2]
    assert outcome == "full"
    assert "larger than the whole object store" in message
    assert str(100 * MB) in message and str(10 * MB) in message and "/spill" in message


def test_with_spilling_off_a_full_store_refuses_at_once(state):
    state.store.spilling = False
    put(state, 60 * MB)
    (reply,) = reserve(state, 50 * MB)
    assert reply[2][0] == "full" and "spilling is turned off" in reply[2][1]


def test_a_failed_spill_write_keeps_the_object_and_refuses_waiting_writers(state):
    first = put(state, 50 * MB)
    put(state, 40 * MB)
    assert reserve(state, 30 * MB, request_id=9) == []
    (_job,) = jobs(state, SPILL)
    state.on_spill_done(first, OSError(28, "No space left on device"))
    assert state.objects[first].spill is None          # still in memory, nothing lost
    assert state.effects.free_segments == []
    state.store.lru.clear()   # nothing else left to try
    state.store.work()
    (reply,) = replies(state)
    assert reply[1] == 9 and reply[2][0] == "full" and "No space left" in reply[2][1]


def test_restore_is_asked_for_and_answered_with_the_same_layout(state):
    first = put(state, 50 * MB)
    put(state, 40 * MB)
    (_job,) = jobs(state, SPILL)
    state.on_spill_done(first, None)
    layout = state.objects[first].payload
    state.handle(DRIVER, [(m.RESTORE, 5, first)])
    state.store.work()
    (restore,) = jobs(state, RESTORE)
    assert restore.object_id == first and restore.layout == layout[1]
    assert state.objects[first].spill == RESTORING
    state.on_restore_done(first, None)
    assert replies(state) == [(m.INFO_REPLY, 5, ("ok", layout))]
    assert state.objects[first].spill is None and state.store.restored_total == 50 * MB
    assert spill_files_of(first, state.effects.free_files)


def test_an_object_spilled_again_before_its_old_file_is_removed_gets_a_new_file(state):
    # Restored, then chosen for spilling again before the agent's turn ends: the
    # old file is only queued for removal, so the new copy must not share its
    # name (the spill thread would refuse it, or delete it once written).
    first = put(state, 50 * MB)
    second = put(state, 40 * MB)
    (old_spill,) = jobs(state, SPILL)
    state.on_spill_done(first, None)
    state.handle(DRIVER, [(m.RESTORE, 5, first)])
    state.store.work()
    jobs(state, RESTORE)
    state.on_restore_done(first, None)
    replies(state)
    state.store.work()                    # 90 MB: the other one goes
    (other,) = jobs(state, SPILL)
    assert other.object_id == second
    state.on_spill_done(second, None)
    put(state, 40 * MB)                   # 90 MB again: now the restored one goes
    (new_spill,) = jobs(state, SPILL)
    assert new_spill.object_id == first
    assert old_spill.path in state.effects.free_files and new_spill.path != old_spill.path
    state.on_spill_done(first, None)
    assert state.objects[first].spill_path == new_spill.path


def test_a_task_whose_argument_was_spilled_waits_for_its_restore(state):
    first = put(state, 50 * MB)
    put(state, 40 * MB)
    jobs(state, SPILL)
    state.on_spill_done(first, None)
    spec = (ids.task_id(), b"f" * 16, "work", None, [first], [], 1, {"CPU": 1.0}, 3, False,
            None, 0, None)
    state.handle(DRIVER, [(m.EXPORT, b"f" * 16, b"fn"), (m.SUBMIT, spec)])
    state.schedule()
    state.store.work()
    assert not [op for ops in state.effects.outbox.values() for op in ops if op[0] == m.EXEC]
    (_restore,) = jobs(state, RESTORE)
    state.on_restore_done(first, None)
    state.schedule()
    execs = [op for ops in state.effects.outbox.values() for op in ops if op[0] == m.EXEC]
    assert len(execs) == 1 and execs[0][1][ts.TASK_ID] == spec[ts.TASK_ID]
    assert execs[0][3] == [state.objects[first].payload]


def test_task_arguments_larger_than_the_store_fail_at_once(state):
    a = put(state, 60 * MB)
    assert reserve(state, 60 * MB) == []          # b waits until a is spilled
    (_job,) = jobs(state, SPILL)
    state.on_spill_done(a, None)
    state.store.work()
    assert replies(state) == [(m.INFO_REPLY, 1, ("ok",))]
    b = ids.task_id() + b"\x00\x00"
    state.handle(DRIVER, [(m.PUT, b, (SHARED, (f"lr_s_{b.hex()}", 60 * MB, 10, ())), [])])
    spec = (ids.task_id(), b"f" * 16, "both", None, [a, b], [], 1, {"CPU": 1.0}, 3, False,
            None, 0, None)
    state.handle(DRIVER, [(m.EXPORT, b"f" * 16, b"fn"), (m.SUBMIT, spec)])
    result = state.objects[return_ids(spec[ts.TASK_ID], 1)[0]]
    assert not result.pending
    error = pickle.loads(result.payload[1])
    assert type(error).__name__ == "ObjectStoreFullError" and "both()" in str(error)


def test_freeing_an_object_while_it_is_spilled_deletes_the_file_when_the_copy_ends(state):
    first = put(state, 50 * MB)
    put(state, 40 * MB)
    jobs(state, SPILL)
    state.handle(DRIVER, [(m.DEC, [first])])
    assert first not in state.objects and state.store.used == 40 * MB
    state.on_spill_done(first, None)
    assert spill_files_of(first, state.effects.free_files)
    assert state.store.spilled_now == 0 and state.store.spilling_bytes == 0


def test_freeing_a_spilled_object_deletes_its_file(state):
    first = put(state, 50 * MB)
    put(state, 40 * MB)
    jobs(state, SPILL)
    state.on_spill_done(first, None)
    state.handle(DRIVER, [(m.DEC, [first])])
    assert spill_files_of(first, state.effects.free_files) and state.store.spilled_now == 0


def test_reading_an_object_being_spilled_cancels_its_spill(state):
    first = put(state, 50 * MB)
    put(state, 40 * MB)
    jobs(state, SPILL)
    state.handle(DRIVER, [(m.RESTORE, 3, first)])
    (reply,) = replies(state)
    assert reply[2][0] == "ok"                    # still in memory: answered at once
    state.on_spill_done(first, None)
    assert state.objects[first].spill is None     # kept in memory
    assert spill_files_of(first, state.effects.free_files) and state.store.used == 90 * MB


def test_a_dead_writer_gives_back_its_reservation(state):
    assert reserve(state, 30 * MB) == [(m.INFO_REPLY, 1, ("ok",))]
    assert state.store.reserved == 30 * MB
    state.handle(DRIVER, [(m.GOODBYE,)])
    assert state.store.reserved == 0


def test_memory_summary_lists_size_state_call_site_and_holders(state):
    first = put(state, 50 * MB)
    put(state, 40 * MB)
    jobs(state, SPILL)
    state.on_spill_done(first, None)
    summary = state.store.memory_summary()
    assert summary["capacity_bytes"] == 100 * MB and summary["spilled_bytes"] == 50 * MB
    assert summary["num_objects"] == 2
    rows = {row["object_id"]: row for row in summary["objects"]}
    row = rows[first.hex()]
    assert row["size"] == 50 * MB and row["state"] == "spilled"
    assert row["call_site"] == "test.py:1" and row["holders"] == ["driver pid 1"]


def test_readers_asking_back_in_spill_order_get_the_next_objects_read_ahead(state):
    objects = []
    for _ in range(12):
        objects.append(put(state, 10 * MB))
        for job in jobs(state, SPILL):
            state.on_spill_done(job.object_id, None)
    on_disk = sorted((i for i in objects if state.objects[i].spill == SPILLED),
                     key=lambda i: state.objects[i].spill_seq)
    assert len(on_disk) >= 4
    for object_id in objects:   # the reader let go of what is in memory
        if state.objects[object_id].spill is None:
            state.handle(DRIVER, [(m.DEC, [object_id])])
    state.handle(DRIVER, [(m.RESTORE, 1, on_disk[0])])
    state.store.work()
    assert [job.object_id for job in jobs(state, RESTORE)] == [on_disk[0]]   # one ask: no pattern
    state.handle(DRIVER, [(m.RESTORE, 2, on_disk[1])])
    state.store.work()
    restored = [job.object_id for job in jobs(state, RESTORE)]
    assert restored == on_disk[1:2 + min(4, len(on_disk) - 2)]   # the next ones, in order
    # Read-ahead only fills free room below the threshold: nothing was spilled for it.
    assert jobs(state, SPILL) == []


def test_a_restored_segment_gets_its_name_only_once_complete(tmp_path, monkeypatch):
    import os

    from lightray.store import shm, spill

    data = bytes(range(256)) * 4096
    path = tmp_path / "spilled"
    path.write_bytes(data)
    name = str(tmp_path / "segment")
    seen = []
    real_rename = shm.rename

    def checking_rename(old, new):
        seen.append((os.path.exists(new), os.path.getsize(old)))
        real_rename(old, new)
    monkeypatch.setattr(shm, "rename", checking_rename)
    spill.copy_file_to_segment(str(path), (name, len(data), 0, ()))
    assert seen == [(False, len(data))]    # invisible until all of it was there
    assert (tmp_path / "segment").read_bytes() == data
    assert not os.path.exists(name + ".restoring")
