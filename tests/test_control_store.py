"""The control store (lightray.store.control): a deterministic state machine over SQLite."""
import json
import pickle
import random
import sqlite3
import threading

import pytest

from lightray.store.control import (
    ACTOR_ALIVE,
    ACTOR_DEAD,
    ACTOR_PENDING,
    ACTOR_REGISTER,
    ACTOR_REMOVE,
    ACTOR_RESTARTING,
    ACTOR_UPDATE,
    ALREADY_APPLIED,
    DEAD,
    EXISTS,
    FINISHED,
    FUNCTION_EXPORT,
    JOB_FINISH,
    JOB_START,
    KV_DELETE,
    KV_PUT,
    NODE_DEAD,
    NODE_HEARTBEAT,
    NODE_REGISTER,
    OK,
    STALE,
    TAKEN,
    UNKNOWN,
    UPDATED,
    ControlStore,
    NotAControlStore,
    writes,
)
from lightray.store.control import snapshot as snapshot_module

RESOURCES = json.dumps({"CPU": 4, "GPU": 1})


def register_node(node_id, ts=1.0, address=None):
    return (NODE_REGISTER, node_id, address or f"tcp://{node_id}:7000", RESOURCES,
            '{"zone": "a"}', ts)


def register_actor(actor_id, name=None, namespace="default", node_id="n1",
                   state=ACTOR_PENDING, ts=2.0):
    return (ACTOR_REGISTER, actor_id, name, namespace if name else None, node_id, state,
            b"owner", False, "Counter", ts)


def update_actor(actor_id, state, incarnation=0, node_id="n1", worker_id="w1",
                 death_cause=None, ts=3.0):
    return (ACTOR_UPDATE, actor_id, state, node_id, worker_id, incarnation, death_cause, ts)


def cluster_history(length=400, seed=7):
    """A seeded mix of every command kind, including ones that meet conflicts."""
    rng = random.Random(seed)
    nodes = [f"n{i}" for i in range(6)]
    actor_ids = [bytes([i]) * 4 for i in range(12)]
    history = [register_node(node, ts=float(i)) for i, node in enumerate(nodes)]
    ts = 10.0
    while len(history) < length:
        ts += rng.random()
        node, actor_id = rng.choice(nodes), rng.choice(actor_ids)
        name = rng.choice([None, "alpha", "beta"])
        history.append(rng.choice([
            (NODE_HEARTBEAT, node, json.dumps({"cpu": round(rng.random(), 3)}), ts),
            (NODE_HEARTBEAT, node, '{"cpu": 0.5}', ts),
            (NODE_DEAD, node, ts),
            register_node(f"n{rng.randrange(10)}", ts=ts),
            register_actor(actor_id, name=name, node_id=node, ts=ts),
            update_actor(actor_id, rng.choice([ACTOR_ALIVE, ACTOR_RESTARTING, ACTOR_DEAD]),
                         incarnation=rng.randrange(3), node_id=node, ts=ts),
            (ACTOR_REMOVE, actor_id, ts),
            (FUNCTION_EXPORT, bytes([rng.randrange(5)]) * 16, bytes(rng.randrange(50)), ts),
            (JOB_START, bytes([rng.randrange(4)]) * 4, "tcp://driver", rng.randrange(1, 9999),
             "default", ts),
            (JOB_FINISH, bytes([rng.randrange(4)]) * 4, ts),
            (KV_PUT, rng.choice(["", "ns"]), b"key%d" % rng.randrange(8),
             rng.randbytes(rng.randrange(20)), rng.random() < 0.5, ts),
            (KV_DELETE, "ns", b"key%d" % rng.randrange(8), ts),
        ]))
    return history


def reads(store):
    """Everything the read methods say, for comparing two stores through their API."""
    return (store.nodes(), store.nodes(alive_only=True), store.actors(), store.jobs(),
            store.named_actor("default", "alpha"), store.named_actor("default", "beta"),
            [store.function(bytes([i]) * 16) for i in range(5)],
            [(ns, store.kv_keys(ns), [store.kv_get(ns, k) for k in store.kv_keys(ns)])
             for ns in ("", "ns")],
            store.last_applied_index())


