"""Paired-by-seed comparisons of arms: effect, bootstrap CI, probability of improvement, p-values.

:func:`compare` reads the metric of each pair of arms seed by seed; :func:`holm` adjusts the
p-values of one family of comparisons.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ablate.analysis._checks import check_ci, check_method, numeric, require_frame
from ablate.analysis.intervals import ci_ragged
from ablate.errors import AblateError


@dataclass(frozen=True)
class Comparison:
    """One paired contrast: runs of ``with_arm`` minus runs of ``without_arm``, seed by seed.

    Attributes:
        label: Name shown in reports (``"norm"``, ``"dropout"``).
        with_arm: Arm with the trick.
        without_arm: Arm without it (often ``"reference"`` or a ``"-trick"`` arm).
    """

    label: str
    with_arm: str
    without_arm: str


_COMPARE_COLUMNS = ["label", "with_arm", "without_arm", "n_pairs", "effect", "ci_low", "ci_high",
                    "p_better", "p_value", "p_holm"]


def holm(pvalues: Any) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values.

    With the m non-NaN p-values sorted ascending, ``p_(1) <= ... <= p_(m)``, the adjusted value
    is ``max_{j <= i} min(1, (m - j + 1) p_(j))``; rejecting where the adjusted p <= alpha
    controls the family-wise error rate at alpha.

    Args:
        pvalues: 1-D array-like of p-values in [0, 1]; NaNs stay NaN and do not count in m.

    Returns:
        Adjusted p-values in the input order.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise AblateError(f"pvalues: expected a 1-D sequence, got shape {p.shape}")
    ok = ~np.isnan(p)
    q = p[ok]
    if np.any((q < 0.0) | (q > 1.0)):
        raise AblateError("pvalues: every p-value must lie in [0, 1] (or be NaN)")
    m = q.size
    order = np.argsort(q, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * q[order]))
    result = np.empty(m)
    result[order] = adjusted
    out = np.full(p.shape, np.nan)
    out[ok] = result
    return out


def _paired_p_values(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Two-sided paired t-test p-value of each (with, without) pair of equal-length arrays."""
    out = np.full(len(pairs), np.nan)
    by_size: dict[int, list[int]] = {}
    for i, (w, _) in enumerate(pairs):
        by_size.setdefault(w.size, []).append(i)
    for size, members in by_size.items():
        if size < 2:
            continue
        # One scipy call per sample size: ttest_rel is vectorised over columns but costs
        # milliseconds of overhead per call, which dominates with hundreds of comparisons.
        w = np.column_stack([pairs[i][0] for i in members])
        wo = np.column_stack([pairs[i][1] for i in members])
        d = w - wo
        constant = np.all(d == d[0], axis=0)
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # zero-variance columns, replaced below
            p = np.atleast_1d(stats.ttest_rel(w, wo, axis=0).pvalue).astype(np.float64)
        # Zero variance (frequent with few seeds and a discrete metric like accuracy): t is
        # undefined. Use the exact sign-flip permutation test instead, whose two-sided p-value for
        # n identical non-zero differences is 2 / 2^n, not the 0 an infinite t would claim.
        p[constant] = np.where(d[0, constant] != 0.0, min(1.0, 2.0 ** (1 - size)), 1.0)
        out[members] = p
    return out


