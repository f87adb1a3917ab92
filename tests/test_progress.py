"""lightray.util.as_completed and progress, and Dask's ProgressBar on lightray.get."""
import io
import os
import sys

import pytest

import lightray
from lightray.util import as_completed, progress

pytestmark = pytest.mark.both_modes


@lightray.remote
def wait_for_file_then(path, value):
    import time

    deadline = time.monotonic() + 30
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return value


@lightray.remote
def square(x):
    return x * x


@lightray.remote
def fail():
    raise ValueError("boom")


@pytest.mark.timeout(60)
def test_as_completed_yields_the_fast_task_before_the_slow_one(runtime, tmp_path):
    release = str(tmp_path / "release")
    slow = wait_for_file_then.remote(release, "slow")      # submitted first
    fast = square.remote(3)
    completed = as_completed([slow, fast], timeout=30)
    first = next(completed)
    assert first == fast
    open(release, "w").close()          # only now can the slow one finish
    rest = list(completed)
    assert rest == [slow]
    assert lightray.get([first] + rest) == [9, "slow"]


@pytest.mark.timeout(60)
def test_as_completed_yields_every_ref_exactly_once(runtime):
    refs = [square.remote(i) for i in range(20)]
    seen = list(as_completed(refs, timeout=30))
    assert sorted(seen, key=refs.index) == refs
    assert len(seen) == len(set(seen)) == 20


@pytest.mark.timeout(60)
def test_as_completed_yields_a_failed_task_whose_get_raises(runtime):
    ref = fail.remote()
    assert list(as_completed([ref], timeout=30)) == [ref]
    with pytest.raises(lightray.exceptions.TaskError):
        lightray.get(ref)


@pytest.mark.timeout(60)
def test_as_completed_raises_get_timeout_with_refs_still_pending(runtime, tmp_path):
    never = wait_for_file_then.remote(str(tmp_path / "never"), 0)
    with pytest.raises(lightray.exceptions.GetTimeoutError, match="1 of the refs"):
        list(as_completed([never], timeout=0.2))
    open(tmp_path / "never", "w").close()
    assert lightray.get(never, timeout=30) == 0


def test_as_completed_rejects_what_is_not_a_list_of_refs(runtime):
    ref = square.remote(1)
    with pytest.raises(TypeError, match="one ObjectRef"):
        as_completed(ref)
    with pytest.raises(TypeError, match="takes ObjectRefs"):
        as_completed([ref, 3])
    with pytest.raises(ValueError, match="more than once"):
        as_completed([ref, ref])
    with pytest.raises(ValueError, match="timeout"):
        as_completed([ref], timeout=-1)
    assert list(as_completed([])) == []


@pytest.mark.timeout(60)
def test_progress_bar_reaches_the_total_and_returns_the_refs(runtime):
    refs = [square.remote(i) for i in range(12)]
    out = io.StringIO()
    returned = progress(refs, desc="squares", file=out, timeout=30)
    assert returned == refs
    assert lightray.get(returned) == [i * i for i in range(12)]
    text = out.getvalue()
    assert "squares" in text
    assert "12/12" in text and "100%" in text, text


def test_progress_without_tqdm_names_the_install_command(runtime, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.raises(ImportError, match=r"pip install 'lightray\[progress\]'"):
        progress([square.remote(2)])


@pytest.mark.timeout(60)
def test_dask_progress_bar_on_lightray_get_shows_100_percent(runtime):
    pytest.importorskip("dask")
    from operator import add

    from dask.diagnostics import ProgressBar

    dsk = {"a": (pow, 2, 3), "b": (pow, 3, 2), "c": (add, "a", "b")}
    out = io.StringIO()
    with ProgressBar(out=out, dt=0.01):
        assert lightray.get(dsk, "c") == 17
    assert "100% Completed" in out.getvalue(), out.getvalue()