@pytest.fixture
def store():
    with ControlStore() as control_store:
        yield control_store


# ------------------------------------------------------------------ determinism and the log

def test_same_commands_give_same_dump_and_same_reads_in_two_stores(tmp_path):
    history = cluster_history()
    in_memory, on_file = ControlStore(), ControlStore(tmp_path / "control.db")
    results_in_memory = [in_memory.apply(command) for command in history]
    results_on_file = on_file.apply_batch(history)
    assert results_in_memory == results_on_file
    assert in_memory.dump() == on_file.dump()
    assert reads(in_memory) == reads(on_file)
    assert {TAKEN, DEAD, UNKNOWN, EXISTS} <= {
        r[0] if isinstance(r, tuple) else r for r in results_in_memory}
    in_memory.close()
    on_file.close()


def test_commands_survive_pickling_and_apply_alike(store):
    history = cluster_history(100)
    store.apply_batch(history)
    with ControlStore() as other:
        other.apply_batch(pickle.loads(pickle.dumps(history)))
        assert other.dump() == store.dump()


def test_commands_take_consecutive_log_indexes(store):
    assert store.last_applied_index() == 0
    store.apply(register_node("n1"))
    store.apply(register_node("n2"), index=2)
    store.apply_batch([register_node("n3"), register_node("n4")])
    assert store.last_applied_index() == 4
    assert store.apply_batch([]) == []
    assert store.last_applied_index() == 4


def test_a_command_at_odds_with_the_state_still_takes_its_index(store):
    assert store.apply((NODE_HEARTBEAT, "nobody", "{}", 1.0)) == UNKNOWN
    assert store.last_applied_index() == 1


def test_replaying_an_applied_index_changes_nothing(store):
    store.apply((KV_PUT, "ns", b"k", b"first", True, 1.0), index=1)
    before = store.dump()
    assert store.apply((KV_PUT, "ns", b"k", b"replayed", True, 2.0), index=1) is ALREADY_APPLIED
    assert store.dump() == before
    assert store.kv_get("ns", b"k") == b"first"
    assert pickle.loads(pickle.dumps(ALREADY_APPLIED)) is ALREADY_APPLIED


def test_replaying_an_overlapping_batch_applies_only_the_new_commands(store):
    history = cluster_history(60)
    store.apply_batch(history[:40], first_index=1)
    results = store.apply_batch(history[30:], first_index=31)
    assert results[:10] == [ALREADY_APPLIED] * 10
    assert store.last_applied_index() == 60
    with ControlStore() as fed_once:
        fed_once.apply_batch(history)
        assert fed_once.dump() == store.dump()
    assert store.apply_batch(history[:5], first_index=1) == [ALREADY_APPLIED] * 5


def test_an_index_that_skips_ahead_is_refused(store):
    store.apply(register_node("n1"))
    with pytest.raises(ValueError, match="skips ahead.*next command is 2"):
        store.apply(register_node("n2"), index=3)
    with pytest.raises(ValueError, match="skips ahead"):
        store.apply_batch([register_node("n2")], first_index=5)
    with pytest.raises(TypeError, match="index must be an int"):
        store.apply(register_node("n2"), index="2")
    assert store.last_applied_index() == 1
    assert store.node("n2") is None


# ------------------------------------------------------------------ nodes

