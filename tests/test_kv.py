"""lightray.kv: its API on the embedded runtime (a lone control replica) and in
local mode (both_modes), and the kv_write command that makes a resent write apply once.

The guarantees under failures (leader SIGKILLed, a minority cut off, a
linearizable history under a nemesis) are in tests/test_control_guarantees.py.
"""
import pytest

import lightray
from lightray.exceptions import GetTimeoutError, KVError, KVTimeoutError
from lightray.runtime import client_for_submission
from lightray.store.control import KV_WRITE, ControlStore
from lightray.transport import messages as m

pytestmark = pytest.mark.both_modes


@pytest.fixture
def kv_runtime(start_runtime):
    start_runtime(num_cpus=1, namespace="tests")
    yield
    lightray.shutdown()


# ------------------------------------------------------------------ the API

def test_put_then_get_returns_the_value_and_get_of_a_missing_key_is_none(kv_runtime):
    assert lightray.kv.put("a", b"1") is True
    assert lightray.kv.get("a") == b"1"
    assert lightray.kv.get("a", consistent=True) == b"1"
    assert lightray.kv.get("missing") is None
    assert lightray.kv.get("missing", consistent=True) is None


def test_put_without_overwrite_keeps_the_first_value(kv_runtime):
    assert lightray.kv.put("a", b"first", overwrite=False) is True
    assert lightray.kv.put("a", b"second", overwrite=False) is False
    assert lightray.kv.get("a") == b"first"
    assert lightray.kv.put("a", b"third") is True
    assert lightray.kv.get("a") == b"third"


def test_delete_says_whether_the_key_existed(kv_runtime):
    lightray.kv.put("a", b"1")
    assert lightray.kv.delete("a") is True
    assert lightray.kv.delete("a") is False
    assert lightray.kv.get("a") is None


def test_list_returns_the_keys_with_the_prefix_sorted(kv_runtime):
    for key in ("job/2", "job/10", "job/1", "other", "jobs"):
        lightray.kv.put(key, b"")
    assert lightray.kv.list("job/") == ["job/1", "job/10", "job/2"]
    assert lightray.kv.list("job/", consistent=True) == ["job/1", "job/10", "job/2"]
    assert lightray.kv.list() == ["job/1", "job/10", "job/2", "jobs", "other"]
    assert lightray.kv.list("nothing") == []


def test_compare_and_set_changes_the_value_only_when_it_holds_the_expected_one(kv_runtime):
    assert lightray.kv.compare_and_set("c", None, b"1") is True      # None: absent
    assert lightray.kv.compare_and_set("c", None, b"2") is False
    assert lightray.kv.compare_and_set("c", b"0", b"2") is False
    assert lightray.kv.get("c") == b"1"
    assert lightray.kv.compare_and_set("c", b"1", b"2") is True
    assert lightray.kv.get("c") == b"2"
    assert lightray.kv.compare_and_set("c", b"2", None) is True      # None: delete
    assert lightray.kv.get("c") is None


def test_namespaces_keep_keys_apart_and_the_default_is_the_drivers(kv_runtime):
    lightray.kv.put("k", b"driver's")
    lightray.kv.put("k", b"other's", namespace="other")
    assert lightray.kv.get("k") == b"driver's"
    assert lightray.kv.get("k", namespace="tests") == b"driver's"    # init(namespace=)
    assert lightray.kv.get("k", namespace="other") == b"other's"
    assert lightray.kv.list(namespace="third") == []
    assert lightray.kv.delete("k", namespace="other") is True
    assert lightray.kv.get("k") == b"driver's"


def test_kv_works_inside_tasks_and_actors(kv_runtime):
    @lightray.remote
    def writer(key):
        return lightray.kv.put(key, b"from a task", namespace="tests")

    @lightray.remote
    class Reader:
        def read(self, key):
            return lightray.kv.get(key, namespace="tests", consistent=True)

    assert lightray.get(writer.remote("t")) is True
    assert lightray.kv.get("t") == b"from a task"
    reader = Reader.remote()
    assert lightray.get(reader.read.remote("t")) == b"from a task"


