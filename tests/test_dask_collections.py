"""Dask collections (array, dataframe, delayed) on lightray.get: results, persist, shuffles."""
import functools
import importlib

import pytest

pytest.importorskip("dask")

import dask  # noqa: E402
import dask.array as da  # noqa: E402
import numpy as np  # noqa: E402

import lightray  # noqa: E402
import lightray.dask as lightray_dask  # noqa: E402

pytestmark = pytest.mark.both_modes

dd = pytest.importorskip("dask.dataframe")
pd = pytest.importorskip("pandas")


# Task functions at module level: workers import this module by name.

def count_call_and_double(block, counter):
    with open(counter, "a") as f:
        f.write("x")
    return block * 2


def count_call_and_return(counter, value):
    with open(counter, "a") as f:
        f.write("x")
    return value


def calls(counter):
    try:
        with open(counter) as f:
            return len(f.read())
    except FileNotFoundError:
        return 0


def contains_object_ref(obj, depth=0, seen=None):
    """Whether an ObjectRef is somewhere inside a graph value (tasks, containers, attributes)."""
    if isinstance(obj, lightray.ObjectRef):
        return True
    if depth > 25 or obj is None or isinstance(obj, (str, bytes, int, float, complex, bool, type)):
        return False
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return False
    seen.add(id(obj))
    if isinstance(obj, dict):
        children = list(obj.values()) + list(obj.keys())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children = list(obj)
    elif isinstance(obj, functools.partial):
        children = [obj.func, obj.args, obj.keywords]
    elif isinstance(obj, np.ndarray) or callable(obj) and not hasattr(obj, "args"):
        return False
    else:
        children = [getattr(obj, a, None) for a in ("args", "kwargs", "value", "target", "func")]
        attrs = getattr(obj, "__dict__", None) or {}
        children += list(attrs.values())
        for cls in type(obj).__mro__:
            for slot in getattr(cls, "__slots__", ()):
                if isinstance(slot, str):
                    children.append(getattr(obj, slot, None))
    return any(contains_object_ref(c, depth + 1, seen) for c in children)


@pytest.fixture
def frame():
    rng = np.random.default_rng(0)
    n = 400
    return pd.DataFrame({
        "x": rng.integers(0, 50, n),
        "y": rng.normal(size=n),
        "g": rng.integers(0, 5, n),  # ints: no string-dtype conversion by dask
    })


# ------------------------------------------------------------------- arrays

@pytest.mark.timeout(30)
def test_array_reductions_match_numpy(runtime):
    data = np.arange(10_000, dtype=float).reshape(100, 100)
    x = da.from_array(data, chunks=25)
    total, mean, colmax = dask.compute(x.sum(), x.mean(), x.max(axis=0), scheduler=lightray.get)
    assert total == data.sum()
    assert mean == pytest.approx(data.mean())
    np.testing.assert_array_equal(colmax, data.max(axis=0))


@pytest.mark.timeout(30)
def test_array_matmul_and_transpose_match_numpy(runtime):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(60, 40))
    b = rng.normal(size=(40, 30))
    x = da.from_array(a, chunks=(20, 20))
    y = da.from_array(b, chunks=(20, 15))
    out = (x @ y + x[:, :30]).T.compute(scheduler=lightray.get)
    np.testing.assert_allclose(out, (a @ b + a[:, :30]).T)


@pytest.mark.timeout(30)
def test_array_rechunk_matches_numpy(runtime):
    data = np.arange(1200).reshape(40, 30)
    x = da.from_array(data, chunks=(7, 11)).rechunk((13, 4))
    np.testing.assert_array_equal(x.compute(scheduler=lightray.get), data)


@pytest.mark.timeout(30)
def test_config_set_scheduler_applies_to_array_compute(runtime):
    x = da.ones((20, 20), chunks=5)
    with dask.config.set(scheduler=lightray.get):
        assert (x + 1).sum().compute() == 800


# --------------------------------------------------------------- dataframes

@pytest.mark.timeout(30)
def test_dataframe_groupby_matches_pandas(runtime, frame):
    ddf = dd.from_pandas(frame, npartitions=4)
    got = ddf.groupby("g").y.sum().compute(scheduler=lightray.get)
    pd.testing.assert_series_equal(got.sort_index(), frame.groupby("g").y.sum().sort_index())


@pytest.mark.timeout(30)
def test_dataframe_filter_and_assign_match_pandas(runtime, frame):
    ddf = dd.from_pandas(frame, npartitions=4)
    got = ddf[ddf.x > 10].assign(z=lambda d: d.x * 2 + d.y).compute(scheduler=lightray.get)
    want = frame[frame.x > 10].assign(z=lambda d: d.x * 2 + d.y)
    pd.testing.assert_frame_equal(got, want)