def test_node_goes_from_alive_to_dead_for_good(store):
    assert store.apply(register_node("n1", ts=1.0)) == OK
    assert store.node("n1").alive
    assert store.apply((NODE_HEARTBEAT, "n1", '{"cpu": 0.25}', 2.0)) == OK
    node = store.node("n1")
    assert (node.load, node.last_heartbeat_at, node.resources) == ({"cpu": 0.25}, 2.0,
                                                                    {"CPU": 4, "GPU": 1})
    assert store.apply((NODE_DEAD, "n1", 3.0)) == OK
    node = store.node("n1")
    assert (node.alive, node.died_at) == (False, 3.0)
    assert store.apply((NODE_HEARTBEAT, "n1", "{}", 4.0)) == DEAD
    assert store.apply((NODE_DEAD, "n1", 5.0)) == DEAD
    assert store.apply(register_node("n1", ts=6.0)) == DEAD
    assert store.node("n1").died_at == 3.0
    assert store.nodes(alive_only=True) == []
    assert [n.node_id for n in store.nodes()] == ["n1"]


def test_a_live_node_registering_again_is_updated(store):
    store.apply(register_node("n1", ts=1.0, address="tcp://old:1"))
    assert store.apply(register_node("n1", ts=2.0, address="tcp://new:1")) == UPDATED
    node = store.node("n1")
    assert (node.address, node.registered_at, node.last_heartbeat_at) == ("tcp://new:1", 1.0, 2.0)


def test_unknown_nodes_are_reported_unknown(store):
    assert store.apply((NODE_HEARTBEAT, "ghost", "{}", 1.0)) == UNKNOWN
    assert store.apply((NODE_DEAD, "ghost", 1.0)) == UNKNOWN
    assert store.node("ghost") is None


def test_nodes_silent_since_lists_live_nodes_that_missed_heartbeats(store):
    store.apply_batch([register_node("n1", ts=1.0), register_node("n2", ts=1.0),
                       register_node("n3", ts=1.0), (NODE_HEARTBEAT, "n2", "{}", 10.0),
                       (NODE_DEAD, "n3", 2.0)])
    assert [n.node_id for n in store.nodes_silent_since(5.0)] == ["n1"]


# ------------------------------------------------------------------ actors and names

def test_a_taken_name_is_refused_naming_the_actor_that_holds_it(store):
    assert store.apply(register_actor(b"a1", name="counter")) == (OK, b"a1")
    actors_before = store.actors()
    assert store.apply(register_actor(b"a2", name="counter")) == (TAKEN, b"a1")
    assert store.actors() == actors_before
    assert store.named_actor("default", "counter").actor_id == b"a1"


def test_a_name_is_free_again_once_its_actor_is_dead(store):
    store.apply(register_actor(b"a1", name="counter"))
    store.apply(update_actor(b"a1", ACTOR_DEAD, death_cause="killed"))
    assert store.named_actor("default", "counter") is None
    assert store.apply(register_actor(b"a2", name="counter")) == (OK, b"a2")
    assert store.named_actor("default", "counter").actor_id == b"a2"
    assert store.actor(b"a1").death_cause == "killed"


def test_a_name_is_free_again_once_its_actor_is_removed(store):
    store.apply(register_actor(b"a1", name="counter"))
    assert store.apply((ACTOR_REMOVE, b"a1", 4.0)) == OK
    assert store.apply((ACTOR_REMOVE, b"a1", 5.0)) == UNKNOWN
    assert store.apply(register_actor(b"a2", name="counter")) == (OK, b"a2")


def test_one_name_in_two_namespaces_names_two_actors(store):
    assert store.apply(register_actor(b"a1", name="counter", namespace="x")) == (OK, b"a1")
    assert store.apply(register_actor(b"a2", name="counter", namespace="y")) == (OK, b"a2")
    assert store.named_actor("y", "counter").actor_id == b"a2"


def test_unnamed_actors_never_conflict(store):
    assert store.apply(register_actor(b"a1")) == (OK, b"a1")
    assert store.apply(register_actor(b"a2")) == (OK, b"a2")


def test_registering_an_actor_id_twice_says_exists_and_keeps_the_first(store):
    store.apply(register_actor(b"a1", node_id="n1"))
    assert store.apply(register_actor(b"a1", node_id="n2")) == (EXISTS, b"a1")
    assert store.actor(b"a1").node_id == "n1"


