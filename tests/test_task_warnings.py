"""Warnings raised in a task or an actor method reach the caller when the result is read."""
import warnings

import pytest

import lightray


class SuiteSpecificWarning(UserWarning):
    """A warning category defined in user code (this module)."""


def warn_here(message, category):
    warnings.warn(message, category, stacklevel=1)   # the line the test looks for


@lightray.remote
def warn_then_return(message, category=UserWarning):
    warn_here(message, category)
    return "value"


@lightray.remote
def warn_in_a_loop(times):
    for _ in range(times):
        warnings.warn("the same warning again", RuntimeWarning)
    return times


@lightray.remote
def add_one(x):
    return x + 1


@lightray.remote
def warn_twice_then_split():
    warnings.warn("split warning", UserWarning)
    return 1, 2


@lightray.remote
def warn_then_raise():
    warnings.warn("before the error", UserWarning)
    raise ValueError("after the warning")


@lightray.remote
class Warner:
    def warn(self, message):
        warnings.warn(message, RuntimeWarning)
        return message

    def quiet(self):
        return "quiet"


def line_of(text, fragment):
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


@pytest.mark.timeout(60)
def test_a_task_warning_is_re_emitted_by_get_with_category_and_message(runtime):
    ref = warn_then_return.remote("careful: block is empty")
    with pytest.warns(UserWarning, match="careful: block is empty") as record:
        assert lightray.get(ref) == "value"
    assert [w.category for w in record] == [UserWarning]


@pytest.mark.timeout(60)
def test_a_forwarded_warning_names_the_user_file_and_line(runtime):
    with pytest.warns(UserWarning, match="where am I") as record:
        lightray.get(warn_then_return.remote("where am I"))
    with open(__file__) as f:
        expected_line = line_of(f.read(), "the line the test looks for")
    assert record[0].filename == __file__
    assert record[0].lineno == expected_line


@pytest.mark.timeout(60)
def test_a_warning_category_defined_in_user_code_arrives_as_itself(runtime):
    with pytest.warns(SuiteSpecificWarning, match="custom"):
        lightray.get(warn_then_return.remote("custom", SuiteSpecificWarning))


@pytest.mark.timeout(60)
def test_a_deprecation_warning_follows_the_readers_filters(runtime):
    ref = warn_then_return.remote("old api", DeprecationWarning)
    with pytest.warns(DeprecationWarning, match="old api"):
        lightray.get(ref)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DeprecationWarning, match="old api"):
            lightray.get(warn_then_return.remote("old api", DeprecationWarning))


@pytest.mark.timeout(60)
def test_a_warning_repeated_in_a_loop_arrives_once(runtime):
    with pytest.warns(RuntimeWarning) as record:
        assert lightray.get(warn_in_a_loop.remote(1000)) == 1000
    assert len([w for w in record if "same warning" in str(w.message)]) == 1


@pytest.mark.timeout(60)
def test_the_same_warning_from_later_tasks_is_forwarded_each_time(runtime):
    for attempt in range(3):
        with pytest.warns(UserWarning, match="again and again"):
            lightray.get(warn_then_return.remote("again and again"))


@pytest.mark.timeout(60)
def test_a_warning_follows_the_data_through_a_dependent_task(runtime):
    upstream = warn_then_return.remote("upstream warning")
    with pytest.warns(UserWarning, match="upstream warning"):
        chained = lightray.get(_concat.remote(_concat.remote(upstream)))
    assert chained == "value!!"


@lightray.remote
def _concat(text):
    return text + "!"


@pytest.mark.timeout(60)
def test_each_return_of_a_multi_return_task_carries_its_warnings(runtime):
    first, second = warn_twice_then_split.options(num_returns=2).remote()
    with pytest.warns(UserWarning, match="split warning"):
        assert lightray.get(first) == 1
    with pytest.warns(UserWarning, match="split warning"):
        assert lightray.get(second) == 2


@pytest.mark.timeout(60)
def test_a_task_without_warnings_gives_none(runtime):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lightray.get(add_one.remote(1)) == 2


@pytest.mark.timeout(60)
def test_an_actor_method_warning_is_re_emitted_in_the_caller(runtime):
    actor = Warner.remote()
    with pytest.warns(RuntimeWarning, match="from the actor"):
        assert lightray.get(actor.warn.remote("from the actor")) == "from the actor"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lightray.get(actor.quiet.remote()) == "quiet"


@pytest.mark.timeout(60)
def test_warnings_of_a_threaded_actor_stay_with_their_call(runtime):
    actor = Warner.options(max_concurrency=4).remote()
    refs = [actor.warn.remote(f"call {i}") for i in range(8)]
    for i, ref in enumerate(refs):
        with pytest.warns(RuntimeWarning) as record:
            assert lightray.get(ref) == f"call {i}"
        assert [str(w.message) for w in record] == [f"call {i}"]


@pytest.mark.timeout(60)
def test_future_like_result_re_emits_the_warning_too(runtime):
    ref = warn_then_return.remote("via result()")
    with pytest.warns(UserWarning, match="via result"):
        assert ref.result() == "value"


@pytest.mark.timeout(60)
def test_dask_compute_on_lightray_re_emits_a_task_warning(runtime):
    dask = pytest.importorskip("dask")
    np = pytest.importorskip("numpy")
    da = pytest.importorskip("dask.array")
    x = da.from_array(np.array([-1.0, 1.0, 4.0, 9.0]), chunks=2)
    with pytest.warns(RuntimeWarning, match="invalid value"):
        result = (da.sqrt(x) + 1).sum(split_every=2).compute(scheduler=lightray.get)
    assert np.isnan(result)
    with pytest.warns(UserWarning, match="delayed warning"):
        assert dask.delayed(warn_then_return_plain)("delayed warning").compute(
            scheduler=lightray.get) == "value"


def warn_then_return_plain(message):
    warnings.warn(message, UserWarning)
    return "value"


@pytest.mark.timeout(60)
def test_forward_warnings_false_drops_task_warnings():
    lightray.init(num_cpus=1, forward_warnings=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert lightray.get(warn_then_return.remote("not forwarded")) == "value"
    finally:
        lightray.shutdown()
    lightray.init(num_cpus=1)
    try:
        with pytest.warns(UserWarning, match="forwarded again"):
            lightray.get(warn_then_return.remote("forwarded again"))
    finally:
        lightray.shutdown()


def test_forward_warnings_must_be_a_bool():
    with pytest.raises(TypeError, match="forward_warnings"):
        lightray.init(num_cpus=1, forward_warnings="no")
    assert not lightray.is_initialized()


@pytest.mark.timeout(60)
def test_a_module_filter_in_the_driver_matches_the_module_the_warning_came_from(runtime):
    # As Dask's own test config does ("error:::numpy[.*]"): filters by module name.
    with warnings.catch_warnings():
        warnings.filterwarnings("error", module=__name__.rsplit(".", 1)[-1])
        with pytest.raises(UserWarning, match="module filter"):
            lightray.get(warn_then_return.remote("module filter"))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", module="some_other_module")
        warnings.filterwarnings("ignore", category=UserWarning)
        assert lightray.get(warn_then_return.remote("module filter")) == "value"