@pytest.mark.timeout(45)
def test_set_index_with_task_shuffle_matches_pandas(runtime, frame):
    ddf = dd.from_pandas(frame, npartitions=6)
    got = ddf.set_index("x", shuffle_method="tasks").compute(scheduler=lightray.get)
    want = frame.set_index("x")
    assert got.index.is_monotonic_increasing
    pd.testing.assert_frame_equal(
        got.reset_index().sort_values(["x", "y"]).reset_index(drop=True),
        want.reset_index().sort_values(["x", "y"]).reset_index(drop=True))


@pytest.mark.timeout(45)
def test_task_shuffle_puts_each_value_in_one_partition(runtime, frame):
    ddf = dd.from_pandas(frame, npartitions=6)
    shuffled = ddf.shuffle("x", shuffle_method="tasks")
    parts = dask.compute(*shuffled.to_delayed(), scheduler=lightray.get)
    combined = pd.concat(parts)
    pd.testing.assert_frame_equal(
        combined.sort_values(["x", "y"]).reset_index(drop=True),
        frame.sort_values(["x", "y"]).reset_index(drop=True))
    owners = {}
    for i, part in enumerate(parts):
        for value in part.x.unique():
            assert owners.setdefault(value, i) == i, f"x={value} in partitions {owners[value]} and {i}"


@pytest.mark.timeout(45)
def test_task_shuffle_with_multi_return_submits_fewer_tasks(runtime, frame):
    lrdask = importlib.import_module("lightray.dask")
    if not hasattr(lrdask, "last_run_stats"):
        pytest.skip("lightray.dask.last_run_stats() not available")
    ddf = dd.from_pandas(frame, npartitions=6)
    shuffled = ddf.set_index("x", shuffle_method="tasks")
    optimized_result = shuffled.compute(scheduler=lightray.get)
    optimized = lrdask.last_run_stats()["tasks_submitted"]
    plain_result = shuffled.compute(scheduler=lightray.get, lightray_multi_return=False)
    plain = lrdask.last_run_stats()["tasks_submitted"]
    pd.testing.assert_frame_equal(optimized_result, plain_result)
    assert optimized < plain, (optimized, plain)


# ------------------------------------------------------------------ delayed

@pytest.mark.timeout(30)
def test_delayed_graph_computes(runtime):
    @dask.delayed
    def load(i):
        return list(range(i))

    @dask.delayed
    def summarize(parts):
        return {"n": sum(len(p) for p in parts), "total": sum(sum(p) for p in parts)}

    result = summarize([load(i) for i in range(6)]).compute(scheduler=lightray.get)
    assert result == {"n": 15, "total": sum(sum(range(i)) for i in range(6))}


# ------------------------------------------------------------------ persist

@pytest.mark.timeout(30)
def test_persisted_array_graph_holds_object_refs(runtime):
    x = (da.arange(16, chunks=4) + 1).persist(scheduler=lightray.get)
    graph = dict(x.__dask_graph__())
    assert any(contains_object_ref(v) for v in graph.values()), graph
    np.testing.assert_array_equal(x.compute(scheduler=lightray.get), np.arange(16) + 1)


@pytest.mark.timeout(30)
def test_persisted_array_is_computed_once_and_reused(runtime, tmp_path):
    counter = str(tmp_path / "calls")
    x = da.arange(16, chunks=4).map_blocks(
        count_call_and_double, counter, dtype=int, meta=np.array((), dtype=int))
    baseline = calls(counter)
    y = x.persist(scheduler=lightray.get)  # may return before the chunks are done
    np.testing.assert_array_equal(y.compute(scheduler=lightray.get), np.arange(16) * 2)
    assert calls(counter) - baseline == 4  # once per chunk
    assert (y + 1).sum().compute(scheduler=lightray.get) == (np.arange(16) * 2 + 1).sum()
    assert calls(counter) - baseline == 4


@pytest.mark.timeout(30)
def test_dask_persist_of_several_collections_computes_each_once(runtime, tmp_path):
    counter = str(tmp_path / "calls")
    a = dask.delayed(count_call_and_return, pure=False)(counter, 1)
    b = dask.delayed(count_call_and_return, pure=False)(counter, 2)
    x = da.arange(8, chunks=4).map_blocks(
        count_call_and_double, counter, dtype=int, meta=np.array((), dtype=int))
    baseline = calls(counter)
    pa, pb, px = dask.persist(a, b, x, scheduler=lightray.get)
    for p in (pa, pb, px):
        assert any(contains_object_ref(v) for v in dict(p.__dask_graph__()).values())
    assert dask.compute(pa, pb, scheduler=lightray.get) == (1, 2)
    np.testing.assert_array_equal(px.compute(scheduler=lightray.get), np.arange(8) * 2)
    assert calls(counter) - baseline == 4
    assert (pa + pb).compute(scheduler=lightray.get) == 3
    assert px.sum().compute(scheduler=lightray.get) == 2 * sum(range(8))
    assert calls(counter) - baseline == 4


