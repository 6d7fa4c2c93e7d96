"""Confidence intervals of means: the t-interval and vectorised bootstrap intervals.

:func:`t_interval` and :func:`t_test` are the paired analysis' default (see :func:`t_interval` for
the coverage measured and the case of identical differences); they share one rule so that a
t-interval at level 1 - a excludes 0 exactly when the t-test's p-value is below a.

Confidence intervals are bootstrap intervals computed with vectorised resampling (one ``numpy``
index matrix per sample size, never a Python loop over resamples). By default the levels of the
percentile interval of a *mean* are widened for small samples, the "expanded percentile" bootstrap
(Hesterberg 2015, *What teachers should know about the bootstrap*): the plain percentile interval
of a mean is too narrow by the factors ``sqrt((n-1)/n)`` and ``z/t_{n-1}`` and covers only about
90 % at n = 10 seeds and 85 % at n = 5 when 95 % is asked for. ``method="percentile"`` gives the
textbook interval.

A bootstrap with a given ``seed`` depends only on the values resampled, never on the other columns
resampled in the same call: each column is resampled with the index matrix that
``bootstrap_ci(values, seed=seed)`` would draw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from ablate.analysis._checks import check_ci, check_method
from ablate.errors import AblateError

_STATISTICS = ("mean", "median")
# Differences whose spread is below this share of their largest magnitude are "all equal": the
# float noise of subtracting equal steps (0.8 - 0.75 vs 0.55 - 0.5) is not variance.
CONSTANT_TOLERANCE = 1e-10
# Largest index matrix drawn at once (elements): bounds memory at ~32 MiB whatever the sample
# size. It depends on n only, so chunking never changes which resamples a seed produces.
CHUNK_ELEMENTS = 1 << 22


def _resample(x: np.ndarray, n_boot: int, seed: int, statistic: str) -> np.ndarray:
    """Bootstrap replicates of each column of ``x`` (n, m) -> (n_boot, m).

    Rows are resampled jointly: all columns share the index matrix, which is what a standalone
    call on any one column would draw with the same seed.
    """
    n, m = x.shape
    # Resample deviations from the first row: a constant sample then gives its value exactly,
    # and small differences between large values lose no digits in the sums.
    origin = x[0]
    x = x - origin
    rng = np.random.default_rng(seed)
    rows = max(1, CHUNK_ELEMENTS // n)
    out = np.empty((n_boot, m))
    for start in range(0, n_boot, rows):  # blocks of resamples, vectorised inside
        stop = min(start + rows, n_boot)
        idx = rng.integers(0, n, size=(stop - start, n))
        if statistic == "mean" and m <= 2:
            for j in range(m):  # a plain gather is cheapest for one or two columns
                out[start:stop, j] = x[idx, j].mean(axis=1)
        elif statistic == "mean":
            # The mean of a resample is (counts of each row) @ x / n: one BLAS product for all
            # columns instead of gathering an (n_boot, n, m) array.
            offsets = n * np.arange(stop - start)[:, None]
            counts = np.bincount((idx + offsets).ravel(), minlength=(stop - start) * n)
            out[start:stop] = counts.reshape(stop - start, n).astype(np.float64) @ x / n
        else:
            for j in range(m):
                out[start:stop, j] = np.median(x[idx, j], axis=1)
    replicates: np.ndarray = out + origin  # numpy types the sum with an Any-dtype origin as Any
    return replicates


def _levels(ci: float, n: int, statistic: str, method: str) -> tuple[float, float]:
    alpha = 1.0 - ci
    if method == "expanded" and statistic == "mean":
        # Hesterberg's expanded percentile: pick the normal level whose z equals
        # sqrt(n/(n-1)) * t_{n-1}, undoing the bootstrap's 1/n variance and z-vs-t narrowness.
        z = math.sqrt(n / (n - 1)) * stats.t.ppf(1.0 - alpha / 2.0, n - 1)
        low = float(stats.norm.sf(z))
        return low, 1.0 - low
    return alpha / 2.0, 1.0 - alpha / 2.0


def moments(groups: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(n, mean, standard error, constant)`` of each 1-D array (no NaNs); NaN below 2 values.

    ``constant`` marks arrays whose values are all equal (up to :data:`CONSTANT_TOLERANCE`); their
    standard error is 0.
    """
    k = len(groups)
    n = np.array([len(g) for g in groups], dtype=np.int64)
    mean, se = np.full(k, np.nan), np.full(k, np.nan)
    constant = np.zeros(k, dtype=bool)
    by_size: dict[int, list[int]] = {}
    for i, size in enumerate(n):
        by_size.setdefault(int(size), []).append(i)
    for size, members in by_size.items():
        if size < 2:
            continue
        x = np.column_stack([groups[i] for i in members])
        mean[members] = x.mean(axis=0)
        spread = x.max(axis=0) - x.min(axis=0)
        flat = spread <= CONSTANT_TOLERANCE * np.abs(x).max(axis=0)
        se[members] = np.where(flat, 0.0, x.std(axis=0, ddof=1) / math.sqrt(size))
        constant[members] = flat
    return n, mean, se, constant


