"""The linearizability checker of tests/linearizability.py, on histories small
enough to judge by hand: it must accept the linearizable ones and reject the others."""
import random

from linearizability import INFINITY, Op, check, check_key


def op(kind, args, result, call, ret, key="k"):
    return Op(key, kind, args, result, call, ret)


def test_sequential_put_then_get_of_the_value_is_linearizable():
    assert check_key([op("put", (b"1",), True, 0, 1), op("get", (), b"1", 2, 3)])


def test_a_read_of_an_older_value_after_a_write_returned_is_rejected():
    history = [op("put", (b"1",), True, 0, 1), op("put", (b"2",), True, 2, 3),
               op("get", (), b"1", 4, 5)]
    assert not check_key(history)
    assert check(history) == "k"


def test_a_read_concurrent_with_a_write_may_see_either_value():
    for seen in (None, b"1"):
        assert check_key([op("put", (b"1",), True, 0, 10), op("get", (), seen, 1, 2)])
    assert not check_key([op("put", (b"1",), True, 0, 10), op("get", (), b"2", 1, 2)])


def test_two_reads_may_not_see_a_concurrent_write_in_opposite_orders():
    # Reader one sees the new value and returns; reader two, called later, sees the old one.
    history = [op("put", (b"new",), True, 0, 10), op("get", (), b"new", 1, 2),
               op("get", (), None, 3, 4)]
    assert not check_key(history)


def test_two_compare_and_sets_from_the_same_value_cannot_both_succeed():
    history = [op("put", (b"0",), True, 0, 1),
               op("cas", (b"0", b"a"), True, 2, 5), op("cas", (b"0", b"b"), True, 3, 6)]
    assert not check_key(history)
    history[2] = op("cas", (b"0", b"b"), False, 3, 6)
    assert check_key(history)


def test_a_write_of_unknown_outcome_may_have_happened_or_not():
    unknown = op("put", (b"x",), None, 0, INFINITY)
    assert check_key([unknown, op("get", (), b"x", 5, 6)])
    assert check_key([unknown, op("get", (), None, 5, 6)])
    # but not both ways in turn: once seen, it stays
    assert not check_key([unknown, op("get", (), b"x", 5, 6), op("get", (), None, 7, 8)])


def test_keys_are_checked_apart_and_the_bad_one_is_named():
    history = [op("put", (b"1",), True, 0, 1, key="a"), op("get", (), b"1", 2, 3, key="a"),
               op("put", (b"1",), True, 0, 1, key="b"), op("get", (), None, 2, 3, key="b")]
    assert check(history) == "b"


def test_delete_and_missing_values():
    assert check_key([op("delete", (), False, 0, 1), op("put", (b"1",), True, 2, 3),
                      op("delete", (), True, 4, 5), op("get", (), None, 6, 7)])
    assert not check_key([op("delete", (), True, 0, 1)])


def test_a_long_random_history_of_a_real_register_is_linearizable():
    # Five clients on one register, each op taking effect at a random point of its
    # interval: linearizable by construction, long enough to need the memo.
    rng = random.Random(7)
    value, history = None, []
    events = []
    for client in range(5):
        start = 0.0
        for _ in range(200):
            start += rng.random()
            length = rng.random() * 2
            events.append((start + rng.random() * length, start, start + length, client))
            start += length
    for effect, call, ret, client in sorted(events):
        choice = rng.randrange(3)
        if choice == 0:
            new = bytes([rng.randrange(3)])
            history.append(op("put", (new,), True, call, ret))
            value = new
        elif choice == 1:
            history.append(op("get", (), value, call, ret))
        else:
            expected, new = bytes([rng.randrange(3)]), bytes([rng.randrange(3)])
            holds = value == expected
            history.append(op("cas", (expected, new), holds, call, ret))
            value = new if holds else value
    assert check_key(history)
    # one read changed to a value never written there makes it fail
    index = next(i for i, h in enumerate(history) if h.kind == "get" and i > 500)
    history[index] = history[index]._replace(result=b"never")
    assert not check_key(history)
