"""Callbacks on lightray's Dask scheduler: count submitted tasks, time each task.

``lightray.dask.Callback`` has two kinds of hooks:

* driver hooks, called in this process while the graph is submitted and
  finished: ``presubmit``, ``postsubmit``, ``postsubmit_all``, ``finish``;
* worker hooks, called in the lightray worker process that runs the task:
  ``pretask`` (its return value is handed to ``posttask``) and ``posttask``.

The callback object is pickled and shipped with each task, so what the
worker hooks store on ``self`` stays in the worker. Here ``posttask`` appends
"key<TAB>seconds" to a file, and the driver reads that file when
the computation is done; the counters of the driver hooks live on ``self``.

Run: python examples/dask_callbacks.py
"""
import os
import tempfile
import time

import dask.array as da
import numpy as np

import lightray
from lightray.dask import Callback


class CountAndTime(Callback):
    def __init__(self, timings_path: str):
        self.timings_path = timings_path
        self.submitted = 0          # driver side
        self.final_refs = 0
        self.finished = False

    # -- driver hooks
    def postsubmit(self, task, key, deps, object_ref):
        self.submitted += 1

    def postsubmit_all(self, object_refs, dsk):
        self.final_refs = len(object_refs)

    def finish(self, result):
        self.finished = True

    # -- worker hooks
    def pretask(self, key, object_refs):
        return time.time()

    def posttask(self, key, result, pre_state):
        duration = time.time() - pre_state
        with open(self.timings_path, "a") as out:
            out.write(f"{key}\t{duration:.6f}\n")

    # -- in the driver, after the computation
    def durations(self) -> dict:
        with open(self.timings_path) as f:
            rows = [line.rstrip("\n").rsplit("\t", 1) for line in f]
        return {key: float(seconds) for key, seconds in rows}


def main() -> None:
    lightray.init()
    x = da.random.random((2000, 2000), chunks=(500, 500))
    y = (x @ x.T).mean(axis=1)

    with tempfile.TemporaryDirectory(prefix="dask_callbacks_") as tmp:
        with CountAndTime(os.path.join(tmp, "timings.tsv")) as callback:
            result = y.compute(scheduler=lightray.get)
        durations = callback.durations()

    assert callback.finished and callback.final_refs >= 1
    assert callback.submitted == len(durations) > 0  # every submitted task ran once
    np.testing.assert_allclose(result, y.compute(scheduler="sync"))
    slowest = sorted(durations.items(), key=lambda kv: kv[1], reverse=True)[:3]
    print(f"result: shape {result.shape}, mean {result.mean():.4f}")
    print(f"{callback.submitted} tasks submitted, {len(durations)} timed in the workers, "
          f"{sum(durations.values()):.3f}s of task time in total")
    for key, seconds in slowest:
        print(f"  {seconds * 1000:8.1f} ms  {key}")
    lightray.shutdown()

if __name__ == "__main__":
    main()
