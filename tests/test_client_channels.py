"""Actor channels as pure state: what the agent's notices do, without sockets or actors."""
from lightray.client.channels import (ALIVE, DEAD, LOST, NEW, RESTARTING, ActorChannel, Call,
                                      notice_action, take_inflight_for_retry)


def channel(max_task_retries=0):
    return ActorChannel(b"actor", {"class_name": "Counter", "max_task_retries": max_task_retries})


def call(name):
    return Call((name,), keep=[])


def test_a_new_channel_connects_when_the_actor_is_alive():
    assert channel().state == NEW
    assert notice_action(channel(), 0, ALIVE) == (True, ALIVE)


def test_a_notice_already_known_or_stale_does_nothing():
    ch = channel()
    ch.state, ch.incarnation = ALIVE, 2
    assert notice_action(ch, 2, ALIVE) == (False, None)
    assert notice_action(ch, 1, RESTARTING) == (False, None)
    ch.state = LOST   # our connection broke first: the same incarnation is no news
    assert notice_action(ch, 2, ALIVE) == (False, None)


def test_a_dead_channel_ignores_every_notice():
    ch = channel()
    ch.state = DEAD
    assert notice_action(ch, 5, ALIVE) == (False, None)


def test_a_restart_or_death_first_drains_the_old_connection():
    ch = channel()
    ch.state, ch.incarnation = ALIVE, 0
    assert notice_action(ch, 0, RESTARTING) == (True, RESTARTING)
    assert notice_action(ch, 0, DEAD) == (True, DEAD)
    assert notice_action(ch, 1, ALIVE) == (True, ALIVE)   # a new incarnation


def test_calls_with_retries_left_go_back_to_the_front_of_the_queue_in_order():
    ch = channel(max_task_retries=1)
    first, second, waiting = call("first"), call("second"), call("waiting")
    ch.inflight = {b"1": first, b"2": second}
    ch.queued.append(waiting)
    assert take_inflight_for_retry(ch) == []
    assert list(ch.queued) == [first, second, waiting]
    assert ch.inflight == {} and first.attempts == 1


def test_calls_without_retries_left_are_returned_to_be_failed():
    ch = channel(max_task_retries=1)
    spent, fresh = call("spent"), call("fresh")
    spent.attempts = 1
    ch.inflight = {b"1": spent, b"2": fresh}
    assert take_inflight_for_retry(ch) == [spent]
    assert list(ch.queued) == [fresh]


def test_max_task_retries_minus_one_means_retry_forever():
    ch = channel(max_task_retries=-1)
    forever = call("forever")
    forever.attempts = 10**6
    ch.inflight = {b"1": forever}
    assert take_inflight_for_retry(ch) == []