def test_actor_updates_move_it_until_it_is_dead(store):
    store.apply(register_actor(b"a1", node_id=None))
    assert store.actor(b"a1").node_id is None
    assert store.apply(update_actor(b"a1", ACTOR_ALIVE, node_id="n1", worker_id="w1")) == OK
    assert store.apply(update_actor(b"a1", ACTOR_RESTARTING, incarnation=1, worker_id=None)) == OK
    assert store.apply(update_actor(b"a1", ACTOR_ALIVE, incarnation=1, node_id="n2",
                                    worker_id="w7", ts=9.0)) == OK
    actor = store.actor(b"a1")
    assert (actor.state, actor.node_id, actor.worker_id, actor.incarnation, actor.updated_at) == (
        ACTOR_ALIVE, "n2", "w7", 1, 9.0)
    assert store.apply(update_actor(b"a1", ACTOR_DEAD, incarnation=1)) == OK
    assert store.apply(update_actor(b"a1", ACTOR_ALIVE, incarnation=2)) == DEAD
    assert store.actor(b"a1").state == ACTOR_DEAD
    assert store.apply(update_actor(b"nobody", ACTOR_ALIVE)) == UNKNOWN


def test_an_update_from_an_older_incarnation_is_stale(store):
    store.apply(register_actor(b"a1"))
    store.apply(update_actor(b"a1", ACTOR_ALIVE, incarnation=2, worker_id="w2"))
    assert store.apply(update_actor(b"a1", ACTOR_DEAD, incarnation=1)) == STALE
    actor = store.actor(b"a1")
    assert (actor.state, actor.worker_id) == (ACTOR_ALIVE, "w2")


def test_actors_can_be_listed_by_node_and_by_liveness(store):
    store.apply_batch([register_actor(b"a1", node_id="n1"), register_actor(b"a2", node_id="n2"),
                       register_actor(b"a3", node_id="n1"), update_actor(b"a3", ACTOR_DEAD)])
    assert [a.actor_id for a in store.actors()] == [b"a1", b"a2", b"a3"]
    assert [a.actor_id for a in store.actors(node_id="n1")] == [b"a1", b"a3"]
    assert [a.actor_id for a in store.actors(node_id="n1", live_only=True)] == [b"a1"]


# ------------------------------------------------------------------ functions and jobs

def test_a_function_is_exported_once_and_keeps_its_first_bytes(store):
    assert store.apply((FUNCTION_EXPORT, b"f" * 16, b"pickled", 1.0)) == OK
    assert store.apply((FUNCTION_EXPORT, b"f" * 16, b"other", 2.0)) == EXISTS
    assert store.function(b"f" * 16) == b"pickled"
    assert store.function(b"g" * 16) is None


def test_jobs_start_and_finish_once(store):
    assert store.apply((JOB_START, b"j2", "tcp://d:1", 42, "default", 2.0)) == OK
    assert store.apply((JOB_START, b"j1", "tcp://d:2", 43, "ns", 1.0)) == OK
    assert store.apply((JOB_START, b"j1", "tcp://d:2", 43, "ns", 1.0)) == EXISTS
    assert store.apply((JOB_FINISH, b"j1", 5.0)) == OK
    assert store.apply((JOB_FINISH, b"j1", 6.0)) == FINISHED
    assert store.apply((JOB_FINISH, b"j9", 6.0)) == UNKNOWN
    assert [(j.job_id, j.running, j.finished_at) for j in store.jobs()] == [
        (b"j1", False, 5.0), (b"j2", True, None)]
    assert store.job(b"j2").driver_pid == 42


# ------------------------------------------------------------------ key-value

def test_kv_put_without_overwrite_keeps_the_existing_value(store):
    assert store.apply((KV_PUT, "ns", b"k", b"v1", False, 1.0)) is True
    assert store.apply((KV_PUT, "ns", b"k", b"v2", False, 2.0)) is False
    assert store.kv_get("ns", b"k") == b"v1"


