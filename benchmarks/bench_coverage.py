"""Coverage of the paired CI of a mean difference: method x pairs x noise, on synthetic ablations.

Each draw is one leave-one-out study: a reference arm and four trick arms with true effects of
+2, +0.5, 0 and -1 accuracy points, n seeds each. Per seed a shared offset (sd 1 point) is common
to every arm, so a lucky seed is lucky in all of them, plus per-run noise:

* ``normal``: N(0, 0.5 points);
* ``t3``: 0.5 points times Student t with 3 degrees of freedom (heavy tails);
* ``binomial``: the accuracy is k / 360, k ~ Binomial(360, 0.90 + offset + effect): one
  validation example of digits' ~360 is a step of 0.28 points;
* ``rounded``: 0.90 + offset + effect + N(0, 0.3 points) rounded to steps of 1/360; the noise is
  about one step, so at 2-3 seeds all differences are often equal (zero variance).

A cell's coverage is the share of the draws' 4 x draws intervals that hold their true effect;
``ties`` is the share of those paired differences that are all equal. Coverage depends on the
numbers only, not on the machine or its timing.

    .venv/bin/python benchmarks/bench_coverage.py                 # 2000 draws a cell (~1 min)
    .venv/bin/python benchmarks/bench_coverage.py --draws 500 --methods t,expanded
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from scipy import stats

from ablate.analysis.intervals import ci_columns

EFFECTS = np.array([2.0, 0.5, 0.0, -1.0]) / 100.0  # accuracy points, as fractions
BASE, SEED_SD, STEPS = 0.90, 0.01, 360
NOISES = ("normal", "t3", "binomial", "rounded")
SIZES = (2, 3, 5, 10, 30)
METHODS = ("t", "expanded", "percentile", "bootstrap-t")


def draw_differences(noise: str, n: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """Paired differences (trick minus reference) of ``draws`` studies: shape (n, draws, 4)."""
    offset = rng.normal(0.0, SEED_SD, (n, draws, 1))
    mean = BASE + offset + np.concatenate([np.zeros(1), EFFECTS])  # (n, draws, 5): reference first
    if noise == "normal":
        y = mean + rng.normal(0.0, 0.005, mean.shape)
    elif noise == "t3":
        y = mean + 0.005 * rng.standard_t(3, mean.shape)
    elif noise == "binomial":
        y = rng.binomial(STEPS, np.clip(mean, 0.0, 1.0)) / STEPS
    elif noise == "rounded":
        y = np.round((mean + rng.normal(0.0, 0.003, mean.shape)) * STEPS) / STEPS
    else:
        raise ValueError(f"noise: {noise!r}; expected one of {', '.join(NOISES)}")
    out: np.ndarray = y[..., 1:] - y[..., :1]
    return out


def bootstrap_t(x: np.ndarray, ci: float, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Studentized (bootstrap-t) CI of the mean of each column of ``x`` (n, m), vectorised."""
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    origin = x[0]
    x = x - origin  # deviations from the first row: exact for constant columns
    idx = rng.integers(0, n, size=(n_boot, n))
    counts = np.zeros((n_boot, n))
    np.add.at(counts, (np.arange(n_boot)[:, None], idx), 1.0)
    mean = x.mean(axis=0)
    se = x.std(axis=0, ddof=1) / np.sqrt(n)
    m_star = counts @ x / n
    var_star = np.maximum(counts @ (x * x) / n - m_star**2, 0.0) * n / (n - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_star = (m_star - mean) / np.sqrt(var_star / n)
    t_star = np.where(np.isnan(t_star), 0.0, t_star)  # 0 / 0: a resample equal to the sample
    alpha = 1.0 - ci
    # inverted_cdf: no interpolation between infinite t* (resamples with zero variance, half of
    # them at n = 2), which then give an unbounded interval rather than NaN
    q_low, q_high = np.quantile(t_star, [alpha / 2.0, 1.0 - alpha / 2.0], axis=0, method="inverted_cdf")
    return origin + mean - q_high * se, origin + mean - q_low * se


def intervals(method: str, d: np.ndarray, ci: float = 0.95, n_boot: int = 2000,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """CI of the mean of each column of ``d`` (n, m) by ``method``."""
    if method == "bootstrap-t":
        return bootstrap_t(d, ci, n_boot, seed)
    return ci_columns(d, ci=ci, n_boot=n_boot, seed=seed, method=method)


def coverage(method: str, noise: str, n: int, draws: int, *, seed: int = 0,
             n_boot: int = 2000) -> tuple[float, float]:
    """``(coverage, share of all-equal differences)`` of one cell, every draw in one array."""
    rng = np.random.default_rng([seed, n, NOISES.index(noise)])
    d = draw_differences(noise, n, draws, rng)
    truth = np.broadcast_to(EFFECTS, d.shape[1:]).ravel()
    x = d.reshape(n, -1)
    low, high = intervals(method, x, n_boot=n_boot, seed=seed)
    ties = np.mean(np.ptp(x, axis=0) <= 1e-10 * np.abs(x).max(axis=0))
    return float(np.mean((low <= truth) & (truth <= high))), float(ties)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=2000, help="studies per cell (4 intervals each)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--noises", default=",".join(NOISES))
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    noises = args.noises.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    start = time.perf_counter()
    se = stats.binom.std(4 * args.draws, 0.95) / (4 * args.draws)
    print(f"coverage of a nominal 95 % CI, {args.draws} draws x 4 effects a cell "
          f"(binomial se at 0.95: {se:.3f}; draws are correlated through the shared reference)")
    print("| method | noise | " + " | ".join(f"n={n}" for n in sizes) + " |")
    print("|---|---|" + "---:|" * len(sizes))

    def cell(m: str, z: str, n: int) -> tuple[float, float]:
        return coverage(m, z, n, args.draws, seed=args.seed, n_boot=args.n_boot)

    tie_rows: dict[str, list[float]] = {}
    for method in methods:
        for noise in noises:
            values = [cell(method, noise, n) for n in sizes]
            tie_rows[noise] = [t for _, t in values]
            print(f"| {method} | {noise} | " + " | ".join(f"{c:.3f}" for c, _ in values) + " |")
    print("\nshare of draws whose n differences are all equal:")
    for noise, ties in tie_rows.items():
        print(f"| {noise} | " + " | ".join(f"{t:.3f}" for t in ties) + " |")
    print(f"\n{time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
