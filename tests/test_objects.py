"""put/get, the shared-memory object store, zero-copy numpy, reference counting."""
import dataclasses
import gc
import time

import numpy as np
import pytest
from conftest import shm_entries, wait_for

import lightray

pytestmark = pytest.mark.both_modes

BIG = 1 << 20  # 1 MiB, comfortably above the 100 KiB inline threshold


@dataclasses.dataclass
class Holder:
    name: str
    array: np.ndarray




def assert_zero_copy_view(arr, expected):
    assert isinstance(arr, np.ndarray)
    np.testing.assert_array_equal(arr, expected)
    assert arr.dtype == expected.dtype
    assert arr.flags.writeable is False, "array from the shm store must be read-only"
    assert arr.flags.owndata is False, "array from the shm store must be a view, not a copy"


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "value",
    [0, -7, 3.5, "text", b"bytes", None, True, (1, 2), [1, [2, 3]], {"a": {"b": 1}}, {1, 2}],
    ids=lambda v: type(v).__name__,
)
def test_put_get_roundtrip_small_values(runtime, value):
    assert lightray.get(lightray.put(value)) == value


@pytest.mark.timeout(30)
def test_put_get_roundtrip_large_bytes(runtime):
    data = bytes(range(256)) * (5 * 4096)  # 5 MiB
    assert lightray.get(lightray.put(data)) == data


@pytest.mark.process_only("shared-memory segments")
@pytest.mark.timeout(30)
def test_put_of_small_value_creates_no_shm_segment(runtime):
    before = shm_entries()
    refs = [lightray.put(i) for i in range(20)]
    refs.append(lightray.put(np.arange(100)))
    refs.append(lightray.put(b"x" * 1000))
    assert lightray.get(refs[-1]) == b"x" * 1000
    assert shm_entries() - before == set()


@pytest.mark.process_only("shared-memory segments")
@pytest.mark.timeout(30)
def test_put_of_large_value_lives_in_lr_shm_segment(runtime):
    before = shm_entries()
    ref = lightray.put(np.ones(BIG, dtype=np.uint8))
    assert wait_for(lambda: len(shm_entries() - before) >= 1, timeout=5), (
        "a 1 MiB value should be stored in a /dev/shm/lr_* segment"
    )
    assert lightray.get(ref).sum() == BIG


