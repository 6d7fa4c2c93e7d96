"""Write ``waves.npz``: noisy sine waves of three frequencies, the classes to tell apart.

    python make_data.py                 # 600 training and 200 test signals of length 64
    python make_data.py --train 300     # fewer

The file holds ``x_train`` (N, 1, 64) float32, ``y_train`` (N,) int64, and the same for the test
split; ``data=arrays data.path=waves.npz`` (or ``data=waves``, conf/data/waves.yaml) reads it.
"""

from __future__ import annotations

import argparse

import numpy as np


def make_waves(n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 3, size=n)
    t = np.linspace(0.0, 1.0, length, dtype=np.float32)
    freq = np.array([2.0, 3.0, 5.0], dtype=np.float32)[labels]
    phase = rng.uniform(0, 2 * np.pi, size=n).astype(np.float32)
    x = np.sin(2 * np.pi * freq[:, None] * t[None, :] + phase[:, None])
    x += rng.normal(0.0, 0.8, size=x.shape).astype(np.float32)
    return x[:, None, :].astype(np.float32), labels.astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=600)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--out", default="waves.npz")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x_train, y_train = make_waves(args.train, args.length, rng)
    x_test, y_test = make_waves(args.test, args.length, rng)
    np.savez(args.out, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    print(f"wrote {args.out}: x_train {x_train.shape}, x_test {x_test.shape}, 3 classes")


if __name__ == "__main__":
    main()
