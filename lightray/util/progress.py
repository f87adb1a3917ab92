"""Watching refs finish: as_completed(refs) and a progress bar, progress(refs).

    for ref in as_completed(refs):          # each ref once, as its task finishes
        use(lightray.get(ref))

    progress(refs)                          # a bar until all are done (terminal or Jupyter)
    values = lightray.get(progress(refs))   # it returns the refs, in the order given

Both are built on lightray.wait alone: no value is fetched, and they work with
refs of a cluster, of an embedded runtime and of local mode alike. The bar is
tqdm's (tqdm.auto: a text bar on a terminal, a widget in Jupyter when
ipywidgets is installed); tqdm is an extra, ``pip install lightray[progress]``.
"""
from __future__ import annotations

import time
from typing import Iterable, Iterator

from .. import api, exceptions
from ..object_ref import ObjectRef

PROGRESS_INSTALL = "pip install 'lightray[progress]'"
# How long one wait inside as_completed may block: short enough that Ctrl-C
# and a given timeout are noticed promptly, long enough to cost nothing.
_WAIT_SLICE = 1.0


def _as_refs(refs, what: str) -> list:
    if isinstance(refs, ObjectRef):
        raise TypeError(f"{what}() takes a list (or other iterable) of ObjectRefs, "
                        f"got one ObjectRef: pass [ref]")
    try:
        refs = list(refs)
    except TypeError:
        raise TypeError(f"{what}() takes an iterable of ObjectRefs, "
                        f"got {type(refs).__name__}") from None
    for ref in refs:
        if not isinstance(ref, ObjectRef):
            raise TypeError(f"{what}() takes ObjectRefs, got {type(ref).__name__}: {ref!r:.80}")
    if len(set(refs)) != len(refs):
        raise ValueError(f"{what}() got the same ObjectRef more than once")
    return refs


def _check_timeout(timeout) -> None:
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or timeout < 0):
        raise ValueError(f"timeout must be None or a number of seconds >= 0, got {timeout!r}")


def as_completed(refs: Iterable[ObjectRef], timeout: float | None = None) -> Iterator[ObjectRef]:
    """Yield every ref once, as its value becomes ready (refs ready together
    come in the order given). A task that failed counts as finished: its ref
    is yielded and lightray.get of it raises the error.

    timeout: seconds from the first call to next() for the whole iteration;
    refs still pending then raise lightray.exceptions.GetTimeoutError.
    """
    pending = _as_refs(refs, "as_completed")
    _check_timeout(timeout)
    return _completions(pending, timeout)


def _completions(pending: list, timeout) -> Iterator[ObjectRef]:
    deadline = None if timeout is None else time.monotonic() + timeout
    while pending:
        wait_for = _WAIT_SLICE
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise exceptions.GetTimeoutError(
                    f"as_completed: {len(pending)} of the refs were not ready within "
                    f"{timeout:g} s")
            wait_for = min(wait_for, left)
        ready, _ = api.wait(pending, num_returns=1, timeout=wait_for)
        if not ready:
            continue
        # Take every ref that is ready by now, not only the first one.
        ready, pending = api.wait(pending, num_returns=len(pending), timeout=0)
        yield from ready


def _tqdm():
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise ImportError(f"lightray.util.progress needs tqdm: {PROGRESS_INSTALL}") from None
    return tqdm


def progress(refs: Iterable[ObjectRef], *, desc: str | None = None,
             timeout: float | None = None, **tqdm_options) -> list:
    """Show a progress bar of refs until all are ready; return the refs, in
    the order given (``lightray.get(progress(refs))``).

    desc: the bar's label; timeout: as in as_completed (GetTimeoutError, the
    bar left where it stopped); other keyword arguments go to tqdm (file=,
    leave=, disable=, ...). Needs tqdm (``pip install lightray[progress]``).
    """
    refs = _as_refs(refs, "progress")
    _check_timeout(timeout)
    tqdm = _tqdm()
    with tqdm(total=len(refs), desc=desc, unit="task", **tqdm_options) as bar:
        for _ in _completions(list(refs), timeout):
            bar.update(1)
    return refs
