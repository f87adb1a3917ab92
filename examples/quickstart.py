"""The talk's first program: two arrays built by tasks, added by a third;
then its Counter class, as an actor.

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


@lightray.remote(num_gpus=1)
class Counter:
    """An actor: its state lives in a worker process of its own."""

    def __init__(self):
        self.value = 0

    def inc(self):
        self.value += 1
        return self.value


def main() -> None:
    # A logical GPU: the Counter asks for one and gets CUDA_VISIBLE_DEVICES=0.
    lightray.init(num_gpus=1)
    id1 = read_array.remote(1)
    id2 = read_array.remote(2)
    id_sum = add.remote(id1, id2)
    total = lightray.get(id_sum)
    a, b = lightray.get([id1, id2])
    assert np.array_equal(total, a + b)
    print(f"sum of {total.size:,} elements: {total.sum():.3f} (first: {total[0]:.6f})")

    c = Counter.remote()
    id4 = c.inc.remote()
    id5 = c.inc.remote()
    assert lightray.get([id4, id5]) == [1, 2]
    print(f"counter after two calls: {lightray.get(id5)}")
    lightray.shutdown()


if __name__ == "__main__":
    main()