def test_kv_put_with_overwrite_replaces_the_value(store):
    store.apply((KV_PUT, "ns", b"k", b"v1", False, 1.0))
    assert store.apply((KV_PUT, "ns", b"k", b"v2", True, 2.0)) is True
    assert store.kv_get("ns", b"k") == b"v2"


def test_kv_delete_says_whether_the_key_existed(store):
    store.apply((KV_PUT, "ns", b"k", b"v", False, 1.0))
    assert store.apply((KV_DELETE, "ns", b"k", 2.0)) is True
    assert store.apply((KV_DELETE, "ns", b"k", 3.0)) is False
    assert store.kv_get("ns", b"k") is None


def test_kv_namespaces_are_separate(store):
    store.apply((KV_PUT, "a", b"k", b"in a", False, 1.0))
    assert store.kv_get("b", b"k") is None
    assert store.apply((KV_PUT, "b", b"k", b"in b", False, 1.0)) is True
    assert store.kv_get("a", b"k") == b"in a"


def test_kv_keys_lists_a_prefix_in_byte_order(store):
    keys = [b"job:2", b"job:1", b"jobs", b"job;", b"actor:1", b"\xff\xff", b"\xff\xff\x00", b""]
    store.apply_batch([(KV_PUT, "ns", key, b"", False, 1.0) for key in keys])
    store.apply((KV_PUT, "other", b"job:3", b"", False, 1.0))
    assert store.kv_keys("ns", b"job:") == [b"job:1", b"job:2"]
    assert store.kv_keys("ns", b"job") == [b"job:1", b"job:2", b"job;", b"jobs"]
    assert store.kv_keys("ns", b"\xff") == [b"\xff\xff", b"\xff\xff\x00"]
    assert store.kv_keys("ns") == sorted(keys)
    assert store.kv_keys("empty") == []


# ------------------------------------------------------------------ bad commands

BAD_COMMANDS = [
    ((), TypeError, "non-empty tuple"),
    ("node_register", TypeError, "non-empty tuple"),
    (("node_explode", "n1", 1.0), ValueError, "unknown control store command kind 'node_explode'"),
    ((7, "n1"), ValueError, "unknown control store command kind 7"),
    ((NODE_DEAD, "n1"), TypeError, r"node_dead takes 2 fields \(node_id, ts\), got 1"),
    ((NODE_DEAD, "n1", 1.0, "extra"), TypeError, "node_dead takes 2 fields"),
    ((NODE_DEAD, b"n1", 1.0), TypeError, "node_dead: node_id must be str, got bytes"),
    ((NODE_DEAD, "", 1.0), ValueError, "node_dead: node_id must not be empty"),
    ((NODE_DEAD, "n1", "now"), TypeError, "node_dead: ts must be a float"),
    ((NODE_DEAD, "n1", True), TypeError, "node_dead: ts must be a float"),
    ((NODE_DEAD, "n1", float("nan")), ValueError, "node_dead: ts must be finite"),
    ((NODE_REGISTER, "n1", "tcp://a", "{not json", "{}", 1.0), ValueError,
     "resources_json is not valid JSON"),
    ((NODE_REGISTER, "n1", "tcp://a", "[1]", "{}", 1.0), ValueError,
     "resources_json must be a JSON object"),
    ((NODE_REGISTER, "n1", "tcp://a", '{"CPU": -1}', "{}", 1.0), ValueError,
     "resource 'CPU' must be a finite number >= 0"),
    ((NODE_REGISTER, "n1", "tcp://a", "{}", '{"zone": 1}', 1.0), ValueError,
     "label 'zone' must be a string"),
    ((NODE_HEARTBEAT, "n1", "null", 1.0), ValueError, "load_json must be a JSON object"),
    ((ACTOR_REGISTER, b"a1", "name", None, "n1", "alive", None, False, "C", 1.0), ValueError,
     "a named actor needs a namespace"),
    ((ACTOR_REGISTER, b"a1", None, None, "n1", "sleeping", None, False, "C", 1.0), ValueError,
     "state must be one of"),
    ((ACTOR_REGISTER, b"a1", None, None, "n1", "alive", None, 0, "C", 1.0), TypeError,
     "detached must be bool"),
    ((ACTOR_REGISTER, "a1", None, None, "n1", "alive", None, False, "C", 1.0), TypeError,
     "actor_id must be bytes, got str"),
    ((ACTOR_UPDATE, b"a1", "alive", "n1", "w1", -1, None, 1.0), ValueError,
     "incarnation must be in"),
    ((ACTOR_UPDATE, b"a1", "alive", "n1", "w1", True, None, 1.0), TypeError,
     "incarnation must be int"),
    ((JOB_START, b"j1", "tcp://d", 2 ** 63, "ns", 1.0), ValueError, "driver_pid must be in"),
    ((KV_PUT, "ns", b"k", "text", False, 1.0), TypeError, "kv_put: value must be bytes"),
    ((KV_PUT, "ns", b"k", b"v", 1, 1.0), TypeError, "kv_put: overwrite must be bool"),
    ((KV_PUT, "ns\udc80", b"k", b"v", True, 1.0), ValueError, "not encodable as UTF-8"),
    ((KV_DELETE, None, b"k", 1.0), TypeError, "kv_delete: namespace must be str"),
]


