"""Persist on lightray: compute an expensive intermediate once, reuse it twice.

``dask.persist(y, scheduler=lightray.get)`` submits y's tasks and returns at
once a new ``y`` whose graph holds, for each chunk, the lightray ObjectRef of
that chunk instead of the tasks that make it. The chunks are computed in the
background and stay in lightray's object store; later computations with
``scheduler=lightray.get`` start from them.

To make the reuse visible, the expensive step (``slow_normalize``) sleeps a
little and appends one line per call to a log file. After the persist and two
more computations the log still has one line per chunk.

The same works for a DataFrame: dataframe_example() filters rows once and runs
two aggregations on the persisted result.

Run: python examples/dask_persist.py
"""
import os
import tempfile
import time
from functools import partial

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd

import lightray


def slow_normalize(block: np.ndarray, log_path: str) -> np.ndarray:
    """The expensive intermediate step: runs in a lightray worker."""
    time.sleep(0.1)
    with open(log_path, "a") as log:
        log.write(f"{os.getpid()}\n")
    return (block - 0.5) * 2.0


def calls(log_path: str) -> int:
    with open(log_path) as log:
        return sum(1 for _ in log)


def object_refs_in(graph) -> list:
    """The lightray ObjectRefs that a persisted collection's graph holds: after
    persist, each key's value in the graph is its ObjectRef itself."""
    return [value for value in dict(graph).values() if isinstance(value, lightray.ObjectRef)]


def main() -> None:
    lightray.init()
    with tempfile.TemporaryDirectory(prefix="dask_persist_") as tmp:
        array_example(os.path.join(tmp, "calls.log"))
    dataframe_example()
    lightray.shutdown()


def array_example(log_path: str) -> None:
    open(log_path, "w").close()

    x = da.random.random((2000, 2000), chunks=(500, 500))  # 16 chunks
    # meta= tells Dask the output type, so it does not call the function to find out.
    y = x.map_blocks(partial(slow_normalize, log_path=log_path),
                     meta=np.empty((0, 0), dtype=x.dtype))

    t0 = time.perf_counter()
    (y_persisted,) = dask.persist(y, scheduler=lightray.get)
    refs = object_refs_in(y_persisted.__dask_graph__())
    submit_s = time.perf_counter() - t0
    first_key = (y_persisted.name, 0, 0)
    print(f"the persisted graph, as the talk shows it: {{{first_key!r}: "
          f"{y_persisted.dask[first_key]!r}, ...}}")
    # An ObjectRef is future-like, as Dask's helpers expect of a persisted chunk.
    print(f"chunk {first_key[1:]}: shape {y_persisted.dask[first_key].result().shape}")
    lightray.wait(refs, num_returns=len(refs))  # only to time it: not needed
    persist_s = time.perf_counter() - t0
    print(f"persist: returned after {submit_s:.3f}s with a graph of {len(refs)} ObjectRefs; "
          f"the chunks were ready after {persist_s:.2f}s, "
          f"{calls(log_path)} calls of slow_normalize")

    t0 = time.perf_counter()
    total, col_max = dask.compute(y_persisted.sum(), y_persisted.max(axis=0),
                                  scheduler=lightray.get)
    std = y_persisted.std().compute(scheduler=lightray.get)
    reuse_s = time.perf_counter() - t0
    print(f"sum = {total:.3f}, max over columns (first 3) = {col_max[:3]}, std = {std:.5f}")
    print(f"after two more computations: still {calls(log_path)} calls "
          f"({reuse_s:.2f}s for both)")
    assert calls(log_path) == y.npartitions == 16

    # The same values with Dask's own single-threaded scheduler, from scratch.
    expected_total, expected_max, expected_std = dask.compute(
        y.sum(), y.max(axis=0), y.std(), scheduler="sync")
    np.testing.assert_allclose(total, expected_total)
    np.testing.assert_allclose(col_max, expected_max)
    np.testing.assert_allclose(std, expected_std)
    print(f"sync scheduler recomputed y: {calls(log_path)} calls in total")


def dataframe_example() -> None:
    """DataFrames persist the same way: filter once, then reuse the filtered rows."""
    df = pd.DataFrame({"key": np.arange(100_000) % 17,
                       "value": np.random.default_rng(0).random(100_000)})
    kept = dd.from_pandas(df, npartitions=4).query("value > 0.5")
    kept = kept.persist(scheduler=lightray.get)
    means = kept.groupby("key").value.mean().compute(scheduler=lightray.get)
    count = kept.value.count().compute(scheduler=lightray.get)
    expected_rows = df.query("value > 0.5")
    pd.testing.assert_series_equal(means.sort_index(), expected_rows.groupby("key").value.mean())
    assert count == len(expected_rows)
    print(f"persisted DataFrame: {count:,} rows kept; mean value by key "
          f"from {means.min():.4f} to {means.max():.4f}")


if __name__ == "__main__":
    main()
