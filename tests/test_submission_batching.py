"""Submissions through the agent are held and sent one frame per burst.

A held submission must still go out on its own (nobody calls get), and must
reach the agent before anything sent after it, on any channel.
"""
import os

from conftest import wait_for_file

import lightray


@lightray.remote
def touch(path):
    with open(path, "w") as f:
        f.write("ran")
    return path


@lightray.remote
def value_of(x):
    return x


@lightray.remote
class Reader:
    def first(self, refs):
        return lightray.get(refs[0])


def test_a_task_nobody_waits_for_still_runs(runtime, tmp_path):
    paths = [str(tmp_path / f"done{i}") for i in range(3)]
    refs = [touch.remote(p) for p in paths]
    # No get, no wait: the held submissions must be sent by the client itself.
    assert all(wait_for_file(p, timeout=30.0) for p in paths)
    assert lightray.get(refs, timeout=30) == paths


def test_a_burst_of_submissions_runs_every_task_in_order_of_results(runtime):
    refs = [value_of.remote(i) for i in range(2000)]
    assert lightray.get(refs, timeout=60) == list(range(2000))


def test_a_held_result_passed_inside_a_value_to_an_actor_is_found(runtime):
    reader = Reader.remote()
    assert lightray.get(reader.first.remote([value_of.remote(0)]), timeout=30) == 0
    for i in range(1, 50):
        ref = value_of.remote(i)     # held, then escapes to the actor's stream
        assert lightray.get(reader.first.remote([ref]), timeout=30) == i


def test_an_argument_dropped_right_after_submitting_stays_alive(runtime):
    refs = []
    for i in range(200):
        arg = lightray.put(os.urandom(64) + bytes([i % 256]))
        refs.append(value_of.remote(arg))
        del arg   # its DEC must not reach the agent before the held SUBMIT
    values = lightray.get(refs, timeout=60)
    assert [v[-1] for v in values] == [i % 256 for i in range(200)]


def test_nested_tasks_submitted_from_a_worker_all_run(runtime):
    @lightray.remote
    def outer(n):
        return sum(lightray.get([value_of.remote(i) for i in range(n)], timeout=60))

    assert lightray.get(outer.remote(500), timeout=90) == sum(range(500))
