"""AgentState is a plain state machine: events in, instructions out, no sockets.

These tests drive it directly, the way the agent's I/O loop does.
"""
import logging
import pickle

import pytest

from lightray import exceptions
from lightray import task_spec as ts
from lightray.agent.state import AgentState
from lightray.agent.workers import LOCAL_PAYLOAD
from lightray.ids import IdMaker, return_ids
from lightray.serialization import ERROR, INLINE, SHARED
from lightray.transport import messages as m

DRIVER = b"driver01"


@pytest.fixture
def state():
    agent = AgentState(node_id="node0000", session="s", resources={"CPU": 2.0},
                       pipeline_depth=4, max_workers=8, store_capacity=1 << 30)
    agent.on_hello(DRIVER, "driver", 1, "")
    agent.initial_workers(2)
    for pid, worker_id in enumerate(agent.effects.spawn, start=100):
        agent.on_spawned(worker_id, pid)
        agent.on_hello(worker_id.encode(), "worker", pid, worker_id)
    agent.effects.spawn.clear()
    agent.effects.outbox.clear()
    return agent


ids = IdMaker()


def submit(agent, *, function_id=b"f" * 16, deps=(), request=None, max_retries=3):
    task_id = ids.task_id()
    spec = (task_id, function_id, "work", None, list(deps), [], 1,
            request if request is not None else {"CPU": 1.0}, max_retries, False, None, 0, None)
    agent.handle(DRIVER, [(m.EXPORT, function_id, b"pickled function"), (m.SUBMIT, spec)])
    return task_id


def sent_execs(agent):
    """(worker identity, EXEC op) for every EXEC in the outbox, then clears it."""
    out = [(identity, op) for identity, ops in agent.effects.outbox.items() for op in ops
           if op[0] == m.EXEC]
    agent.effects.outbox.clear()
    return out


def finish(agent, identity, task_id, value=b"result"):
    agent.handle(identity[:-1], [(m.DONE, task_id, [(INLINE, value)], [[]], False)])


def test_function_bytes_go_to_each_worker_only_once(state):
    for _ in range(2):
        submit(state)
    state.schedule()
    first = sent_execs(state)
    assert len(first) == 2 and all(op[2] == b"pickled function" for _, op in first)
    for identity, op in first:
        finish(state, identity, op[1][ts.TASK_ID])
    submit(state)
    state.schedule()
    (_, op), = sent_execs(state)
    assert op[2] is None


def test_task_waits_for_its_argument_then_gets_its_payload(state):
    producer = submit(state)
    state.schedule()
    (identity, _), = sent_execs(state)
    # Another resource shape cannot follow the producer on its worker: it waits.
    consumer = submit(state, deps=[return_ids(producer, 1)[0]], request={"CPU": 0.5})
    state.schedule()
    assert sent_execs(state) == []
    finish(state, identity, producer, value=b"argument value")
    state.schedule()
    (_, op), = sent_execs(state)
    assert op[1][ts.TASK_ID] == consumer
    assert op[3] == [(INLINE, b"argument value")]


def test_task_whose_argument_is_being_produced_follows_its_producer(state):
    producer = submit(state)
    state.schedule()
    (identity, _), = sent_execs(state)
    consumer = submit(state, deps=[return_ids(producer, 1)[0]])
    (follow_identity, op), = sent_execs(state)
    assert follow_identity == identity            # queued on the producer's worker
    assert op[1][ts.TASK_ID] == consumer
    assert op[3] == [LOCAL_PAYLOAD]               # the worker has the value itself
    worker = state.workers[identity[:-1].decode()]
    assert [t.task_id for t in worker.queue] == [producer, consumer]


def test_owner_gets_result_pushed(state):
    task_id = submit(state)
    state.schedule()
    (identity, _), = sent_execs(state)
    finish(state, identity, task_id, value=b"42")
    ready = [op for op in state.effects.outbox[DRIVER + b"r"] if op[0] == m.READY]
    assert ready == [(m.READY, [(return_ids(task_id, 1)[0], (INLINE, b"42"))])]


