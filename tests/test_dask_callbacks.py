"""lightray.dask.Callback hooks, and Dask's own local diagnostics under lightray.get."""
import json
import os
import time
from collections.abc import Mapping
from operator import add

import pytest

pytest.importorskip("dask")

import dask  # noqa: E402
from dask.utils_test import inc  # noqa: E402

import lightray  # noqa: E402

pytestmark = pytest.mark.both_modes


def touch_and_inc(marker, x):
    open(marker, "a").close()
    return x + 1


def sleep_and_return(seconds, value):
    import time

    time.sleep(seconds)
    return value


def graph():
    return {"x": 1, "y": (inc, "x"), "z": (add, "x", "y")}


def recorder_class():
    """A Callback subclass that records its driver-side hooks."""
    from lightray.dask import Callback

    class Recorder(Callback):
        def __init__(self):
            self.presubmitted = []
            self.deps = {}
            self.postsubmitted = []
            self.submitted_all = []
            self.finished = []

        def presubmit(self, task, key, deps):
            self.presubmitted.append(key)
            self.deps[key] = deps

        def postsubmit(self, task, key, deps, object_ref):
            self.postsubmitted.append((key, object_ref))

        def postsubmit_all(self, object_refs, dsk):
            self.submitted_all.append((object_refs, dsk))

        def finish(self, result):
            self.finished.append(result)

    return Recorder


def worker_recorder_class():
    """A Callback subclass whose worker hooks append JSON lines to a file."""
    from lightray.dask import Callback

    class WorkerRecorder(Callback):
        def __init__(self, logfile, tag="w"):
            self.logfile = logfile
            self.tag = tag

        def pretask(self, key, object_refs):
            return f"{self.tag}-state-{key}"

        def posttask(self, key, result, pre_state):
            import json
            import os

            with open(self.logfile, "a") as f:
                f.write(json.dumps({"key": str(key), "result": repr(result),
                                    "pre_state": pre_state, "pid": os.getpid(),
                                    "tag": self.tag}) + "\n")

    return WorkerRecorder


def read_lines(logfile):
    try:
        with open(logfile) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def flatten(result):
    if isinstance(result, (list, tuple)):
        return [x for item in result for x in flatten(item)]
    return [result]


def refs_in(object_refs):
    values = object_refs.values() if isinstance(object_refs, Mapping) else object_refs
    return [r for r in values if isinstance(r, lightray.ObjectRef)]


# ------------------------------------------------------------ driver hooks

@pytest.mark.timeout(30)
def test_driver_hooks_see_submitted_tasks_and_final_result(runtime):
    cb = recorder_class()()
    with cb:
        assert lightray.get(graph(), "z") == 3
    assert {"y", "z"} <= set(cb.presubmitted), cb.presubmitted
    # deps: the dependencies of "z" - as keys, a {key: ref} mapping or their refs
    deps_z = cb.deps["z"]
    assert "y" in deps_z or refs_in(deps_z), cb.deps
    post_keys = [k for k, _ in cb.postsubmitted]
    assert {"y", "z"} <= set(post_keys), post_keys
    assert all(isinstance(ref, lightray.ObjectRef) for _, ref in cb.postsubmitted), cb.postsubmitted
    assert len(cb.submitted_all) == 1
    object_refs, _dsk = cb.submitted_all[0]
    assert refs_in(object_refs), object_refs
    assert cb.finished == [3]


@pytest.mark.timeout(30)
def test_presubmit_value_becomes_result_and_task_is_not_submitted(runtime, tmp_path):
    from lightray.dask import Callback

    marker = str(tmp_path / "y_ran")

    class Replace(Callback):
        def __init__(self):
            self.postsubmitted = []

        def presubmit(self, task, key, deps):
            return 100 if key == "y" else None

        def postsubmit(self, task, key, deps, object_ref):
            self.postsubmitted.append(key)

    dsk = {"x": 1, "y": (touch_and_inc, marker, "x"), "z": (add, "x", "y")}
    cb = Replace()
    with cb:
        assert lightray.get(dsk, "z") == 101
        assert lightray.get(dsk, "y") == 100
    assert "y" not in cb.postsubmitted
    assert "z" in cb.postsubmitted
    assert not os.path.exists(marker), "task of a key answered by presubmit still ran"