@pytest.mark.process_only("shared-memory segments")
@pytest.mark.timeout(30)
def test_get_of_numpy_array_is_zero_copy(runtime):
    expected = np.arange(BIG // 8, dtype=np.int64)
    ref = lightray.put(expected)
    arr = lightray.get(ref)
    assert_zero_copy_view(arr, expected)
    with pytest.raises(ValueError):
        arr[0] = 1


@pytest.mark.process_only("shared-memory segments")
@pytest.mark.timeout(30)
def test_get_of_numpy_arrays_inside_containers_is_zero_copy(runtime):
    a = np.arange(BIG // 8, dtype=np.float64)
    b = np.full((512, 512), 7, dtype=np.int32)
    c = np.linspace(0, 1, BIG // 4, dtype=np.float32)
    in_list = lightray.get(lightray.put([a, b]))
    assert_zero_copy_view(in_list[0], a)
    assert_zero_copy_view(in_list[1], b)
    in_dict = lightray.get(lightray.put({"x": a, "nested": {"y": b}}))
    assert_zero_copy_view(in_dict["x"], a)
    assert_zero_copy_view(in_dict["nested"]["y"], b)
    holder = lightray.get(lightray.put(Holder("h", c)))
    assert isinstance(holder, Holder)
    assert holder.name == "h"
    assert_zero_copy_view(holder.array, c)


@pytest.mark.process_only("shared-memory segments")
@pytest.mark.timeout(30)
def test_large_array_returned_by_task_is_zero_copy_in_driver(runtime):
    @lightray.remote
    def make(n):
        import numpy as np

        return np.arange(n, dtype=np.int64)

    arr = lightray.get(make.remote(BIG // 8))
    assert_zero_copy_view(arr, np.arange(BIG // 8, dtype=np.int64))


@pytest.mark.timeout(30)
def test_large_array_argument_reaches_task_intact(runtime):
    @lightray.remote
    def describe(a, b):
        return float(a.sum()), a.shape, str(a.dtype), float(b.sum())

    a = np.arange(BIG // 8, dtype=np.float64).reshape(256, -1)
    b = np.ones(BIG, dtype=np.uint8)
    a_ref = lightray.put(a)
    out = lightray.get(describe.remote(a_ref, b))  # one via ref, one by value
    assert out == (float(a.sum()), a.shape, "float64", float(BIG))


@pytest.mark.timeout(30)
def test_large_array_passed_between_tasks(runtime):
    @lightray.remote
    def make():
        import numpy as np

        return np.full(BIG, 3, dtype=np.uint8)

    @lightray.remote
    def total(a):
        return int(a.sum(dtype=np.int64))

    assert lightray.get(total.remote(make.remote())) == 3 * BIG


@pytest.mark.timeout(30)
def test_put_value_containing_objectref(runtime):
    inner = lightray.put("inner")
    outer = lightray.get(lightray.put({"ref": inner}))
    assert isinstance(outer["ref"], lightray.ObjectRef)
    assert lightray.get(outer["ref"]) == "inner"


@pytest.mark.timeout(30)
def test_get_of_list_of_refs_is_not_mistaken_for_dask_graph(runtime):
    # values that look like dask task tuples / graph entries must come back verbatim
    r1 = lightray.put((sum, [1, 2]))
    r2 = lightray.put({"a": 1, "b": (sum, ["a", "a"])})
    r3 = lightray.put("a")
    assert lightray.get([r1, r2, r3]) == [(sum, [1, 2]), {"a": 1, "b": (sum, ["a", "a"])}, "a"]
    assert lightray.get([]) == []


@pytest.mark.timeout(30)
def test_get_with_timeout_on_ready_ref_returns_value(runtime):
    assert lightray.get(lightray.put(5), timeout=5) == 5


@pytest.mark.process_only("shared-memory segments")
@pytest.mark.timeout(60)
def test_dropped_refs_unlink_segments_during_put_loop(runtime):
    before = shm_entries()
    max_seen = 0
    value = np.zeros(10 * 2**20, dtype=np.uint8)
    for i in range(1000):
        value[0] = i % 250
        r = lightray.put(value)
        del r
        max_seen = max(max_seen, len(shm_entries() - before))
    assert max_seen <= 5, f"up to {max_seen} lr_* segments alive while only 1 ref existed at a time"
    gc.collect()
    assert wait_for(lambda: not (shm_entries() - before), timeout=5), (
        f"segments still present after dropping every ref: {sorted(shm_entries() - before)}"
    )


@pytest.mark.process_only("shared-memory segments")
@pytest.mark.timeout(30)
def test_segment_unlinked_when_last_ref_dropped(runtime):
    before = shm_entries()
    ref = lightray.put(np.ones(BIG, dtype=np.uint8))
    assert wait_for(lambda: shm_entries() - before, timeout=5)
    del ref
    gc.collect()
    assert wait_for(lambda: not (shm_entries() - before), timeout=5), sorted(shm_entries() - before)


@pytest.mark.process_only("shared-memory segments")
@pytest.mark.timeout(30)
def test_task_result_segment_unlinked_when_ref_dropped(runtime):
    @lightray.remote
    def make():
        import numpy as np

        return np.ones(1 << 20, dtype=np.uint8)

    before = shm_entries()
    ref = make.remote()
    assert lightray.get(ref).sum() == 1 << 20
    del ref
    gc.collect()
    assert wait_for(lambda: not (shm_entries() - before), timeout=5), sorted(shm_entries() - before)


@pytest.mark.timeout(30)
def test_ref_nested_in_list_keeps_object_alive_while_task_runs(runtime):
    @lightray.remote
    def late_sum(refs):
        import time

        import lightray as lr

        time.sleep(0.3)
        return int(lr.get(refs[0]).sum(dtype="int64"))

    r = lightray.put(np.full(BIG, 2, dtype=np.uint8))
    t = late_sum.remote([r])
    del r
    gc.collect()
    assert lightray.get(t, timeout=20) == 2 * BIG


@pytest.mark.timeout(30)
def test_top_level_ref_arg_keeps_object_alive_for_pending_task(runtime):
    @lightray.remote
    def slow():
        import time

        time.sleep(0.5)
        return 1

    @lightray.remote
    def total(dep, a):
        return dep + int(a.sum(dtype="int64"))

    r = lightray.put(np.full(BIG, 1, dtype=np.uint8))
    t = total.remote(slow.remote(), r)  # cannot start before slow() finishes
    del r
    gc.collect()
    assert lightray.get(t, timeout=20) == 1 + BIG


@pytest.mark.timeout(30)
def test_put_of_objectref_raises_type_error(runtime):
    r = lightray.put(1)
    with pytest.raises(TypeError):
        lightray.put(r)


@pytest.mark.process_only("shared-memory segments")
@pytest.mark.timeout(30)
def test_inline_threshold_small_inline_large_in_shm(runtime):
    before = shm_entries()
    small = lightray.put(b"s" * (50 * 1024))
    assert shm_entries() - before == set(), "a 50 KiB value should travel inline"
    large = lightray.put(b"L" * (200 * 1024))
    assert wait_for(lambda: shm_entries() - before, timeout=5), "a 200 KiB value should use shm"
    assert lightray.get([small, large]) == [b"s" * (50 * 1024), b"L" * (200 * 1024)]


@pytest.mark.process_only("shared-memory segments")
@pytest.mark.timeout(30)
def test_small_task_results_create_no_shm_segment(runtime):
    @lightray.remote
    def small(i):
        return {"i": i, "payload": "x" * 100}

    before = shm_entries()
    out = lightray.get([small.remote(i) for i in range(10)], timeout=20)
    assert [o["i"] for o in out] == list(range(10))
    assert shm_entries() - before == set()


@pytest.mark.process_only("shared-memory segments")
@pytest.mark.timeout(30)
def test_get_inside_task_of_numpy_array_is_zero_copy(runtime):
    @lightray.remote
    def inspect(refs):
        import lightray as lr

        arr = lr.get(refs[0])
        return bool(arr.flags.writeable), bool(arr.flags.owndata), int(arr.sum(dtype="int64"))

    r = lightray.put(np.full(BIG, 3, dtype=np.uint8))
    assert lightray.get(inspect.remote([r]), timeout=20) == (False, False, 3 * BIG)


@pytest.mark.timeout(30)
def test_ref_created_in_task_and_returned_stays_alive_in_driver(runtime):
    @lightray.remote
    def make_inner():
        import numpy as np

        import lightray as lr

        return [lr.put(np.full(1 << 20, 5, dtype=np.uint8))]

    (inner,) = lightray.get(make_inner.remote(), timeout=20)
    assert isinstance(inner, lightray.ObjectRef)
    time.sleep(0.5)  # the creating task has finished and dropped its own ref
    gc.collect()
    arr = lightray.get(inner, timeout=20)
    assert int(arr.sum(dtype=np.int64)) == 5 * BIG


@pytest.mark.timeout(30)
def test_objects_kept_alive_by_refs_in_driver_survive_many_puts(runtime):
    keep = [lightray.put(np.full(BIG, i, dtype=np.uint8)) for i in range(5)]
    for i in range(20):
        lightray.put(np.zeros(BIG, dtype=np.uint8))  # dropped immediately
    gc.collect()
    for i, r in enumerate(keep):
        assert int(lightray.get(r)[0]) == i