def test_tasks_beyond_free_cpus_are_pipelined_and_handed_back_when_blocked(state):
    tasks = [submit(state) for _ in range(4)]
    state.schedule()
    execs = sent_execs(state)
    assert len(execs) == 4                      # 2 running, 2 pipelined
    assert state.pool.available["CPU"] == 0
    identity, first = execs[0]
    behind = [op[1][ts.TASK_ID] for ident, op in execs[1:] if ident == identity]
    state.handle(identity[:-1], [(m.BLOCKED, first[1][ts.TASK_ID], behind)])
    assert state.pool.available["CPU"] == 10_000   # the blocked task's CPU is free
    state.schedule()
    # The freed CPU goes to a new worker (none is idle), which gets the task
    # handed back as soon as it says hello.
    (new_worker,) = state.effects.spawn
    queued = [t.task_id for t in state.workers[new_worker].queue]
    assert queued == behind[:1]
    assert len(tasks) == 4


def test_freeing_last_ref_unlinks_segment(state):
    object_id = ids.task_id() + b"\x00\x00"
    layout = ("lr_s_x", 4096, 10, ((64, 4000),))
    state.handle(DRIVER, [(m.PUT, object_id, (SHARED, layout), [])])
    assert state.store.used == 4096
    state.handle(DRIVER, [(m.DEC, [object_id])])
    assert state.effects.free_segments == ["lr_s_x"]
    assert state.store.used == 0
    assert object_id not in state.objects


def test_object_contained_in_another_lives_until_container_is_freed(state):
    inner, outer = ids.task_id() + b"\x00\x00", ids.task_id() + b"\x00\x00"
    state.handle(DRIVER, [(m.PUT, inner, (INLINE, b"inner"), [])])
    state.handle(DRIVER, [(m.PUT, outer, (INLINE, b"outer"), [inner])])
    state.handle(DRIVER, [(m.DEC, [inner])])
    assert inner in state.objects
    state.handle(DRIVER, [(m.DEC, [outer])])
    assert inner not in state.objects and outer not in state.objects


def test_infeasible_request_fails_at_once_with_unschedulable_error(state):
    task_id = submit(state, request={"CPU": 64.0})
    entry = state.objects[return_ids(task_id, 1)[0]]
    assert entry.payload[0] == ERROR
    error = pickle.loads(entry.payload[1])
    assert isinstance(error, exceptions.TaskUnschedulableError)
    assert "64.0 CPU" in str(error)


def test_worker_death_retries_running_task_and_requeues_the_rest(state):
    for _ in range(3):
        submit(state, max_retries=1)
    state.schedule()
    execs = sent_execs(state)
    identity, running = execs[0]
    pid = state.workers[identity[:-1].decode()].pid
    state.on_worker_exit(pid, "killed by signal SIGKILL")
    retried = state.tasks[running[1][ts.TASK_ID]]
    assert retried.retries_left == 0
    state.on_worker_exit(pid, "again")          # a second report changes nothing
    assert state.pool.available["CPU"] >= 0


def test_lease_lends_an_idle_worker_and_is_revoked_when_work_waits(state):
    state.handle(DRIVER, [(m.LEASE_REQUEST, {"CPU": 1.0})])
    (grant,) = [op for op in state.effects.outbox[DRIVER + b"r"] if op[0] == m.LEASE_GRANTED]
    lent = grant[2]
    assert lent is not None and state.workers[lent].lessee == DRIVER
    state.effects.outbox.clear()
    submit(state, request={"CPU": 2.0})       # cannot fit while the lease holds a CPU
    state.schedule()
    assert (m.LEASE_REVOKE, lent) in state.effects.outbox[DRIVER + b"r"]
    state.handle(DRIVER, [(m.LEASE_RETURN, lent)])
    state.schedule()
    assert state.workers[lent].lessee is None
    assert len(sent_execs(state)) == 1         # the waiting task runs now