@pytest.mark.process_only("worker hooks run in worker processes")
@pytest.mark.timeout(30)
def test_worker_hooks_run_in_workers_and_pass_pretask_state_to_posttask(runtime, tmp_path):
    log = str(tmp_path / "posttask.jsonl")
    dsk = {"a": (inc, 1), "b": (inc, 10), "c": (add, "a", "b")}
    with worker_recorder_class()(log):
        assert lightray.get(dsk, "c") == 13
    lines = read_lines(log)
    by_key = {line["key"]: line for line in lines}
    assert sorted(by_key) == ["a", "b", "c"], lines
    assert len(lines) == 3, lines
    assert [by_key[k]["result"] for k in "abc"] == ["2", "11", "13"]
    for k in "abc":
        assert by_key[k]["pre_state"] == f"w-state-{k}"
        assert by_key[k]["pid"] != os.getpid(), "posttask ran in the driver"


@pytest.mark.timeout(30)
def test_nested_callback_contexts_are_all_called(runtime, tmp_path):
    Recorder = recorder_class()
    WorkerRecorder = worker_recorder_class()
    log = str(tmp_path / "posttask.jsonl")
    outer, inner = Recorder(), Recorder()
    with outer, WorkerRecorder(log, tag="one"):
        with inner, WorkerRecorder(log, tag="two"):
            assert lightray.get(graph(), "z") == 3
    for cb in (outer, inner):
        assert {"y", "z"} <= set(cb.presubmitted)
        assert cb.finished == [3]
    tags = sorted(line["tag"] for line in read_lines(log) if line["key"] == "z")
    assert tags == ["one", "two"]


@pytest.mark.timeout(30)
def test_callback_is_inactive_after_its_with_block(runtime):
    cb = recorder_class()()
    with cb:
        assert lightray.get(graph(), "z") == 3
    seen = list(cb.presubmitted)
    assert lightray.get(graph(), "z") == 3
    assert dask.delayed(inc)(1).compute(scheduler=lightray.get) == 2
    assert cb.presubmitted == seen
    assert cb.finished == [3]


@pytest.mark.timeout(30)
def test_per_call_callbacks_apply_to_that_call_only(runtime, tmp_path):
    cb = recorder_class()()
    log = str(tmp_path / "posttask.jsonl")
    worker_cb = worker_recorder_class()(log)
    x = dask.delayed(inc)(1)
    y = dask.delayed(add)(x, 10)
    assert y.compute(scheduler=lightray.get, lightray_callbacks=[cb, worker_cb]) == 12
    assert str(y.key) in {str(k) for k in cb.presubmitted}, cb.presubmitted
    # finish gets what the scheduler returns for the keys Dask asked for
    assert [flatten(r) for r in cb.finished] == [[12]], cb.finished
    assert {line["key"] for line in read_lines(log)} >= {str(y.key)}
    seen, lines = list(cb.presubmitted), len(read_lines(log))
    assert y.compute(scheduler=lightray.get) == 12
    assert cb.presubmitted == seen
    assert len(read_lines(log)) == lines


@pytest.mark.timeout(30)
def test_per_call_and_context_callbacks_combine(runtime):
    Recorder = recorder_class()
    ambient, per_call = Recorder(), Recorder()
    with ambient:
        x = dask.delayed(inc)(41)
        assert x.compute(scheduler=lightray.get, lightray_callbacks=[per_call]) == 42
    assert [flatten(r) for r in ambient.finished] == [[42]], ambient.finished
    assert [flatten(r) for r in per_call.finished] == [[42]], per_call.finished


# ----------------------------------------------------- Dask's diagnostics

@pytest.mark.timeout(30)
def test_progress_bar_reaches_100_percent(runtime, capsys):
    from dask.diagnostics import ProgressBar

    tasks = [dask.delayed(sleep_and_return)(0.05, i) for i in range(6)]
    with ProgressBar():
        assert dask.compute(*tasks, scheduler=lightray.get) == tuple(range(6))
    out = capsys.readouterr().out
    assert "100% Completed" in out, out


@pytest.mark.timeout(30)
def test_profiler_records_one_entry_per_task(runtime):
    from dask.diagnostics import Profiler

    dsk = {"a": (sleep_and_return, 0.05, 1), "b": (sleep_and_return, 0.05, 2), "c": (add, "a", "b")}
    with Profiler() as prof:
        assert lightray.get(dsk, "c") == 3
    results = prof.results
    assert sorted(r.key for r in results) == ["a", "b", "c"], results
    for r in results:
        assert r.start_time <= r.end_time, r


@pytest.mark.timeout(30)
def test_resource_profiler_collects_samples(runtime):
    from dask.diagnostics import ResourceProfiler

    tasks = [dask.delayed(sleep_and_return)(0.3, i) for i in range(4)]
    t0 = time.monotonic()
    with ResourceProfiler(dt=0.05) as rprof:
        assert dask.compute(*tasks, scheduler=lightray.get) == (0, 1, 2, 3)
    assert time.monotonic() - t0 > 0.5
    assert len(rprof.results) > 0
