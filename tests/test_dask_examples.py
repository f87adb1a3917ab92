"""The Dask examples in examples/ run to completion (each in a subprocess).

Each example asserts its own result against Dask's "sync" scheduler or
pandas/NumPy, starts its own runtime with ``lightray.init()`` and shuts it
down, so this test only checks the exit code and that something was printed.
"""
import os
import subprocess
import sys

import pytest

pytest.importorskip("dask.dataframe", reason="the Dask examples need dask[dataframe]")
pytest.importorskip("dask.array", reason="the Dask examples need dask[array]")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = [
    "dask_dataframe.py",
    "dask_array.py",
    "dask_persist.py",
    "dask_shuffle.py",
    "dask_callbacks.py",
]
EXAMPLE_TIMEOUT_S = 120


@pytest.mark.timeout(150)
@pytest.mark.parametrize("name", EXAMPLES)
def test_dask_example(name):
    path = os.path.join(REPO_ROOT, "examples", name)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, path],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, (
        f"{name} exited with {proc.returncode}\n"
        f"--- stdout:\n{proc.stdout[-3000:]}\n--- stderr:\n{proc.stderr[-3000:]}"
    )
    assert proc.stdout.strip(), f"{name} printed nothing"