def compare(runs: pd.DataFrame, metric: str, comparisons: Iterable[Comparison], *,
            ci: float = 0.95, n_boot: int = 5000, seed: int = 0,
            method: str = "expanded") -> pd.DataFrame:
    """Paired-by-seed effect of each trick, with CI, probability of improvement and p-values.

    For each comparison, runs of the two arms are inner-joined on ``seed`` (seeds present in
    one arm only are ignored; a NaN metric on either side drops the pair) and
    ``d = with - without`` per seed.

    Args:
        runs: One row per run with ``arm``, ``seed`` and the metric; at most one run with a
            non-NaN metric per (arm, seed) among the arms compared.
        metric: Numeric column to compare (higher is better for ``p_better``).
        comparisons: :class:`Comparison` objects (or ``(label, with_arm, without_arm)``).
        ci: Confidence level of the interval.
        n_boot: Bootstrap resamples.
        seed: Resampling seed (each row's interval equals ``bootstrap_ci(d, seed=seed)``).
        method: ``"expanded"`` or ``"percentile"``, see :func:`bootstrap_ci`.

    Returns:
        One row per comparison, sorted by ``effect`` descending (NaN last), columns:

        * ``label``, ``with_arm``, ``without_arm``, ``n_pairs``.
        * ``effect``: mean of d.
        * ``ci_low``, ``ci_high``: paired bootstrap CI of the mean of d (pairs resampled).
        * ``p_better``: share of pairs with d > 0, ties counting 1/2; the paired estimate of
          P(with > without), the "probability of improvement" of Bouthillier et al. 2021
          (*Accounting for variance in ML benchmarks*) and rliable (Agarwal et al. 2021).
        * ``p_value``: two-sided paired t-test (``scipy.stats.ttest_rel``); NaN with fewer than
          2 pairs; when every d is the same, the exact sign-flip test's 2 / 2^n if that difference
          is non-zero, else 1.
        * ``p_holm``: Holm-Bonferroni adjusted ``p_value`` across the rows of this call.
    """
    require_frame(runs, "runs", ["arm", "seed", metric])
    check_ci(ci, n_boot)
    check_method(method)
    items = _comparisons(runs, comparisons)
    if not items:
        return pd.DataFrame({c: [] for c in _COMPARE_COLUMNS})
    arms = {a for c in items for a in (c.with_arm, c.without_arm)}
    matrix, columns = _seed_by_arm(runs, metric, arms)
    pairs = [_pair(matrix, columns, c) for c in items]
    diffs = [w - wo for w, wo in pairs]
    out = pd.DataFrame([{
        "label": c.label, "with_arm": c.with_arm, "without_arm": c.without_arm,
        "n_pairs": d.size,
        "effect": d.mean() if d.size else math.nan,
        "p_better": (np.mean(d > 0) + 0.5 * np.mean(d == 0)) if d.size else math.nan,
    } for c, d in zip(items, diffs, strict=True)])
    out["p_value"] = _paired_p_values(pairs)
    out["ci_low"], out["ci_high"] = ci_ragged(diffs, ci=ci, n_boot=n_boot, seed=seed, method=method)
    out["p_holm"] = holm(out["p_value"].to_numpy())
    out = out[_COMPARE_COLUMNS].astype({"n_pairs": "int64"})
    return out.sort_values("effect", ascending=False, na_position="last", kind="stable") \
              .reset_index(drop=True)


def _comparisons(runs: pd.DataFrame, comparisons: Iterable[Comparison | Sequence[str]]) -> list[Comparison]:
    """The comparisons as :class:`Comparison` objects, refusing unknown arms and self-comparisons."""
    items = [c if isinstance(c, Comparison) else Comparison(*c) for c in comparisons]
    known = set(runs["arm"].dropna().unique())
    for c in items:
        for arm in (c.with_arm, c.without_arm):
            if arm not in known:
                raise AblateError(f"comparisons: arm {arm!r} (in {c.label!r}) is not in runs; "
                                  f"arms are {', '.join(map(str, pd.unique(runs['arm'].dropna())))}")
        if c.with_arm == c.without_arm:
            raise AblateError(f"comparisons: {c.label!r} compares arm {c.with_arm!r} with itself")
    return items


def _seed_by_arm(runs: pd.DataFrame, metric: str, arms: set[str]) -> tuple[np.ndarray, dict[str, int]]:
    """The metric as a seed x arm matrix (NaN where missing) and each arm's column in it.

    One table serves every comparison, so each pairing is a column subtraction. Refuses an arm
    with several runs of one seed that have the metric.
    """
    values = numeric(runs, metric)
    keep = runs["arm"].isin(arms) & values.notna()
    sub = pd.DataFrame({"arm": runs["arm"][keep], "seed": runs["seed"][keep], "y": values[keep]})
    dup = sub.duplicated(["arm", "seed"], keep=False)
    if dup.any():
        arm, s = sub.loc[dup, ["arm", "seed"]].iloc[0]
        raise AblateError(f"runs: arm {arm!r} has several runs with seed {s} and a {metric}; "
                          f"compare pairs one run per (arm, seed)")
    # reindex: an arm whose runs all have a NaN metric still gets a (fully NaN) column.
    table = sub.pivot(index="seed", columns="arm", values="y").reindex(columns=sorted(arms))
    columns = {arm: i for i, arm in enumerate(table.columns)}
    return table.to_numpy(dtype=np.float64), columns


def _pair(matrix: np.ndarray, columns: dict[str, int], c: Comparison) -> tuple[np.ndarray, np.ndarray]:
    """``(with, without)`` values of the seeds where both arms have the metric, in seed order."""
    w, wo = matrix[:, columns[c.with_arm]], matrix[:, columns[c.without_arm]]
    both = ~(np.isnan(w) | np.isnan(wo))
    return w[both], wo[both]
