"""Dask Array on lightray: y = x + x.T - x.mean(axis=0).

``x`` is a 1000x1000 random array in 16 chunks of 250x250. Dask turns the
expression into a graph of chunk tasks (the transpose pairs chunk (i, j) with
chunk (j, i), the mean reduces each column of chunks); lightray runs them and
passes the chunks between tasks through its object store. The result is
checked against Dask's single-threaded "sync" scheduler.

Run: python examples/dask_array.py
"""
import dask
import dask.array as da
import numpy as np

import lightray


def main() -> None:
    lightray.init()
    x = da.random.random((1000, 1000), chunks=(250, 250))
    y = x + x.T - x.mean(axis=0)
    print(f"graph: {len(y.__dask_graph__())} tasks before optimization, "
          f"{y.npartitions} output chunks")

    result = y.compute(scheduler=lightray.get)
    # x's random chunks are fixed by their seeds in the graph, so any
    # scheduler computes the same values.
    expected = y.compute(scheduler="sync")

    assert result.shape == (1000, 1000)
    np.testing.assert_allclose(result, expected)
    print(f"y: shape {result.shape}, sum {result.sum():.3f}, y[0, :3] = {result[0, :3]}")
    with dask.config.set(scheduler=lightray.get):
        total = y.sum().compute()
    np.testing.assert_allclose(total, expected.sum())
    print(f"y.sum() with dask.config.set(scheduler=lightray.get): {total:.3f}")
    lightray.shutdown()


if __name__ == "__main__":
    main()
