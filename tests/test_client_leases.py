"""The driver's lease decisions, without sockets, workers or an agent."""
from lightray import task_spec as ts
from lightray.client.direct import Lease
from lightray.client.leases import (CANCELLED, CRASHED, IDLE_RETURN, RESUBMIT, RETRY_REQUEST,
                                    LeaseBook, lost_task_outcome)
from lightray.resources import shape_of

CPU = {"CPU": 1.0}


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def spec(task_id=b"t" * 14, max_retries=0, attempts=0):
    fields = [None] * len(ts.TaskSpec._fields)
    fields[ts.TASK_ID] = task_id
    fields[ts.MAX_RETRIES] = max_retries
    fields[ts.ATTEMPTS_MADE] = attempts
    return tuple(fields)


def book_with_lease(clock):
    book = LeaseBook(clock)
    lease = Lease("w1", shape_of(CPU), ({}, []), None)
    lease.last_used = clock()
    book.add(lease)
    return book, lease


def test_a_lease_is_asked_for_once_then_again_only_after_the_retry_delay():
    clock = Clock()
    book = LeaseBook(clock)
    assert book.wants_lease(CPU)
    assert not book.wants_lease(CPU)
    clock.now += RETRY_REQUEST + 0.001
    assert book.wants_lease(CPU)


def test_no_lease_is_asked_for_a_shape_already_leased():
    clock = Clock()
    book, _lease = book_with_lease(clock)
    clock.now += 10
    assert not book.wants_lease(CPU)


def test_an_answered_request_may_be_asked_again_at_once():
    book = LeaseBook(Clock())
    assert book.wants_lease(CPU)
    book.answered(shape_of(CPU))
    assert book.wants_lease(CPU)


def test_a_task_goes_to_a_free_lease_only_one_at_a_time():
    clock = Clock()
    book, lease = book_with_lease(clock)
    assert book.free_lease(CPU) is lease
    book.start(lease, spec())
    assert book.free_lease(CPU) is None          # busy: the agent's path
    assert book.lease_of_task(b"t" * 14) is lease
    assert book.finish(b"t" * 14) == (lease, spec())
    assert book.free_lease(CPU) is lease
    assert book.finish(b"t" * 14) is None        # answered already


def test_a_revoked_lease_takes_no_task_and_is_given_back_when_idle():
    clock = Clock()
    book, lease = book_with_lease(clock)
    lease.revoked = True
    assert book.free_lease(CPU) is None
    assert book.idle_leases() == [lease]


def test_a_lease_is_given_back_after_idle_return_but_never_while_busy():
    clock = Clock()
    book, lease = book_with_lease(clock)
    assert book.idle_leases() == []
    clock.now += IDLE_RETURN + 0.001
    assert book.idle_leases() == [lease]
    book.start(lease, spec())
    clock.now += 10
    assert book.idle_leases() == []


def test_a_forgotten_lease_is_no_longer_offered():
    clock = Clock()
    book, lease = book_with_lease(clock)
    book.forget(lease)
    assert book.free_lease(CPU) is None and book.by_worker == {}


def test_the_task_of_a_dead_worker_is_taken_off_its_lease():
    clock = Clock()
    book, lease = book_with_lease(clock)
    book.start(lease, spec())
    assert book.take_lost_task(lease) == spec()
    assert lease.inflight is None and book.lease_of_task(b"t" * 14) is None
    assert book.take_lost_task(lease) is None


def test_a_lost_task_is_resubmitted_while_it_has_retries_else_fails():
    assert lost_task_outcome(spec(max_retries=1, attempts=0), cancelled=False) == RESUBMIT
    assert lost_task_outcome(spec(max_retries=1, attempts=1), cancelled=False) == CRASHED
    assert lost_task_outcome(spec(max_retries=3), cancelled=True) == CANCELLED
