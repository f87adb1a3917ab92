"""The talk's first program: two arrays built by tasks, added by a third.

Run: python examples/quickstart.py
"""
import numpy as np

import lightray


@lightray.remote
def read_array(seed: int, n: int = 1_000_000) -> np.ndarray:
    # Stands in for reading array "a" from a file: 8 MB, so it lives in
    # shared memory and add() reads it without a copy.
    return np.random.default_rng(seed).random(n)


@lightray.remote
def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.add(a, b)


def main() -> None:
    lightray.init()
    id1 = read_array.remote(1)
    id2 = read_array.remote(2)
    id_sum = add.remote(id1, id2)
    total = lightray.get(id_sum)
    a, b = lightray.get([id1, id2])
    assert np.array_equal(total, a + b)
    print(f"sum of {total.size:,} elements: {total.sum():.3f} (first: {total[0]:.6f})")
    lightray.shutdown()


if __name__ == "__main__":
    main()
