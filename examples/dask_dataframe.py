"""Dask DataFrame on lightray: the talk's groupby-mean.

A 1,024-row pandas DataFrame of random ages and grades is split into two
partitions; Dask plans the groupby-mean and lightray runs each of its tasks.
The result is checked against pandas.

Run: python examples/dask_dataframe.py
"""
import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd

import lightray


def main() -> None:
    lightray.init()
    df = pd.DataFrame(np.random.randint(0, 100, size=(1024, 2)), columns=["age", "grade"])
    ddf = dd.from_pandas(df, npartitions=2)

    # Either pass the scheduler to one call ...
    means = ddf.groupby("age").mean().compute(scheduler=lightray.get)
    # ... or make lightray the default for a block of code.
    with dask.config.set(scheduler=lightray.get):
        means_again = ddf.groupby("age").mean().compute()

    expected = df.groupby("age").mean()
    pd.testing.assert_frame_equal(means.sort_index(), expected)
    pd.testing.assert_frame_equal(means_again.sort_index(), expected)
    print(f"mean grade by age ({len(means)} ages), first rows:")
    print(means.sort_index().head())
    lightray.shutdown()


if __name__ == "__main__":
    main()