@pytest.mark.parametrize("command, error, message", BAD_COMMANDS)
def test_a_bad_command_raises_a_clear_error_and_leaves_the_store_unchanged(
        store, command, error, message):
    store.apply_batch(cluster_history(50))
    before = store.dump()
    with pytest.raises(error, match=message):
        store.apply(command)
    assert store.dump() == before
    assert store.last_applied_index() == 50


def test_a_bad_command_in_a_batch_applies_none_of_the_batch(store):
    batch = [register_node("n1"), (NODE_DEAD, "n1"), register_node("n2")]
    with pytest.raises(TypeError, match="command 1 of the batch: node_dead takes 2 fields"):
        store.apply_batch(batch)
    assert store.nodes() == [] and store.last_applied_index() == 0


def test_a_failure_midway_through_a_batch_rolls_the_whole_batch_back(store, monkeypatch):
    store.apply(register_node("n1"))
    before = store.dump()

    def disk_full(db, *fields):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setitem(writes.BY_KIND, KV_PUT, disk_full)
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        store.apply_batch([register_node("n2"), (NODE_DEAD, "n1", 2.0),
                           (KV_PUT, "ns", b"k", b"v", True, 3.0)])
    assert store.dump() == before
    assert store.last_applied_index() == 1
    monkeypatch.undo()
    assert store.apply(register_node("n2")) == OK
    assert store.last_applied_index() == 2


def test_integer_timestamps_are_stored_as_floats(store):
    store.apply(register_node("n1", ts=5))
    with ControlStore() as other:
        other.apply(register_node("n1", ts=5.0))
        assert other.dump() == store.dump()
    assert store.node("n1").registered_at == 5.0


def test_reads_refuse_ids_of_the_wrong_type(store):
    with pytest.raises(TypeError, match="node_id must be str, got bytes"):
        store.node(b"n1")
    with pytest.raises(TypeError, match="actor_id must be bytes, got str"):
        store.actor("a1")
    with pytest.raises(TypeError, match="key must be bytes"):
        store.kv_get("ns", "k")


# ------------------------------------------------------------------ persistence

def test_reopening_a_closed_store_resumes_its_state_and_log_index(tmp_path):
    path = tmp_path / "control.db"
    history = cluster_history(120)
    with ControlStore(path) as first:
        first.apply_batch(history[:100])
        dump_at_close = first.dump()
    with ControlStore(path) as reopened:
        assert reopened.dump() == dump_at_close
        assert reopened.last_applied_index() == 100
        assert reopened.apply(history[0], index=1) is ALREADY_APPLIED
        reopened.apply_batch(history[100:])
        dump_after = reopened.dump()
    with ControlStore() as fed_once:
        fed_once.apply_batch(history)
        assert fed_once.dump() == dump_after


