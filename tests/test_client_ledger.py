"""The client's reference ledger, without sockets or processes: exact messages."""
from lightray.client.ledger import RefLedger
from lightray.transport import messages as m

A, B, C = b"a" * 16, b"b" * 16, b"c" * 16


def drop(ledger, *object_ids):
    """What ObjectRef.__del__ does: queue, lock-free, applied later."""
    ledger.pending_decs.extend(object_ids)


def test_first_ref_sends_inc_and_last_drop_sends_dec():
    ledger = RefLedger()
    ledger.add(A, owned=False)
    ledger.add(A, owned=False)
    assert ledger.take_ops() == [(m.INC, [A])]
    drop(ledger, A)
    assert ledger.take_ops() == []          # one ref still alive
    drop(ledger, A)
    assert ledger.take_ops() == [(m.DEC, [A])]
    assert not ledger.holds(A)


def test_consecutive_transitions_of_one_kind_fold_into_one_op_in_order():
    ledger = RefLedger()
    ledger.add(A, owned=False)
    ledger.add(B, owned=False)
    drop(ledger, A)
    ledger.add(C, owned=False)   # applies A's drop first: order is kept
    assert ledger.take_ops() == [(m.INC, [A, B]), (m.DEC, [A]), (m.INC, [C])]
    assert ledger.take_ops() == []


def test_owned_ref_sends_no_inc_but_its_last_drop_sends_dec():
    ledger = RefLedger()
    ledger.add(A, owned=True)
    assert A in ledger.owned
    assert ledger.take_ops() == []
    drop(ledger, A)
    assert ledger.take_ops() == [(m.DEC, [A])]
    assert A not in ledger.owned


def test_decrements_wait_in_pending_until_applied_and_mark_the_ledger_dirty():
    ledger = RefLedger()
    ledger.add(A, owned=True)
    assert not ledger.dirty
    drop(ledger, A)
    assert ledger.dirty and ledger.holds(A)  # nothing applied by __del__ itself
    ledger.apply_pending_decs()
    assert not ledger.holds(A) and ledger.dirty   # the DEC waits to be sent
    ledger.take_ops()
    assert not ledger.dirty


def test_drop_of_an_id_never_counted_is_ignored():
    forgotten = []
    ledger = RefLedger(on_last_ref=forgotten.append)
    drop(ledger, A)
    assert ledger.take_ops() == []
    assert forgotten == []


def test_last_drop_tells_the_owner_to_forget_the_object_once():
    forgotten = []
    ledger = RefLedger(on_last_ref=forgotten.append)
    ledger.add(A, owned=False)
    ledger.add(A, owned=False)
    drop(ledger, A, A)
    ledger.apply_pending_decs()
    assert forgotten == [A]


def test_unregistered_result_dropped_sends_nothing():
    ledger = RefLedger()
    ledger.add(A, owned=True)
    ledger.add_unregistered([A])
    drop(ledger, A)
    assert ledger.take_ops() == []
    assert A not in ledger.unregistered


def test_escaped_ref_is_not_decremented_before_the_agent_knows():
    """An unregistered result escaping with its value is REGISTERed first; from
    then on the agent counts it, so the last drop sends a DEC after it."""
    ledger = RefLedger()
    ledger.add(A, owned=True)
    ledger.add_unregistered([A])
    payload = (0, b"value")
    ops = ledger.escape([A, B], {A: payload})
    assert ops == [(m.REGISTER, A, payload, [])]   # B is not ours to register
    assert A not in ledger.unregistered and A not in ledger.promised
    drop(ledger, A)
    assert ledger.take_ops() == [(m.DEC, [A])]


def test_escape_without_the_value_promises_it_and_settle_fulfils_the_promise():
    ledger = RefLedger()
    ledger.add(A, owned=True)
    ledger.add_unregistered([A])
    assert ledger.escape([A], {}) == [(m.REGISTER, A, None, [])]
    assert A in ledger.promised and ledger.awaits_registration(A)
    payload = (0, b"late")
    ops, items = ledger.settle([A], [payload], registered=False)
    assert ops == [(m.REGISTER, A, payload, [])]
    assert items == [(A, payload)]
    assert not ledger.awaits_registration(A)


def test_escape_twice_registers_once():
    ledger = RefLedger()
    ledger.add_unregistered([A])
    assert len(ledger.escape([A], {A: (0, b"v")})) == 1
    assert ledger.escape([A], {A: (0, b"v")}) == []


def test_settle_of_a_result_not_escaped_sends_nothing():
    ledger = RefLedger()
    ledger.add(A, owned=True)
    ledger.add_unregistered([A])
    payload = (0, b"v")
    assert ledger.settle([A], [payload], registered=False) == ([], [(A, payload)])
    assert ledger.awaits_registration(A)    # still known only here


def test_result_registered_by_the_worker_is_counted_by_the_agent_from_then_on():
    ledger = RefLedger()
    ledger.add(A, owned=True)
    ledger.add_unregistered([A])
    ops, items = ledger.settle([A], [(1, "segment")], registered=True)
    assert ops == [] and items == [(A, (1, "segment"))]
    drop(ledger, A)
    assert ledger.take_ops() == [(m.DEC, [A])]   # no longer unregistered


def test_registered_result_we_dropped_meanwhile_is_decremented_at_once():
    ledger = RefLedger()
    ledger.add(A, owned=True)
    ledger.add_unregistered([A])
    drop(ledger, A)
    ledger.apply_pending_decs()            # dropped while unregistered: no DEC
    ledger.add_unregistered([A])           # (the answer raced the drop)
    ops, _items = ledger.settle([A], [(1, "segment")], registered=True)
    assert ops == [(m.DEC, [A])]


def test_registered_settle_clears_a_promise():
    ledger = RefLedger()
    ledger.add(A, owned=True)
    ledger.add_unregistered([A])
    ledger.escape([A], {})
    ops, _items = ledger.settle([A], [(1, "segment")], registered=True)
    assert ops == [] and A not in ledger.promised


def test_resubmitted_results_are_decremented_only_when_no_longer_held():
    ledger = RefLedger()
    ledger.add(A, owned=True)
    ledger.add_unregistered([A, B])
    ledger.escape([B], {})                 # B promised
    assert ledger.resubmitted([A, B]) == [(m.DEC, [B])]
    assert not ledger.awaits_registration(A) and not ledger.awaits_registration(B)
    assert ledger.resubmitted([A]) == []