def test_no_lease_is_lent_while_tasks_are_queued(state):
    submit(state, request={"CPU": 2.0})
    submit(state, request={"CPU": 2.0})          # queued behind the first
    state.handle(DRIVER, [(m.LEASE_REQUEST, {"CPU": 1.0})])
    (grant,) = [op for op in state.effects.outbox[DRIVER + b"r"] if op[0] == m.LEASE_GRANTED]
    assert grant[2] is None


def test_task_state_changes_are_recorded_and_logged_with_their_reason(state, caplog):
    caplog.set_level(logging.DEBUG, logger="lightray.agent")
    task_id = submit(state)
    state.schedule()
    (identity, _), = sent_execs(state)
    finish(state, identity, task_id)
    changes = [(old, new) for _, kind, _, old, new, _ in state.transitions.of(task_id)]
    assert changes == [("waiting", "queued"), ("queued", "dispatched"),
                       ("dispatched", "finished")]
    worker_id = identity[:-1].decode()
    assert f"task {task_id.hex()[:8]}: queued -> dispatched (on worker {worker_id})" in caplog.text


def test_instructions_come_out_typed_and_in_order(state):
    object_id = ids.task_id() + b"\x00\x00"
    state.handle(DRIVER, [(m.PUT, object_id, (SHARED, ("lr_s_y", 4096, 10, ())), []),
                          (m.DEC, [object_id])])
    submit(state)
    state.schedule()
    out = state.take_instructions()
    assert [type(x).__name__ for x in out] == ["Send", "FreeSegment"]   # answers first
    assert out[1].name == "lr_s_y"
    assert state.take_instructions() == []


def test_a_direct_result_registered_by_its_owner_becomes_ready(state):
    object_id = ids.task_id() + b"\x00\x00"
    state.handle(DRIVER, [(m.REGISTER, object_id, None, [])])          # promised
    assert state.objects[object_id].pending
    state.handle(DRIVER, [(m.DIRECT_RESULT, DRIVER, object_id, (INLINE, b"7"), [])])
    entry = state.objects[object_id]
    assert not entry.pending and entry.payload == (INLINE, b"7")


PEER = "peer0000"


def _with_peer(agent):
    agent.membership._add_peer({"node_id": PEER, "address": "tcp://127.0.0.1:1",
                                "resources": {"CPU": 1.0}}, 0.0)
    agent.effects.peer_outbox.clear()


def _described_answers(agent, sender=PEER):
    answers = [op for op in agent.effects.peer_outbox.get(sender, []) if op[0] == m.DESCRIBED]
    agent.effects.peer_outbox.clear()
    return answers


def _adopt_from_peer(agent, object_id):
    """An actor's worker here got a ref created on PEER inside a call's arguments."""
    worker = next(w for w in agent.workers)
    agent.handle(worker.encode(), [(m.ADOPT_FROM, 7, PEER, [object_id])])
    describes = [op for op in agent.effects.peer_outbox[PEER] if op[0] == m.DESCRIBE]
    agent.effects.peer_outbox.clear()
    assert describes and object_id in describes[0][2]
    return describes[0][1]


def test_a_describe_of_an_id_not_yet_registered_is_answered_unknown_not_lost(state):
    # The creator of a ref may pass it straight to an actor elsewhere before
    # its own REGISTER reaches this agent (different sockets): no entry yet.
    _with_peer(state)
    object_id = ids.task_id() + b"\x00\x00"
    state.handle_peer(PEER, [(m.DESCRIBE, 3, [object_id])], 0.0, 0.0)
    [(_, request, answers)] = _described_answers(state)
    assert request == 3 and answers == [(object_id, ("unknown",))]


