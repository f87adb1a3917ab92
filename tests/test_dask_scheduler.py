"""lightray.get(dsk, keys) as a Dask scheduler: graph forms, execution, failures,
per-task options and multiple returns."""
import importlib
import os
import time
from collections.abc import Mapping
from operator import add, getitem

import pytest

pytest.importorskip("dask")

import dask
import numpy as np
from conftest import SHM_PREFIX, attempts, shm_entries
from dask.local import get_sync
from dask.utils_test import GetFunctionTestMixin, inc

import lightray
from lightray import exceptions as lrexc

pytestmark = pytest.mark.both_modes

# Task functions live at module level: workers get the driver's sys.path, so
# they import this module like any other.

def pair(a, b):
    return (a, b)


def split_pair(n):
    return (n, n * 2)


def split_three(n):
    return {0: n, 1: n + 1, 2: n + 2}


def divide_by_zero_in_task(x):
    return x / 0


def make_big_array(nbytes):
    return np.ones(nbytes // 8)


def first_elements_sum(a):
    return float(a[:10].sum())


def large_new_segments_gone(_after, before, min_size, timeout):
    """Runs in a worker after the big array's only consumer: waits for its segment to go."""
    import os
    import time

    deadline = time.time() + timeout
    while True:
        left = []
        for name in os.listdir("/dev/shm"):
            if name.startswith(SHM_PREFIX) and name not in before:
                try:
                    if os.path.getsize(os.path.join("/dev/shm", name)) >= min_size:
                        left.append(name)
                except OSError:
                    pass
        if not left:
            return True
        if time.time() > deadline:
            return sorted(left)
        time.sleep(0.05)


class Traced:
    """A value that logs the pid of every process that unpickles it."""

    def __init__(self, logfile, payload):
        self.logfile = logfile
        self.payload = payload

    def __reduce__(self):
        return (rebuild_traced, (self.logfile, self.payload))


def rebuild_traced(logfile, payload):
    with open(logfile, "a") as f:
        f.write(f"{os.getpid()}\n")
    return Traced(logfile, payload)


def read_pids(logfile):
    try:
        with open(logfile) as f:
            return f.read().split()
    except FileNotFoundError:
        return []


def make_traced(logfile, n):
    return Traced(logfile, list(range(n)))


def traced_length(t):
    return len(t.payload)


def traced_first(t):
    return t.payload[0]


def log_task_id(logfile, tag, x):
    import lightray

    with open(logfile, "a") as f:
        f.write(f"{tag} {lightray.get_runtime_context().get_task_id()}\n")
    return x + 1


def assigned_resources(tag):
    import lightray

    return tag, lightray.get_runtime_context().get_assigned_resources()


def crash_worker(counter):
    import os

    with open(counter, "a") as f:
        f.write("x")
    os._exit(1)


# ------------------------------------------------------- Dask's own get tests

@pytest.mark.timeout(60)
class TestGetFunction(GetFunctionTestMixin):
    get = staticmethod(lightray.get)

    @pytest.fixture(autouse=True)
    def lightray_runtime(self, start_runtime):
        start_runtime(num_cpus=2)
        yield
        lightray.shutdown()


# ------------------------------------------------------------ entry points

@pytest.mark.timeout(30)
def test_scheduler_usable_through_dask_config_set(runtime):
    x = dask.delayed(sum)([1, 2, 3])
    with dask.config.set(scheduler=lightray.get):
        assert x.compute() == 6
        assert dask.compute(x, dask.delayed(inc)(x)) == (6, 7)


@pytest.mark.timeout(30)
def test_compute_initializes_lightray_when_not_running():
    assert not lightray.is_initialized()
    assert dask.delayed(sum)([1, 2]).compute(scheduler=lightray.get) == 3
    assert lightray.is_initialized()


@pytest.mark.timeout(30)
def test_get_on_object_refs_still_works_next_to_graphs(runtime):
    ref = lightray.put(5)
    assert lightray.get({"a": 1, "b": (inc, "a")}, "b") == 2
    assert lightray.get(ref) == 5
    assert lightray.get([ref, ref]) == [5, 5]
    assert lightray.get([]) == []


@pytest.mark.timeout(30)
def test_accepts_highlevelgraph(runtime):
    from dask.highlevelgraph import HighLevelGraph

    layers = {"a": {"x": 1, "y": (inc, "x")}, "b": {"z": (add, (inc, "x"), "y")}}
    graph = HighLevelGraph(layers, {"a": set(), "b": {"a"}})
    assert lightray.get(graph, "z") == 4
    assert lightray.get(graph, ["y", "z"]) == (2, 4)


@pytest.mark.timeout(30)
def test_accepts_expression_objects_dask_hands_to_schedulers(runtime):
    import dask.array as da

    seen = []

    def recording_get(dsk, keys, **kwargs):
        seen.append((dsk, keys))
        return lightray.get(dsk, keys, **kwargs)

    x = da.arange(12, chunks=4)
    assert x.sum().compute(scheduler=recording_get) == 66
    assert len(seen) == 1
    expr, keys = seen[0]
    assert hasattr(expr, "__dask_graph__") and not isinstance(expr, Mapping), type(expr)
    # The same expression object handed straight to lightray.get.
    assert lightray.get(expr, keys) == get_sync(expr, keys)


# -------------------------------------------------------------- graph forms

@pytest.mark.timeout(30)
def test_literal_values_and_aliases(runtime):
    dsk = {"a": 1, "b": "a", "c": "b", "d": (inc, "c"), "e": [1, 2, "a"]}
    assert lightray.get(dsk, "a") == 1
    assert lightray.get(dsk, "b") == 1
    assert lightray.get(dsk, "c") == 1
    assert lightray.get(dsk, "d") == 2
    assert lightray.get(dsk, ["b", "d"]) == (1, 2)


@pytest.mark.timeout(30)
def test_task_spec_objects(runtime):
    from dask._task_spec import Alias, DataNode, Dict, List, Task, TaskRef, Tuple

    dsk = {
        "a": DataNode("a", 1),
        "b": Task("b", add, TaskRef("a"), 10),
        "c": Alias("c", "b"),
        "d": Task("d", sum, List(TaskRef("a"), TaskRef("b"), 5)),
        "e": Task("e", pair, Dict(x=TaskRef("c"), y=List(1, 2)), Tuple(TaskRef("a"), TaskRef("d"))),
        "f": Task("f", sorted, List(TaskRef("b"), TaskRef("a")), reverse=True),
    }
    keys = ["a", "b", "c", "d", "e", "f"]
    result = lightray.get(dsk, keys)
    assert result == (1, 11, 11, 17, ({"x": 11, "y": [1, 2]}, (1, 17)), [11, 1])
    assert result == get_sync(dsk, keys)


@pytest.mark.timeout(30)
def test_legacy_and_task_spec_tasks_mixed_in_one_graph(runtime):
    from dask._task_spec import Task, TaskRef

    dsk = {
        ("x", 0): 1,
        ("x", 1): (inc, ("x", 0)),
        ("y", 0): Task(("y", 0), add, TaskRef(("x", 0)), TaskRef(("x", 1))),
        "total": (sum, [("x", 0), ("x", 1), ("y", 0)]),
    }
    assert lightray.get(dsk, "total") == 1 + 2 + 3
    assert lightray.get(dsk, [("y", 0), "total"]) == (3, 6)


@pytest.mark.timeout(30)
def test_nested_key_lists_give_results_with_same_nesting(runtime):
    dsk = {"x": 1, "y": 2, "z": (add, "x", "y")}
    keys = [["x", ["y"]], "z", [["z", "x"]]]
    result = lightray.get(dsk, keys)
    assert result == get_sync(dsk, keys)
    assert result == ((1, (2,)), 3, ((3, 1),))


@pytest.mark.timeout(30)
def test_unhashable_arguments_inside_tasks(runtime):
    dsk = {
        "x": 1,
        "y": (pair, {"k": "x", "lst": [1, "x"]}, ["x", ["x", 3], {2}]),
        "w": (len, [[1, 2], {"a": [3]}]),
        "v": (pair, {1, 2}, {"nested": {"deep": [1, 2]}}),
    }
    keys = ["y", "w", "v"]
    assert lightray.get(dsk, keys) == get_sync(dsk, keys)


@pytest.mark.timeout(30)
def test_inline_subtasks(runtime):
    assert lightray.get({"r": (add, (inc, 1), 2)}, "r") == 4
    dsk = {"a": 5, "r": (add, (inc, (inc, "a")), (sum, [(inc, "a"), 1]))}
    assert lightray.get(dsk, "r") == 7 + 7


@pytest.mark.timeout(60)
def test_chain_of_10000_task_spec_tasks_has_no_recursion_error(runtime):
    from dask._task_spec import DataNode, Task, TaskRef

    n = 10_000
    dsk = {"x0": DataNode("x0", 0)}
    for i in range(1, n + 1):
        dsk[f"x{i}"] = Task(f"x{i}", inc, TaskRef(f"x{i - 1}"))
    assert lightray.get(dsk, f"x{n}") == n


@pytest.mark.timeout(60)
def test_chain_of_10000_aliases_and_tasks_has_no_recursion_error(runtime):
    n = 10_000
    dsk = {"k0": 0}
    for i in range(1, n + 1):
        # every other key is a plain alias of the one before
        dsk[f"k{i}"] = f"k{i - 1}" if i % 2 else (inc, f"k{i - 1}")
    assert lightray.get(dsk, f"k{n}") == n // 2


@pytest.mark.timeout(30)
def test_missing_key_raises_key_error(runtime):
    with pytest.raises(KeyError):
        lightray.get({"a": 1}, "nope")
    with pytest.raises(KeyError):
        lightray.get({"a": 1}, [["a"], ["nope"]])


# ---------------------------------------------------------------- execution

@pytest.mark.process_only("checks which process unpickles a value")
@pytest.mark.timeout(30)
def test_intermediate_values_never_pass_through_the_driver(runtime, tmp_path):
    log = str(tmp_path / "unpickled_in")
    dsk = {
        "traced": (make_traced, log, 1000),
        # two consumers, so that no linear-chain fusion can make the value vanish
        "length": (traced_length, "traced"),
        "first": (traced_first, "traced"),
        "other": (inc, 1),
    }
    assert lightray.get(dsk, ["length", "first", "other"]) == (1000, 0, 2)
    pids = read_pids(log)
    assert pids, "the consumer never deserialized the intermediate value"
    assert str(os.getpid()) not in pids, (
        f"intermediate value was unpickled in the driver (pid {os.getpid()}): {pids}")


@pytest.mark.timeout(30)
def test_each_dask_task_runs_as_its_own_lightray_task(runtime, tmp_path):
    log = str(tmp_path / "task_ids")
    dsk = {
        "a": (log_task_id, log, "ran-a", 0),
        "b": (log_task_id, log, "ran-b", "a"),
        "c": (log_task_id, log, "ran-c", "b"),
    }
    assert lightray.get(dsk, "c") == 3
    with open(log) as f:
        entries = dict(line.split() for line in f)
    assert sorted(entries) == ["ran-a", "ran-b", "ran-c"]
    assert len(set(entries.values())) == 3, f"tasks shared a lightray task: {entries}"


@pytest.mark.process_only("checks which process unpickles a value")
@pytest.mark.timeout(30)
def test_unrequested_keys_are_not_fetched(runtime, tmp_path):
    log = str(tmp_path / "unpickled_in")
    dsk = {
        "traced": (make_traced, log, 10),
        "length": (traced_length, "traced"),
        "first": (traced_first, "traced"),
        "both": (add, "length", "first"),
    }
    assert lightray.get(dsk, "both") == 10
    pids = read_pids(log)
    assert str(os.getpid()) not in pids, pids


@pytest.mark.timeout(45)
def test_large_intermediate_released_once_its_only_consumer_finished(runtime):
    nbytes = 50_000_000
    before = shm_entries()
    dsk = {
        "big": (make_big_array, nbytes),
        "small": (first_elements_sum, "big"),
        # runs after "small" (its dependency) and waits inside a worker for the
        # big array's segment to disappear while the graph is still running
        "check": (large_new_segments_gone, "small", sorted(before), nbytes * 0.8, 10.0),
    }
    small, check = lightray.get(dsk, ["small", "check"])
    assert small == 10.0
    assert check is True, f"segment of the consumed intermediate still there: {check}"
    deadline = time.monotonic() + 5
    while shm_entries() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lightray.is_initialized()
    assert not shm_entries() - before, sorted(shm_entries() - before)


@pytest.mark.timeout(45)
def test_no_segments_of_a_run_remain_after_compute(runtime):
    before = shm_entries()
    dsk = {
        "big": (make_big_array, 50_000_000),
        "small": (first_elements_sum, "big"),
    }
    assert lightray.get(dsk, "small") == 10.0
    deadline = time.monotonic() + 5
    while shm_entries() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lightray.is_initialized()
    assert not shm_entries() - before, sorted(shm_entries() - before)


@pytest.mark.timeout(30)
def test_results_match_sync_scheduler_on_wide_graph(runtime):
    dsk = {("a", i): (inc, i) for i in range(50)}
    dsk.update({("b", i): (add, ("a", i), ("a", (i + 1) % 50)) for i in range(50)})
    dsk["total"] = (sum, [("b", i) for i in range(50)])
    keys = ["total", [("b", 0), ("b", 49)]]
    assert lightray.get(dsk, keys) == get_sync(dsk, keys)


# ----------------------------------------------------------------- failures

@pytest.mark.timeout(30)
def test_task_failure_raises_original_exception_type_with_remote_traceback(runtime):
    dsk = {"a": 1, "b": (divide_by_zero_in_task, "a"), "c": (inc, "b")}
    with pytest.raises(ZeroDivisionError) as ei:
        lightray.get(dsk, "c")
    assert "divide_by_zero_in_task" in str(ei.value)


@pytest.mark.timeout(30)
def test_failure_in_delayed_compute_raises_original_type(runtime):
    def raise_value_error_in_task():
        raise ValueError("bad value 4321")

    with pytest.raises(ValueError) as ei:
        dask.delayed(raise_value_error_in_task)().compute(scheduler=lightray.get)
    assert "bad value 4321" in str(ei.value)
    assert "raise_value_error_in_task" in str(ei.value)


@pytest.mark.timeout(30)
def test_runtime_keeps_working_after_a_failed_graph(runtime):
    with pytest.raises(ZeroDivisionError):
        lightray.get({"b": (divide_by_zero_in_task, 1)}, "b")
    assert lightray.get({"a": 1, "b": (inc, "a")}, "b") == 2


# -------------------------------------------------------- per-task options

@pytest.mark.timeout(30)
def test_annotated_custom_resource_and_call_level_num_cpus(start_runtime):
    start_runtime(num_cpus=2, resources={"special": 1})
    with dask.annotate(lightray={"resources": {"special": 1}}):
        a = dask.delayed(assigned_resources, pure=False)("a")
    b = dask.delayed(assigned_resources, pure=False)("b")
    (ta, ra), (tb, rb) = dask.compute(
        a, b, scheduler=lightray.get, lightray_remote_args={"num_cpus": 0.5})
    assert (ta, tb) == ("a", "b")
    assert ra.get("special") == 1, ra
    assert "special" not in rb, rb
    assert rb.get("CPU") == 0.5, rb


@pytest.mark.timeout(30)
def test_annotation_overrides_call_level_remote_args(start_runtime):
    start_runtime(num_cpus=2)
    with dask.annotate(lightray={"num_cpus": 2}):
        a = dask.delayed(assigned_resources, pure=False)("a")
    b = dask.delayed(assigned_resources, pure=False)("b")
    (_, ra), (_, rb) = dask.compute(
        a, b, scheduler=lightray.get, lightray_remote_args={"num_cpus": 0.5})
    assert ra.get("CPU") == 2, ra
    assert rb.get("CPU") == 0.5, rb


@pytest.mark.timeout(30)
def test_unknown_remote_arg_raises_value_error(runtime):
    x = dask.delayed(inc)(1)
    with pytest.raises(ValueError):
        x.compute(scheduler=lightray.get, lightray_remote_args={"bogus": 1})


@pytest.mark.timeout(30)
def test_unknown_annotated_option_raises_value_error(runtime):
    with dask.annotate(lightray={"bogus": 1}):
        x = dask.delayed(inc)(1)
    with pytest.raises(ValueError):
        x.compute(scheduler=lightray.get)


@pytest.mark.process_only("crashes worker processes")
@pytest.mark.timeout(45)
def test_annotated_max_retries_zero_is_not_retried(runtime, tmp_path):
    counter = str(tmp_path / "attempts")
    with dask.annotate(lightray={"max_retries": 0}):
        x = dask.delayed(crash_worker, pure=False)(counter)
    with pytest.raises(lrexc.WorkerCrashedError):
        x.compute(scheduler=lightray.get)
    assert attempts(counter) == 1


@pytest.mark.process_only("crashes worker processes")
@pytest.mark.timeout(45)
def test_call_level_max_retries_applies_to_tasks(runtime, tmp_path):
    counter = str(tmp_path / "attempts")
    x = dask.delayed(crash_worker, pure=False)(counter)
    with pytest.raises(lrexc.WorkerCrashedError):
        x.compute(scheduler=lightray.get, lightray_remote_args={"max_retries": 1})
    assert attempts(counter) == 2


# --------------------------------------------------------- multiple returns

def split_graph():
    return {
        "s": (split_pair, 10),
        ("g", 0): (getitem, "s", 0),
        ("g", 1): (getitem, "s", 1),
        "total": (add, ("g", 0), ("g", 1)),
    }


@pytest.mark.timeout(30)
def test_item_selections_of_a_split_give_correct_results(runtime):
    dsk = split_graph()
    assert lightray.get(dsk, "total") == 30
    assert lightray.get(dsk, [("g", 0), ("g", 1)]) == (10, 20)
    assert lightray.get(dsk, ["total", ("g", 1)]) == (30, 20)
    assert lightray.get(dsk, ["s", "total"]) == ((10, 20), 30)


@pytest.mark.timeout(30)
def test_split_with_dict_result_and_many_selections(runtime):
    dsk = {}
    for j in range(3):
        dsk[("split", j)] = (split_three, 10 * j)
        for i in range(3):
            dsk[("pick", j, i)] = (getitem, ("split", j), i)
    for i in range(3):
        dsk[("gather", i)] = (sum, [("pick", j, i) for j in range(3)])
    keys = [("gather", i) for i in range(3)]
    assert lightray.get(dsk, keys) == (30, 33, 36)


@pytest.mark.timeout(30)
def test_split_whose_result_is_also_used_whole(runtime):
    dsk = {
        "s": (split_pair, 10),
        "g0": (getitem, "s", 0),
        "whole": (len, "s"),
        "out": (add, "g0", "whole"),
    }
    assert lightray.get(dsk, "out") == 12


@pytest.mark.timeout(30)
def test_multi_return_optimization_submits_fewer_tasks(runtime):
    lrdask = importlib.import_module("lightray.dask")
    if not hasattr(lrdask, "last_run_stats"):
        pytest.skip("lightray.dask.last_run_stats() not available")
    dsk = {}
    for j in range(4):
        dsk[("split", j)] = (split_three, 10 * j)
        for i in range(3):
            dsk[("pick", j, i)] = (getitem, ("split", j), i)
    dsk["total"] = (sum, [("pick", j, i) for j in range(4) for i in range(3)])
    expected = sum(10 * j + i for j in range(4) for i in range(3))

    assert lightray.get(dsk, "total") == expected
    optimized = lrdask.last_run_stats()["tasks_submitted"]
    assert lightray.get(dsk, "total", lightray_multi_return=False) == expected
    plain = lrdask.last_run_stats()["tasks_submitted"]
    assert optimized < plain, (optimized, plain)