def test_a_store_on_a_file_uses_wal_with_normal_sync(tmp_path):
    path = tmp_path / "control.db"
    with ControlStore(path) as store:
        store.apply(register_node("n1"))
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1   # NORMAL
        reader = sqlite3.connect(path)
        assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert reader.execute("SELECT node_id FROM nodes").fetchall() == [("n1",)]
        reader.close()


def test_opening_a_database_that_is_not_a_control_store_is_refused(tmp_path):
    foreign = tmp_path / "foreign.db"
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(NotAControlStore, match="not a lightray control store"):
        ControlStore(foreign)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is no database" * 100)
    with pytest.raises(NotAControlStore, match="not a readable SQLite database"):
        ControlStore(garbage)


def test_opening_a_store_of_another_schema_version_is_refused(tmp_path):
    path = tmp_path / "control.db"
    ControlStore(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE schema_version SET version = 99")
    db.commit()
    db.close()
    with pytest.raises(NotAControlStore, match=r"schema version \[99\]"):
        ControlStore(path)


def test_a_store_belongs_to_the_thread_that_opened_it(store):
    errors = []

    def read_from_another_thread():
        try:
            store.nodes()
        except sqlite3.ProgrammingError as exc:
            errors.append(exc)

    thread = threading.Thread(target=read_from_another_thread)
    thread.start()
    thread.join()
    assert len(errors) == 1


# ------------------------------------------------------------------ snapshots

@pytest.mark.parametrize("serialize", [True, False], ids=["serialize", "temporary-file"])
def test_a_restored_snapshot_fed_the_rest_of_the_log_equals_a_store_fed_it_all(
        tmp_path, monkeypatch, serialize):
    if serialize and not snapshot_module._HAS_SERIALIZE:
        pytest.skip("sqlite3.Connection.serialize needs Python 3.11")
    monkeypatch.setattr(snapshot_module, "_HAS_SERIALIZE", serialize)
    history = cluster_history()
    with ControlStore() as fed_all, ControlStore(tmp_path / "leader.db") as leader, \
            ControlStore(tmp_path / "replica.db") as replica:
        fed_all.apply_batch(history)
        leader.apply_batch(history[:250])
        replica.apply_batch(history[:3])          # a stale replica: restore replaces it all
        replica.restore(leader.snapshot())
        assert replica.last_applied_index() == 250
        assert replica.dump() == leader.dump()
        replica.apply_batch(history[200:], first_index=201)   # overlaps: replayed ones skipped
        assert replica.dump() == fed_all.dump()
        assert reads(replica) == reads(fed_all)


def test_a_restored_file_store_keeps_its_state_across_a_reopen(tmp_path):
    with ControlStore() as leader:
        leader.apply_batch(cluster_history(80))
        image, expected = leader.snapshot(), leader.dump()
    path = tmp_path / "replica.db"
    with ControlStore(path) as replica:
        replica.restore(image)
    with ControlStore(path) as reopened:
        assert reopened.dump() == expected
        assert reopened.last_applied_index() == 80


@pytest.mark.parametrize("image", [b"", b"garbage" * 100,
                                   b"SQLite format 3\x00" + bytes(200)],
                         ids=["empty", "garbage", "truncated"])
def test_restoring_something_that_is_not_a_snapshot_is_refused_and_changes_nothing(
        store, image):
    store.apply_batch(cluster_history(30))
    before = store.dump()
    with pytest.raises(NotAControlStore):
        store.restore(image)
    assert store.dump() == before
    assert store.last_applied_index() == 30


def test_restoring_a_foreign_database_image_is_refused(store):
    foreign = sqlite3.connect(":memory:")
    foreign.execute("CREATE TABLE t (x)")
    image = foreign.serialize() if hasattr(foreign, "serialize") else None
    foreign.close()
    if image is None:
        pytest.skip("sqlite3.Connection.serialize needs Python 3.11")
    with pytest.raises(NotAControlStore, match="the snapshot is not a lightray control store"):
        store.restore(image)
