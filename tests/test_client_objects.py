"""The client's object table, without sockets or an agent: ready values, futures, segments."""
import os
import threading

import pytest

from lightray import exceptions, serialization
from lightray.client.ledger import RefLedger
from lightray.client.objects import ObjectTable
from lightray.serialization import ERROR, INLINE, SHARED
from lightray.store import shm
from lightray.transport import messages as m

A, B = b"a" * 16, b"b" * 16


class _Ref:
    """Stands in for an ObjectRef: the table only reads its id."""

    def __init__(self, object_id):
        self._id = object_id


def inline(value):
    return (INLINE, serialization.serialize_inline(value).inband)


def make_table(restore=None, in_io_thread=lambda: False):
    ledger = RefLedger()
    sent = []
    table = ObjectTable(ledger, send=sent.extend, send_locked=sent.extend,
                        restore=restore or (lambda object_id: pytest.fail("no restore expected")),
                        in_io_thread=in_io_thread)
    ledger._on_last_ref = table.forget
    return table, ledger, sent


def test_a_ready_value_is_kept_only_while_this_process_holds_a_ref():
    table, ledger, _ = make_table()
    ledger.add(A, owned=True)
    table.on_ready([(A, inline(1)), (B, inline(2))])
    assert A in table.ready and B not in table.ready
    assert table.materialize(A) == 1


def test_the_last_ref_dropped_forgets_the_value_and_the_subscription():
    table, ledger, sent = make_table()
    ledger.add(A, owned=False)
    table.subscribe_missing([A])
    table.on_ready([(A, inline(1))])
    ledger.pending_decs.append(A)
    ledger.apply_pending_decs()
    assert A not in table.ready and A not in table.subscribed


def test_subscribe_asks_once_and_never_for_objects_pushed_to_us():
    table, ledger, sent = make_table()
    ledger.add(A, owned=True)    # the agent pushes A to us unasked
    ledger.add(B, owned=False)
    assert table.subscribe_missing([A, B]) == [A, B]
    assert table.subscribe_missing([B]) == [B]
    assert sent == [(m.SUBSCRIBE, [B])]


def test_future_fires_with_the_value_or_the_error_when_ready():
    table, ledger, _ = make_table()
    ledger.add(A, owned=True)
    ledger.add(B, owned=True)
    value_future = table.future(_Ref(A))
    error_future = table.future(_Ref(B))
    assert not value_future.done()
    error = (ERROR, serialization.dumps_exception(ValueError("boom")))
    table.on_ready([(A, inline("v")), (B, error)])
    assert value_future.result(0) == "v"
    assert isinstance(error_future.exception(0), ValueError)


def test_future_of_a_ready_object_is_done_at_once():
    table, ledger, sent = make_table()
    ledger.add(A, owned=False)
    table.on_ready([(A, inline(3))])
    assert table.future(_Ref(A)).result(0) == 3
    assert sent == []


def test_when_ready_calls_back_once_even_for_objects_not_held():
    table, _ledger, sent = make_table()
    calls = []
    table.when_ready(_Ref(A), lambda: calls.append("A"))
    assert sent == [(m.SUBSCRIBE, [A])]
    table.on_ready([(A, inline(1))])
    table.on_ready([(A, inline(1))])
    assert calls == ["A"]


def test_when_ready_locked_says_false_for_a_ready_object():
    table, ledger, sent = make_table()
    ledger.add(A, owned=True)
    table.on_ready([(A, inline(1))])
    assert table.when_ready_locked(_Ref(A), lambda: None) is False
    assert table.when_ready_locked(_Ref(B), lambda: None) is True
    assert sent == [(m.SUBSCRIBE, [B])]


def test_wait_returns_at_the_timeout_and_when_enough_are_ready():
    table, ledger, _ = make_table()
    ledger.add(A, owned=True)
    table.wait([A], [A], 1, 0.01, lambda: None)   # times out quietly
    threading.Timer(0.05, table.on_ready, [[(A, inline(1))]]).start()
    table.wait([A], [A], 1, 5.0, lambda: None)
    assert A in table.ready


def test_wait_raises_once_the_client_stopped_and_fail_all_fails_futures():
    table, ledger, _ = make_table()
    ledger.add(A, owned=True)
    future = table.future(_Ref(A))
    table.fail_all(exceptions.RuntimeNotRunningError("stopped"))
    assert isinstance(future.exception(0), exceptions.RuntimeNotRunningError)
    with pytest.raises(exceptions.RuntimeNotRunningError, match="shutdown"):
        table.wait([A], [A], 1, None, lambda: "shutdown")


def _segment(value):
    serialized = serialization.serialize(value, oob_min=1)
    name = f"lrtest-objects-{os.getpid()}-{id(serialized)}"
    return name, shm.create_segment(name, serialized.inband, [b.raw() for b in serialized.buffers])


def test_a_segment_is_mapped_once_while_held_and_unmapped_when_spilled():
    table, ledger, _ = make_table()
    name, layout = _segment(b"x" * 100)
    try:
        ledger.add(A, owned=True)
        table.on_ready([(A, (SHARED, layout))])
        assert bytes(table.materialize(A)) == b"x" * 100
        mapping = table.mappings[A]
        table.materialize(A)
        assert table.mappings[A] is mapping
        table.drop_mappings([A])
        assert A not in table.mappings
    finally:
        shm.unlink(name)


def test_a_spilled_segment_is_restored_before_it_is_read():
    name, layout = _segment(b"y" * 10)
    restored = []

    def restore(object_id):
        restored.append(object_id)
        return (SHARED, layout)
    table, ledger, _ = make_table(restore=restore)
    try:
        gone = ("lrtest-objects-gone", layout[1], layout[2], layout[3])
        assert bytes(table.materialize_payload(A, (SHARED, gone))) == b"y" * 10
        assert restored == [A]
    finally:
        shm.unlink(name)


def test_a_future_of_a_spilled_object_is_settled_off_the_io_thread():
    name, layout = _segment(b"z" * 10)
    restored = threading.Event()

    def restore(object_id):
        assert threading.current_thread() is not threading.main_thread()
        restored.set()
        return (SHARED, layout)
    # This test's thread plays the I/O thread, which must not wait for a restore.
    table, ledger, _ = make_table(
        restore=restore,
        in_io_thread=lambda: threading.current_thread() is threading.main_thread())
    try:
        ledger.add(A, owned=True)
        future = table.future(_Ref(A))
        gone = ("lrtest-objects-gone", layout[1], layout[2], layout[3])
        table.on_ready([(A, (SHARED, gone))])   # "in the I/O thread": hands it off
        assert bytes(future.result(5)) == b"z" * 10
        assert restored.is_set()
    finally:
        shm.unlink(name)
