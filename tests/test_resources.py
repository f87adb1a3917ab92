"""Resource accounting: CPUs, GPUs, custom resources, infeasible requests."""
import math
import os
import time

import pytest

import lightray
from lightray import exceptions as lrexc


def max_overlap(intervals):
    """Largest number of (start, end) intervals open at the same instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
                    key=lambda ev: (ev[0], ev[1]))  # ends sort before starts at ties
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def make_interval_task(**opts):
    @lightray.remote(**opts)
    def timed(delay):
        import time

        start = time.time()
        time.sleep(delay)
        return start, time.time()

    return timed


def make_rendezvous_task(**opts):
    """Each call announces itself in `dirname` and waits until `n` calls did."""

    @lightray.remote(**opts)
    def rendezvous(dirname, name, n, timeout):
        import os
        import time

        open(os.path.join(dirname, name), "w").close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if len(os.listdir(dirname)) >= n:
                return True
            time.sleep(0.01)
        return False

    return rendezvous


@pytest.mark.timeout(30)
def test_custom_resource_tasks_that_do_not_fit_together_never_overlap():
    lightray.init(num_cpus=2, resources={"slot": 1})
    timed = make_interval_task(resources={"slot": 1})
    t0 = time.monotonic()
    intervals = lightray.get([timed.remote(0.5), timed.remote(0.5)], timeout=20)
    elapsed = time.monotonic() - t0
    (s1, e1), (s2, e2) = intervals
    assert e1 <= s2 or e2 <= s1, f"tasks overlapped: {intervals}"
    assert elapsed >= 0.95


@pytest.mark.timeout(30)
def test_num_cpus_limits_concurrency():
    lightray.init(num_cpus=2)
    timed = make_interval_task()
    intervals = lightray.get([timed.remote(0.3) for _ in range(5)], timeout=25)
    assert max_overlap(intervals) <= 2, intervals


@pytest.mark.timeout(30)
def test_task_needing_two_cpus_runs_alone_on_two_cpu_node():
    lightray.init(num_cpus=2)
    one = make_interval_task(num_cpus=1)
    two = make_interval_task(num_cpus=2)
    refs = [one.remote(0.3), two.remote(0.3), one.remote(0.3)]
    (a, b, c) = lightray.get(refs, timeout=25)
    for other in (a, c):
        assert other[1] <= b[0] or b[1] <= other[0], f"2-CPU task overlapped: {a} {b} {c}"


@pytest.mark.timeout(30)
def test_fractional_cpus_allow_concurrent_tasks(tmp_path):
    lightray.init(num_cpus=1)
    rv = make_rendezvous_task(num_cpus=0.5)
    refs = [rv.remote(str(tmp_path), f"t{i}", 2, 15) for i in range(2)]
    assert lightray.get(refs, timeout=25) == [True, True]


@pytest.mark.timeout(30)
def test_custom_resource_capacity_allows_that_many_concurrent_tasks(tmp_path):
    lightray.init(num_cpus=2, resources={"accel": 2})
    rv = make_rendezvous_task(num_cpus=0.1, resources={"accel": 1})
    refs = [rv.remote(str(tmp_path), f"t{i}", 2, 15) for i in range(2)]
    assert lightray.get(refs, timeout=25) == [True, True]


@pytest.mark.timeout(30)
def test_gpu_tasks_get_distinct_cuda_visible_devices(tmp_path):
    lightray.init(num_cpus=2, num_gpus=2)

    @lightray.remote(num_gpus=1)
    def which_gpu(dirname, name):
        import os
        import time

        open(os.path.join(dirname, name), "w").close()
        deadline = time.time() + 15
        while len(os.listdir(dirname)) < 2 and time.time() < deadline:
            time.sleep(0.01)
        return os.environ.get("CUDA_VISIBLE_DEVICES")

    ids = lightray.get([which_gpu.remote(str(tmp_path), f"g{i}") for i in range(2)], timeout=25)
    assert sorted(ids) == ["0", "1"], ids


@pytest.mark.timeout(30)
def test_task_with_two_gpus_sees_both_ids():
    lightray.init(num_cpus=1, num_gpus=2)

    @lightray.remote(num_gpus=2)
    def visible():
        import os

        return os.environ.get("CUDA_VISIBLE_DEVICES")

    value = lightray.get(visible.remote(), timeout=20)
    assert value is not None
    assert sorted(value.split(",")) == ["0", "1"]


@pytest.mark.timeout(30)
def test_get_assigned_resources_reports_task_request():
    lightray.init(num_cpus=2, num_gpus=1, resources={"widget": 3})

    @lightray.remote
    def assigned():
        import lightray as lr

        return dict(lr.get_runtime_context().get_assigned_resources())

    assert lightray.get(assigned.remote(), timeout=20) == {"CPU": 1.0}
    got = lightray.get(
        assigned.options(num_cpus=0.5, num_gpus=1, resources={"widget": 2}).remote(), timeout=20
    )
    assert got.get("CPU") == 0.5
    assert got.get("GPU") == 1.0
    assert got.get("widget") == 2.0


def _assert_infeasible(ref, needle):
    t0 = time.monotonic()
    with pytest.raises(Exception) as ei:
        lightray.get(ref, timeout=10)
    elapsed = time.monotonic() - t0
    err = ei.value
    assert not isinstance(err, lrexc.GetTimeoutError), "infeasible task hung until get() timed out"
    assert not isinstance(err, TimeoutError), "infeasible task hung until get() timed out"
    assert isinstance(err, ValueError) or type(err).__module__.startswith("lightray"), repr(err)
    assert needle in str(err), f"{needle!r} not mentioned in: {err}"
    assert elapsed < 8


@pytest.mark.timeout(30)
def test_infeasible_cpu_request_raises_promptly():
    lightray.init(num_cpus=2)
    timed = make_interval_task(num_cpus=1000)
    _assert_infeasible(timed.remote(0), "CPU")


@pytest.mark.timeout(30)
def test_unknown_custom_resource_raises_promptly():
    lightray.init(num_cpus=2)
    timed = make_interval_task(resources={"unobtainium": 1})
    _assert_infeasible(timed.remote(0), "unobtainium")


@pytest.mark.timeout(30)
def test_gpu_request_without_gpus_raises_promptly():
    lightray.init(num_cpus=2)
    timed = make_interval_task(num_gpus=1)
    _assert_infeasible(timed.remote(0), "GPU")


@pytest.mark.timeout(30)
def test_infeasible_task_does_not_block_feasible_ones():
    lightray.init(num_cpus=1)
    bad = make_interval_task(num_cpus=5)
    good = make_interval_task()
    bad_ref = bad.remote(0)
    assert len(lightray.get(good.remote(0), timeout=10)) == 2
    with pytest.raises(Exception):
        lightray.get(bad_ref, timeout=10)


def _cluster_resources():
    fn = getattr(lightray, "cluster_resources", None)
    if fn is None:
        pytest.skip("lightray.cluster_resources() is not provided by this lightray build")
    return fn()


@pytest.mark.timeout(30)
def test_cluster_resources_reports_explicit_num_cpus():
    lightray.init(num_cpus=3, num_gpus=1, resources={"slot": 2})
    res = _cluster_resources()
    assert res["CPU"] == 3
    assert res.get("GPU") == 1
    assert res.get("slot") == 2


def _cgroup_cpu_limit():
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period = int(f.read())
        if quota > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


@pytest.mark.timeout(30)
def test_default_num_cpus_matches_affinity_and_cgroup_quota():
    lightray.init()
    res = _cluster_resources()
    affinity = len(os.sched_getaffinity(0))
    limit = _cgroup_cpu_limit()
    if limit is None:
        allowed = {affinity}
    else:
        allowed = {
            min(affinity, max(1, math.floor(limit))),
            min(affinity, max(1, math.ceil(limit))),
            min(affinity, max(1.0, limit)),
        }
    assert res["CPU"] in allowed, (res, affinity, limit)