def t_interval(groups: Sequence[np.ndarray], alpha: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """t-interval of the mean of each 1-D array (no NaNs) at level ``1 - alpha`` (one per array).

    ``mean ± t_{n-1, 1-alpha/2} · sd / sqrt(n)``; NaN bounds below 2 values. It is the inversion of
    :func:`t_test`, so the interval excludes 0 exactly when that p-value is below ``alpha``.

    All values equal (zero variance, frequent at 2-3 seeds with a metric in steps of one
    validation example): the t-interval would be the point ``[c, c]``. The interval is then the
    inversion of the exact sign-flip test that :func:`t_test` uses there, whose p-value for any
    hypothesised mean other than c is ``2 / 2^n``: unbounded, ``(-inf, +inf)``, while
    ``2 / 2^n >= alpha`` (n <= 5 at 95 %), else the point ``[c, c]`` (six or more identical
    differences: noise below the metric's resolution, where no interval can say more).

    Coverage of a nominal 95 % interval of a mean paired difference, per seed a shared offset
    plus per-run noise (``benchmarks/bench_coverage.py``, 2000 draws x 4 effects a cell), at
    n = 2, 3, 5, 10 and 30: 0.948-0.956 under normal noise, 0.956-0.962 under Student t(3) noise,
    0.945-1.000 with accuracies in steps of 1/360 (binomial or rounded-normal noise), the draws
    with identical differences (up to 17 % at n = 2) included.
    """
    n, mean, se, constant = moments(groups)
    a = np.broadcast_to(np.asarray(alpha, dtype=np.float64), n.shape)
    df = np.maximum(n - 1, 1).astype(np.float64)
    half = stats.t.isf(a / 2.0, df) * se
    low, high = mean - half, mean + half
    unbounded = constant & (2.0 ** (1.0 - n.astype(np.float64)) >= a)
    low[unbounded], high[unbounded] = -np.inf, np.inf
    return low, high


def t_test(groups: Sequence[np.ndarray]) -> np.ndarray:
    """Two-sided one-sample t-test of mean 0 for each 1-D array (no NaNs); NaN below 2 values.

    For paired differences it equals ``scipy.stats.ttest_rel``. When every value is the same
    (t undefined) it is the exact sign-flip permutation test: ``2 / 2^n`` for n identical non-zero
    values, 1 for n zeros, not the 0 an infinite t would claim.
    """
    n, mean, se, constant = moments(groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.abs(mean) / se
    p = 2.0 * stats.t.sf(t, np.maximum(n - 1, 1).astype(np.float64))
    sign_flip = np.where(mean != 0.0, np.minimum(1.0, 2.0 ** (1.0 - n.astype(np.float64))), 1.0)
    p = np.where(constant, sign_flip, p)
    p[n < 2] = np.nan
    out: np.ndarray = p
    return out


def ci_columns(x: np.ndarray, *, ci: float, n_boot: int, seed: int, statistic: str = "mean",
               method: str = "expanded") -> tuple[np.ndarray, np.ndarray]:
    """CI of each column of ``x`` (n, m) (no NaNs); NaN bounds when n < 2.

    ``method="t"``: the t-interval (:func:`t_interval`); else a bootstrap interval.
    """
    n, m = x.shape
    if n < 2:
        return np.full(m, np.nan), np.full(m, np.nan)
    if method == "t":
        return t_interval([x[:, j] for j in range(m)], 1.0 - ci)
    reps = _resample(x, n_boot, seed, statistic)
    low, high = np.quantile(reps, _levels(ci, n, statistic, method), axis=0)
    return low, high


def ci_ragged(groups: Sequence[np.ndarray], *, ci: float, n_boot: int, seed: int,
              method: str = "expanded") -> tuple[np.ndarray, np.ndarray]:
    """Mean CIs of 1-D arrays of different lengths: groups of equal length share one draw."""
    low = np.full(len(groups), np.nan)
    high = np.full(len(groups), np.nan)
    by_size: dict[int, list[int]] = {}
    for i, values in enumerate(groups):
        by_size.setdefault(len(values), []).append(i)
    for size, members in by_size.items():
        if size < 2:
            continue
        x = np.column_stack([groups[i] for i in members])
        lo, hi = ci_columns(x, ci=ci, n_boot=n_boot, seed=seed, method=method)
        low[members], high[members] = lo, hi
    return low, high


def bootstrap_ci(values: Any, *, ci: float = 0.95, n_boot: int = 2000, seed: int = 0,
                 statistic: str = "mean", method: str = "expanded") -> tuple[float, float]:
    """Bootstrap confidence interval of the mean (or median) of a 1-D sample.

    Args:
        values: 1-D array-like of numbers; NaNs are dropped.
        ci: Confidence level in (0, 1).
        n_boot: Number of bootstrap resamples.
        seed: Seed of the resampling; the same values and seed give the same interval.
        statistic: ``"mean"`` or ``"median"``.
        method: ``"t"``: the t-interval (:func:`t_interval`, mean only, no resampling);
            ``"expanded"`` (default) widens the percentile levels of a mean for small
            samples (Hesterberg 2015): on normal data a 95 % interval covers about 93 % at
            n = 5 and 95 % from n = 10 on; ``"percentile"`` is the plain percentile interval
            (about 85 % at n = 5, 90 % at n = 10, 92 % at n = 20).
            The median always uses plain percentile levels.

    Returns:
        ``(low, high)``; ``(nan, nan)`` when fewer than 2 values remain.
    """
    check_ci(ci, n_boot)
    if statistic not in _STATISTICS:
        raise AblateError(f"statistic: {statistic!r} is not allowed; expected one of: mean, median")
    check_method(method)
    if method == "t" and statistic != "mean":
        raise AblateError(f"method: 't' is an interval of the mean; use method='expanded' or "
                          f"'percentile' with statistic={statistic!r}")
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[~np.isnan(x)]
    low, high = ci_columns(x[:, None], ci=ci, n_boot=n_boot, seed=seed, statistic=statistic,
                           method=method)
    return float(low[0]), float(high[0])
