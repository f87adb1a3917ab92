"""Invalid arguments and options produce clear, early errors."""
import threading
import time

import pytest

import lightray

pytestmark = pytest.mark.both_modes


@pytest.mark.timeout(30)
def test_calling_remote_function_directly_raises_type_error(runtime):
    @lightray.remote
    def f(x):
        return x

    with pytest.raises(TypeError) as ei:
        f(1)
    assert ".remote()" in str(ei.value)


@pytest.mark.timeout(30)
def test_unpicklable_argument_raises_type_error_at_remote_naming_it(runtime):
    @lightray.remote
    def f(x):
        return x

    with pytest.raises(TypeError) as ei:
        f.remote(threading.Lock())
    assert "lock" in str(ei.value).lower()


@pytest.mark.timeout(30)
def test_unpicklable_argument_nested_in_container_raises_type_error(runtime):
    @lightray.remote
    def f(x):
        return x

    with pytest.raises(TypeError) as ei:
        f.remote({"ok": 1, "bad": [threading.Lock()]})
    assert "lock" in str(ei.value).lower()


@pytest.mark.timeout(30)
def test_unpicklable_put_raises_type_error(runtime):
    with pytest.raises(TypeError) as ei:
        lightray.put(threading.Lock())
    assert "lock" in str(ei.value).lower()


@pytest.mark.timeout(30)
def test_runtime_usable_after_rejected_argument(runtime):
    @lightray.remote
    def f(x):
        return x

    with pytest.raises(TypeError):
        f.remote(threading.Lock())
    assert lightray.get(f.remote(5), timeout=20) == 5


@pytest.mark.timeout(10)
def test_unknown_option_in_remote_decorator_raises_value_error_listing_valid_names():
    with pytest.raises(ValueError) as ei:

        @lightray.remote(num_cpu=1)
        def f():
            return 1

    msg = str(ei.value)
    assert "num_cpu" in msg
    assert "num_cpus" in msg


@pytest.mark.timeout(10)
def test_unknown_option_in_options_raises_value_error_listing_valid_names():
    @lightray.remote
    def f():
        return 1

    with pytest.raises(ValueError) as ei:
        f.options(bogus_option=1).remote()
    msg = str(ei.value)
    assert "bogus_option" in msg
    assert "num_cpus" in msg


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "opts",
    [
        {"num_cpus": -1},
        {"num_cpus": "x"},
        {"num_gpus": -1},
        {"resources": {"a": -1}},
        {"resources": {"a": "many"}},
    ],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()).replace(" ", ""),
)
def test_invalid_option_values_raise_value_error(opts):
    with pytest.raises(ValueError):

        @lightray.remote(**opts)
        def f():
            return 1

        f.remote()
    with pytest.raises(ValueError):

        @lightray.remote
        def g():
            return 1

        g.options(**opts).remote()


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "kwargs",
    [{"num_cpus": -1}, {"num_cpus": "x"}, {"num_gpus": -2}, {"resources": {"a": -1}}],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()).replace(" ", ""),
)
def test_invalid_init_resources_raise_value_error(start_runtime, kwargs):
    with pytest.raises(ValueError):
        start_runtime(**kwargs)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("bad", [42, None, 1.5], ids=repr)
def test_get_of_non_ref_raises_type_error(runtime, bad):
    with pytest.raises(TypeError):
        lightray.get(bad)


@pytest.mark.timeout(30)
def test_put_of_objectref_raises_type_error(runtime):
    r = lightray.put("x")
    with pytest.raises(TypeError):
        lightray.put(r)


@pytest.mark.timeout(30)
def test_wait_on_non_refs_raises_type_error(runtime):
    with pytest.raises(TypeError):
        lightray.wait([1, 2])


@pytest.mark.timeout(30)
def test_wait_num_returns_larger_than_list_raises_value_error(runtime):
    r = lightray.put(1)
    with pytest.raises(ValueError):
        lightray.wait([r], num_returns=2)


@pytest.mark.timeout(20)
def test_get_of_old_ref_after_shutdown_raises(start_runtime, tmp_path):
    start_runtime(num_cpus=1)
    ref = lightray.put(123)
    assert lightray.get(ref) == 123
    lightray.shutdown()
    t0 = time.monotonic()
    with pytest.raises(Exception) as ei:
        lightray.get(ref, timeout=5)
    assert not isinstance(ei.value, TimeoutError), "get of a stale ref hung until its timeout"
    assert time.monotonic() - t0 < 10


@pytest.mark.timeout(20)
def test_wait_on_old_ref_after_shutdown_raises(start_runtime):
    start_runtime(num_cpus=1)
    ref = lightray.put(123)
    lightray.shutdown()
    with pytest.raises(Exception) as ei:
        lightray.wait([ref], timeout=5)
    assert not isinstance(ei.value, TimeoutError)


@pytest.mark.timeout(20)
def test_put_of_old_ref_after_shutdown_raises(start_runtime):
    start_runtime(num_cpus=1)
    ref = lightray.put(123)
    lightray.shutdown()
    with pytest.raises(Exception):
        lightray.put(ref)


@pytest.mark.timeout(30)
def test_old_ref_used_in_new_session_raises(start_runtime, tmp_path):
    start_runtime(num_cpus=1)
    old = lightray.put(123)
    lightray.shutdown()
    start_runtime(num_cpus=1)
    with pytest.raises(Exception) as ei:
        lightray.get(old, timeout=5)
    assert not isinstance(ei.value, TimeoutError), "get of a previous-session ref hung"

    @lightray.remote
    def f(x):
        return x

    with pytest.raises(Exception) as ei:
        lightray.get(f.remote(old), timeout=5)
    assert not isinstance(ei.value, TimeoutError), (
        "task depending on a previous-session ref hung instead of failing"
    )