def test_an_unknown_answer_is_asked_again_then_the_value_resolves(state):
    _with_peer(state)
    object_id = ids.task_id() + b"\x00\x00"
    request = _adopt_from_peer(state, object_id)
    state.handle_peer(PEER, [(m.DESCRIBED, request, [(object_id, ("unknown",))])], 0.0, 0.0)
    assert state.objects[object_id].pending           # not lost: asked again
    retries = state.remote_actors.pull_retries
    assert (PEER, (m.DESCRIBE, 0, [object_id])) in retries
    retries.clear()
    value = (INLINE, pickle.dumps(5))
    state.handle_peer(PEER, [(m.DESCRIBED, 0, [(object_id, value)])], 0.0, 0.0)
    entry = state.objects[object_id]
    assert not entry.pending and entry.payload == value


def test_an_id_unknown_to_its_node_for_every_retry_is_lost_with_a_reason(state):
    from lightray.agent.cluster.remote_actors import UNKNOWN_RETRIES
    _with_peer(state)
    object_id = ids.task_id() + b"\x00\x00"
    request = _adopt_from_peer(state, object_id)
    for _ in range(UNKNOWN_RETRIES):
        assert state.objects[object_id].pending
        state.handle_peer(PEER, [(m.DESCRIBED, request, [(object_id, ("unknown",))])],
                          0.0, 0.0)
        request = 0
    entry = state.objects[object_id]
    assert not entry.pending and entry.payload[0] == ERROR
    with pytest.raises(exceptions.ObjectLostError, match="does not hold it"):
        raise pickle.loads(entry.payload[1])
    assert object_id not in state.remote_actors.unknown_asks


def _ticks(agent, start, stop, load):
    now = start
    while now <= stop:
        agent.cluster_tick(now, 0.0, load)
        now += 0.5


def test_a_silent_peer_is_declared_dead_after_the_deadline(state):
    DEAD_AFTER = state.membership.nodes.dead_after
    state.membership.is_head = True       # the membership authority judges silence
    _with_peer(state)
    load = {"hot": False}
    _ticks(state, 0.5, DEAD_AFTER - 0.5, load)
    assert state.membership.peers[PEER].alive
    _ticks(state, DEAD_AFTER, DEAD_AFTER + 1.0, load)
    assert not state.membership.peers[PEER].alive


def test_an_agent_that_was_itself_stopped_does_not_declare_its_peers_dead_on_waking(state):
    # SIGSTOP for 10 s: the silence was ours. Declaring the head dead would cut
    # us off; the head's answer to our next heartbeat tells us if we were dropped.
    DEAD_AFTER = state.membership.nodes.dead_after
    state.membership.is_head = True
    _with_peer(state)
    load = {"hot": False}
    _ticks(state, 0.5, 1.0, load)
    _ticks(state, 11.0, 11.0 + DEAD_AFTER - 0.5, load)
    assert state.membership.peers[PEER].alive
    assert any(op[0] == m.HEARTBEAT for op in state.effects.peer_outbox[PEER])
    _ticks(state, 11.0 + DEAD_AFTER, 11.0 + DEAD_AFTER + 1.0, load)   # still silent: dead
    assert not state.membership.peers[PEER].alive


def test_a_submit_of_a_function_never_exported_fails_that_task_and_the_agent_serves_on(state):
    task_id = ids.task_id()
    spec = (task_id, b"n" * 16, "ghost", None, [], [], 1, {"CPU": 1.0}, 0, False, None, 0, None)
    state.handle(DRIVER, [(m.SUBMIT, spec)])
    [result] = return_ids(task_id, 1)
    entry = state.objects[result]
    assert not entry.pending and entry.payload[0] == ERROR
    with pytest.raises(exceptions.LightrayError, match="never exported"):
        raise pickle.loads(entry.payload[1])
    state.schedule()
    assert not sent_execs(state)
    submit(state)                       # an exported one still runs
    state.schedule()
    assert len(sent_execs(state)) == 1