@pytest.mark.timeout(30)
def test_persisted_dataframe_reused_in_later_computations(runtime, frame):
    ddf = dd.from_pandas(frame, npartitions=4)
    persisted = (ddf.assign(z=ddf.x * 3)).persist(scheduler=lightray.get)
    assert any(contains_object_ref(v) for v in dict(persisted.__dask_graph__()).values())
    got = persisted.groupby("g").z.sum().compute(scheduler=lightray.get)
    want = frame.assign(z=frame.x * 3).groupby("g").z.sum()
    pd.testing.assert_series_equal(got.sort_index(), want.sort_index())


@pytest.mark.timeout(30)
def test_persisted_graph_holds_the_object_refs_themselves_as_values(runtime):
    x = (da.arange(16, chunks=4) + 1).persist(scheduler=lightray.get)
    # x.dask[key] is what dask's helpers read; older dasks also had collections_to_dsk.
    to_dsk = getattr(dask.base, "collections_to_dsk", None)
    dsk = to_dsk([x]) if to_dsk is not None else x.dask
    chunk_keys = [(x.name, i) for i in range(4)]
    refs = [dsk[k] for k in chunk_keys] + [x.dask[k] for k in chunk_keys]
    assert all(type(r) is lightray.ObjectRef for r in refs), refs
    # Future-like where dask looks (dask.array.utils._check_chunks).
    np.testing.assert_array_equal(refs[1].result(), np.arange(4, 8) + 1)


@pytest.mark.timeout(60)
def test_dask_assert_eq_on_a_persisted_array_reads_chunks_from_refs(runtime):
    from dask.array.utils import assert_eq
    x = da.ones((10, 10), chunks=(5, 5)) * 2
    assert_eq(x, np.ones((10, 10)) * 2, scheduler=lightray.get)
    assert_eq(x.sum(axis=0), np.full(10, 20.0), scheduler=lightray.get)


class RecordDependencies(lightray_dask.Callback):
    def __init__(self):
        self.dependencies = []

    def presubmit(self, task, key, deps):
        self.dependencies.extend(deps)


@pytest.mark.timeout(30)
def test_graph_with_refs_passes_them_to_tasks_without_fetching_values(runtime):
    x = (da.arange(16, chunks=4) * 3).persist(scheduler=lightray.get)
    refs = {x.dask[(x.name, i)] for i in range(4)}
    for total in ((x + 1).sum(), x.sum(), (x[2:] * 2).max()):
        recorder = RecordDependencies()
        with recorder:
            total.compute(scheduler=lightray.get)
        # Each chunk reaches its task as the persisted ref (fused or not).
        passed = {d for d in recorder.dependencies if isinstance(d, lightray.ObjectRef)}
        assert passed & refs, recorder.dependencies
        assert not any(isinstance(d, np.ndarray) for d in recorder.dependencies)
    assert (x + 1).sum().compute(scheduler=lightray.get) == (np.arange(16) * 3 + 1).sum()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes", "executor"])
def test_persisted_collection_with_another_scheduler_raises_error_naming_lightray(
        runtime, scheduler):
    import concurrent.futures

    from lightray.dask.guard import PersistedOnLightrayError
    executor = concurrent.futures.ThreadPoolExecutor(1) if scheduler == "executor" else None
    x = (da.arange(16, chunks=4) + 1).persist(scheduler=lightray.get)
    try:
        with pytest.raises(PersistedOnLightrayError, match="scheduler=lightray.get"):
            x.compute(scheduler=executor or scheduler)
        with pytest.raises(PersistedOnLightrayError, match="lightray ObjectRef"):
            (x * 2).sum().compute(scheduler=executor or scheduler)
    finally:
        if executor is not None:
            executor.shutdown()


@pytest.mark.timeout(30)
def test_other_schedulers_still_run_graphs_without_refs(runtime):
    import lightray.dask  # noqa: F401  (installs the guard)
    x = da.arange(16, chunks=4) + 1
    assert x.sum().compute(scheduler="sync") == (np.arange(16) + 1).sum()
    assert dask.delayed(sum)([1, 2]).compute(scheduler="threads") == 3


@pytest.mark.timeout(60)
def test_persist_in_local_mode_without_copies_keeps_the_values_as_dask_sync_does():
    pytest.importorskip("lightray.local")   # local mode (init(local_mode=True))
    lightray.init(local_mode=True, copy_values=False)
    try:
        x = (da.arange(16, chunks=4) + 1).persist(scheduler=lightray.get)
        chunks = [x.dask[(x.name, i)] for i in range(4)]
        assert all(type(c) is np.ndarray for c in chunks), chunks
        np.testing.assert_array_equal(chunks[1], np.arange(4, 8) + 1)
        assert (x * 2).sum().compute(scheduler=lightray.get) == 2 * (np.arange(16) + 1).sum()
    finally:
        lightray.shutdown()
