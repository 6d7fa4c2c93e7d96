"""Paired-by-seed comparisons of arms: effect, CI, probability of improvement, p-values.

:func:`compare` reads the metric of each pair of arms seed by seed; :func:`holm` adjusts the
p-values of one family of comparisons and :func:`holm_intervals` gives the simultaneous intervals
that agree with it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ablate.analysis._checks import check_ci, check_method, numeric, require_frame
from ablate.analysis.intervals import ci_ragged, moments, t_interval, t_test
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


_COMPARE_COLUMNS = ["label", "with_arm", "without_arm", "n_pairs", "effect", "sd", "ci_low", "ci_high",
                    "p_better", "p_value", "p_holm", "ci_low_adj", "ci_high_adj"]
# An open bound at 0 ("the effect is > 0"), stored as the nearest double so that
# ``ci_low_adj > 0`` reads "excludes 0"; it prints as 0.
OPEN_ZERO = math.ulp(0.0)


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


def holm_intervals(groups: Sequence[np.ndarray], p_holm: Any, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Simultaneous intervals of the means of ``groups`` that agree with Holm's test at ``alpha``.

    With m rows that have a p-value and r of them not rejected (``p_holm >= alpha``), every
    interval starts as the Bonferroni t-interval at level ``1 - alpha / m`` (simultaneous for the
    family); then each row that Holm rejects keeps only the side of 0 of its effect
    (the compatibility rule of Strassburger & Bretz 2008, *Stat. Med.* 27, for Holm's procedure):

    * some row not rejected (r >= 1): ``(0, +inf)`` for a positive effect, ``(-inf, 0)`` for a
      negative one: Holm's step-down licenses the sign, not a magnitude;
    * every row rejected (r = 0): the Bonferroni interval cut at 0 on the far side.

    So an interval excludes 0 exactly when ``p_holm < alpha`` (an open bound at 0 is stored as
    :data:`OPEN_ZERO`, ``±5e-324``): the retained rows have p >= alpha / r >= alpha / m, so their
    Bonferroni interval holds 0. Family-wise coverage (every row's interval holding its true
    effect, and no null row excluding 0) measured at 3-10 normal pairs, 2-4 rows, null to large
    effects, 3000 families each: 0.943-0.987 (``tests/test_coverage.py`` checks >= 0.93). Holm's
    two-sided step-down admits no exactly compatible rectangles with a proof of 1 - alpha
    coverage; Bonferroni intervals alone have it but would disagree with ``p_holm``.

    Args:
        groups: 1-D arrays (paired differences), as for :func:`~ablate.analysis.intervals.t_interval`.
        p_holm: Holm-adjusted p-values, one per group (NaN where the group has fewer than 2 values).
        alpha: Family-wise level, ``1 - ci``.

    Returns:
        ``(low, high)``, NaN where ``p_holm`` is NaN.
    """
    adjusted = np.asarray(p_holm, dtype=np.float64)
    ok = ~np.isnan(adjusted)
    m = int(ok.sum())
    low, high = np.full(adjusted.shape, np.nan), np.full(adjusted.shape, np.nan)
    if m == 0:
        return low, high
    lo, hi = t_interval(groups, alpha / m)
    low[ok], high[ok] = lo[ok], hi[ok]
    rejected = ok & (adjusted < alpha)
    mean = np.array([g.mean() if len(g) else math.nan for g in groups])
    up, down = rejected & (mean > 0), rejected & (mean < 0)
    if rejected.sum() < m:
        low[up], high[up] = OPEN_ZERO, np.inf
        low[down], high[down] = -np.inf, -OPEN_ZERO
    else:
        low[up] = np.maximum(low[up], OPEN_ZERO)
        high[down] = np.minimum(high[down], -OPEN_ZERO)
    return low, high


def compare(runs: pd.DataFrame, metric: str, comparisons: Iterable[Comparison], *,
            ci: float = 0.95, n_boot: int = 5000, seed: int = 0,
            method: str = "t") -> pd.DataFrame:
    """Paired-by-seed effect of each trick, with CIs, probability of improvement and p-values.

    For each comparison, runs of the two arms are inner-joined on ``seed`` (seeds present in
    one arm only are ignored; a NaN metric on either side drops the pair) and
    ``d = with - without`` per seed.

    Args:
        runs: One row per run with ``arm``, ``seed`` and the metric; at most one run with a
            non-NaN metric per (arm, seed) among the arms compared.
        metric: Numeric column to compare (higher is better for ``p_better``).
        comparisons: :class:`Comparison` objects (or ``(label, with_arm, without_arm)``).
        ci: Confidence level of the intervals; ``alpha = 1 - ci`` is the level of the tests.
        n_boot: Bootstrap resamples (bootstrap methods only).
        seed: Resampling seed (bootstrap methods: each row's interval equals
            ``bootstrap_ci(d, seed=seed, method=method)``).
        method: ``"t"`` (default): the t-interval of the mean of d, the inversion of the t-test
            behind ``p_value``, so ``ci_low``/``ci_high`` exclude 0 exactly when
            ``p_value < alpha`` (:func:`~ablate.analysis.intervals.t_interval`; it covers
            >= 0.94 at 2 to 30 pairs under normal, heavy-tailed and accuracy-step noise).
            ``"expanded"`` or ``"percentile"``: the bootstrap intervals of :func:`bootstrap_ci`,
            kept for comparison; they cover only 0.73-0.77 at 3 pairs and 0.91-0.94 at 5, and
            need not agree with ``p_value``.

    Returns:
        One row per comparison, sorted by ``effect`` descending (NaN last), columns:

        * ``label``, ``with_arm``, ``without_arm``, ``n_pairs``.
        * ``effect``: mean of d.
        * ``sd``: standard deviation of d (ddof 1; 0 when every d is the same; NaN below 2 pairs),
          the spread :func:`~ablate.analysis.verdicts` extrapolates.
        * ``ci_low``, ``ci_high``: CI of the mean of d at level ``ci`` (see ``method``); with all
          d equal, unbounded while 2 / 2^n >= alpha (n <= 5 at 95 %), else the point.
        * ``p_better``: share of pairs with d > 0, ties counting 1/2; the paired estimate of
          P(with > without), the "probability of improvement" of Bouthillier et al. 2021
          (*Accounting for variance in ML benchmarks*) and rliable (Agarwal et al. 2021).
        * ``p_value``: two-sided paired t-test (``scipy.stats.ttest_rel``); NaN with fewer than
          2 pairs; when every d is the same, the exact sign-flip test's 2 / 2^n if that difference
          is non-zero, else 1.
        * ``p_holm``: Holm-Bonferroni adjusted ``p_value`` across the rows of this call.
        * ``ci_low_adj``, ``ci_high_adj``: simultaneous intervals over the rows of this call that
          agree with ``p_holm`` (:func:`holm_intervals`): they exclude 0 exactly when
          ``p_holm < alpha``. Always t-based, whatever ``method``.
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
    n, _, se, _ = moments(diffs)
    out["sd"] = se * np.sqrt(n)
    out["p_value"] = t_test(diffs)
    if method == "t":
        out["ci_low"], out["ci_high"] = t_interval(diffs, 1.0 - ci)
    else:
        out["ci_low"], out["ci_high"] = ci_ragged(diffs, ci=ci, n_boot=n_boot, seed=seed, method=method)
    out["p_holm"] = holm(out["p_value"].to_numpy())
    out["ci_low_adj"], out["ci_high_adj"] = holm_intervals(diffs, out["p_holm"].to_numpy(), 1.0 - ci)
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
