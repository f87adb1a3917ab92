"""A task-based shuffle on lightray: set_index on an unsorted column.

``set_index("key", shuffle_method="tasks")`` sorts 100,000 rows spread over 8
partitions by ``key``. Dask samples the column to choose partition
boundaries, then every input partition splits its rows by output partition
and every output partition concatenates its pieces from all inputs: the
all-to-all exchange of a shuffle, done with ordinary tasks.

lightray runs each split task once with one return value per output
partition (``num_returns``), so each piece goes straight to the task that
needs it; ``lightray.dask.last_run_stats()`` shows how many tasks that took.
The result is checked against pandas.

Run: python examples/dask_shuffle.py
"""
import time

import dask.dataframe as dd
import numpy as np
import pandas as pd

import lightray
import lightray.dask


def main() -> None:
    lightray.init()
    rng = np.random.default_rng(42)
    n = 100_000
    df = pd.DataFrame({
        "key": rng.permutation(n),           # unique, so the sorted order is unique too
        "value": rng.random(n),
        "group": rng.integers(0, 10, size=n),
    })
    ddf = dd.from_pandas(df, npartitions=8)   # partitions of consecutive rows: keys unsorted

    by_key = ddf.set_index("key", shuffle_method="tasks")
    t0 = time.perf_counter()
    result = by_key.compute(scheduler=lightray.get)
    elapsed = time.perf_counter() - t0
    stats = lightray.dask.last_run_stats()

    expected = df.set_index("key").sort_index()
    pd.testing.assert_frame_equal(result, expected)
    assert result.index.is_monotonic_increasing
    print(f"set_index('key') of {n:,} rows in {ddf.npartitions} partitions "
          f"-> {by_key.npartitions} sorted partitions in {elapsed:.2f}s")
    print(f"lightray tasks: {stats.get('tasks_submitted')} submitted "
          f"for a graph of {stats.get('tasks_in_graph')} Dask tasks")
    print(result.head())

    # The same without the num_returns optimization: one task per picked piece.
    plain = by_key.compute(scheduler=lightray.get, lightray_multi_return=False)
    pd.testing.assert_frame_equal(plain, expected)
    print(f"with lightray_multi_return=False: "
          f"{lightray.dask.last_run_stats().get('tasks_submitted')} tasks submitted")

    # A hash shuffle (no sorting): all rows of one "group" land in one partition.
    shuffled = ddf.shuffle("group", shuffle_method="tasks")
    out = shuffled.compute(scheduler=lightray.get)
    groups_per_partition = shuffled.map_partitions(
        lambda part: part["group"].drop_duplicates(), meta=("group", "int64"),
    ).compute(scheduler=lightray.get)
    pd.testing.assert_frame_equal(out.sort_values("key"), df.sort_values("key"))
    assert groups_per_partition.is_unique   # no group is split across partitions
    print(f"shuffle('group'): {len(out):,} rows; each of the "
          f"{len(groups_per_partition)} groups is in exactly one partition")
    lightray.shutdown()


if __name__ == "__main__":
    main()