def test_unicode_keys_round_trip(kv_runtime):
    lightray.kv.put("clé/ü", b"v")
    assert lightray.kv.list("clé/") == ["clé/ü"]
    assert lightray.kv.get("clé/ü") == b"v"


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize("call, error, words", [
    (lambda: lightray.kv.put(b"bytes key", b"v"), TypeError, "key must be a str"),
    (lambda: lightray.kv.put("k", "text"), TypeError, "value must be bytes"),
    (lambda: lightray.kv.put("k", b"v", overwrite=1), TypeError, "overwrite must be a bool"),
    (lambda: lightray.kv.get(3), TypeError, "key must be a str"),
    (lambda: lightray.kv.get("k", consistent="yes"), TypeError, "consistent must be a bool"),
    (lambda: lightray.kv.list(b"p"), TypeError, "prefix must be a str"),
    (lambda: lightray.kv.delete(None), TypeError, "key must be a str"),
    (lambda: lightray.kv.compare_and_set("k", "x", b"y"), TypeError, "expected must be bytes"),
    (lambda: lightray.kv.compare_and_set("k", b"x", 5), TypeError, "new must be bytes"),
    (lambda: lightray.kv.put("k", b"v", namespace=""), TypeError, "namespace"),
    (lambda: lightray.kv.put("k", b"v", namespace=7), TypeError, "namespace"),
    (lambda: lightray.kv.put("k\udc80", b"v"), ValueError, "not encodable as UTF-8"),
    (lambda: lightray.kv.put("k", b"v", timeout=0), ValueError, "timeout"),
    (lambda: lightray.kv.get("k", timeout=-1), ValueError, "timeout"),
    (lambda: lightray.kv.get("k", timeout="1"), ValueError, "timeout"),
    (lambda: lightray.kv.put("k" * 70000, b"v"), ValueError, "key has 70000 bytes"),
])
def test_bad_arguments_raise_an_error_naming_the_argument(kv_runtime, call, error, words):
    with pytest.raises(error, match=words):
        call()


@pytest.mark.process_only("a request on the agent's socket")
def test_a_malformed_request_reaching_the_agent_is_answered_with_the_problem(kv_runtime):
    client = client_for_submission()
    for request in [("write", "explode", "ns", b"k", None, b"v", b"c", 1, 0),
                    ("get", "ns", "str key", False), ("nonsense",), "not a tuple",
                    ("write", "put", "ns", b"k", None, b"v", b"c", 1, 5)]:
        request_id, future = client.start_request(lambda rid: [(m.KV, rid, request)])
        status, why = future.result(10)
        client.end_request(request_id)
        assert status == "error" and why, request
    assert lightray.kv.put("still", b"serving") is True


def test_kv_timeout_error_is_a_get_timeout_error():
    assert issubclass(KVTimeoutError, GetTimeoutError)
    assert not issubclass(KVError, GetTimeoutError)


# ------------------------------------------------------------------ kv_write, applied once

def write(seq, mode="put", value=b"v", expected=None, done_below=0, client=b"writer-1"):
    return (KV_WRITE, client, seq, done_below, "ns", b"k", mode, expected, value, 1.0)


def test_a_kv_write_resent_with_the_same_token_is_applied_once():
    with ControlStore() as store:
        assert store.apply(write(1, "cas", value=b"1", expected=None)) is True
        store.apply(write(2, value=b"other"))
        # The retry of seq 1 (after a leader change, say) meets a changed key: it
        # gets its first result and changes nothing.
        assert store.apply(write(1, "cas", value=b"1", expected=None)) is True
        assert store.kv_get("ns", b"k") == b"other"


def test_a_token_below_its_clients_done_below_is_never_applied():
    with ControlStore() as store:
        store.apply(write(1, value=b"1"))
        store.apply(write(5, value=b"5", done_below=5))   # writes below 5 are over
        assert store.apply(write(3, value=b"late copy")) is False
        assert store.kv_get("ns", b"k") == b"5"
        # and the tokens below the floor are forgotten: the table stays small
        assert "b'writer-1', 1," not in store.dump()


def test_tokens_of_different_clients_are_independent():
    with ControlStore() as store:
        assert store.apply(write(1, "put_new", value=b"a", client=b"one")) is True
        assert store.apply(write(1, "put_new", value=b"b", client=b"two")) is False
        assert store.apply(write(2, "delete", value=None, client=b"two")) is True
        assert store.kv_get("ns", b"k") is None


@pytest.mark.parametrize("command, words", [
    (write(1, "put", value=None), "needs a value"),
    (write(1, "delete", value=b"v"), "takes no value"),
    (write(1, "put", expected=b"x"), "only mode 'cas'"),
    (write(1, "swap"), "mode must be one of"),
])
def test_a_malformed_kv_write_is_refused_naming_the_problem(command, words):
    with ControlStore() as store, pytest.raises(ValueError, match=words):
        store.apply(command)
