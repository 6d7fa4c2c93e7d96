"""Replicated 2^k factorial designs: main effects and interactions of tricks switched on and off.

Each factor is a boolean column of ``runs`` (True = trick on); every seed should have a run in
each of the 2^k on/off cells.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ablate.analysis._checks import check_ci, check_method, numeric, one_line, require_frame
from ablate.analysis.intervals import ci_columns, moments, t_test
from ablate.analysis.paired import holm, holm_intervals
from ablate.errors import AblateError


def _factor_codes(runs: pd.DataFrame, factor: str) -> np.ndarray:
    column = runs[factor]
    codes: np.ndarray  # pandas is untyped here (no pandas-stubs): its to_numpy is Any
    if pd.api.types.is_bool_dtype(column) and not column.isna().any():
        codes = column.to_numpy(dtype=bool)
        return codes
    values = set(column.unique().tolist())
    if values <= {0, 1} and not column.isna().any():  # True == 1, False == 0 as set members
        codes = column.to_numpy().astype(bool)
        return codes
    raise AblateError(f"factors: column {factor!r} must hold True/False (trick on/off) in every "
                      f"run; found {one_line(sorted(map(str, values))[:5])}")


def factorial_effects(runs: pd.DataFrame, metric: str, factors: Sequence[str], *,
                      ci: float = 0.95, n_boot: int = 5000, seed: int = 0,
                      max_order: int | None = None, method: str = "expanded") -> pd.DataFrame:
    """Main effects and interactions of a replicated 2^k factorial design.

    Each factor is coded x = +1 (on) / -1 (off). For a term T (one factor, or several for an
    interaction) the contrast of a cell is ``c_T = prod_{f in T} x_f`` and, per seed with all
    2^k cells,

        effect_T = sum_cells(c_T * y_cell) / 2^(k-1)

    which is the standard ``sum(y * contrast) / (N/2)`` estimate with N = 2^k cells. A main
    effect is then mean(y | on) - mean(y | off); the two-way interaction AB is half the
    difference between A's effect with B on and with B off (equivalently the mean of the
    cells where A and B agree minus the mean of those where they differ). Runs sharing a
    (seed, cell) are averaged; NaN metrics are dropped; a seed missing any cell is skipped.
    The reported effect is the mean of the per-seed effects (identical to the pooled formula
    on the balanced complete seeds) and its CI bootstraps over seeds (``method="t"``: the
    t-interval of the per-seed effects).

    The terms form one family: ``p_holm`` is the paired t-test of each term's per-seed effects
    (:func:`~ablate.analysis.intervals.t_test`) Holm-adjusted over every term reported, and
    ``ci_low_adj``/``ci_high_adj`` are the simultaneous intervals that agree with it
    (:func:`~ablate.analysis.holm_intervals`), as :func:`~ablate.analysis.compare` gives for
    arms; :func:`~ablate.analysis.verdicts` reads them the same way.

    Args:
        runs: One row per run with ``seed``, the metric and the factor columns.
        metric: Numeric response column.
        factors: Boolean columns, True = trick on.
        ci: Confidence level of the interval.
        n_boot: Bootstrap resamples (over seeds).
        seed: Resampling seed.
        max_order: Highest interaction order reported; None = all up to k.
        method: ``"expanded"`` or ``"percentile"``, see :func:`bootstrap_ci`, or ``"t"``.

    Returns:
        Columns ``term`` (``"norm"``, ``"norm:dropout"``), ``kind`` (``main`` |
        ``interaction``), ``effect``, ``ci_low``, ``ci_high``, ``n_seeds`` (complete seeds),
        ``sd`` (of the per-seed effects), ``p_holm``, ``ci_low_adj``, ``ci_high_adj`` (at level
        ``ci``, t-based whatever ``method``), sorted by |effect| descending.
    """
    factors = list(factors)
    max_order = _check_design(runs, metric, factors, ci=ci, n_boot=n_boot, max_order=max_order,
                              method=method)
    k = len(factors)
    complete = _complete_seeds(runs, metric, factors)
    terms = [t for order in range(1, min(max_order, k) + 1)
             for t in itertools.combinations(range(k), order)]
    per_seed = complete @ _contrasts(k, terms) / 2 ** (k - 1)  # (seeds, terms)
    low, high = ci_columns(per_seed, ci=ci, n_boot=n_boot, seed=seed, method=method)
    columns = [per_seed[:, j] for j in range(per_seed.shape[1])]
    n, _, se, _ = moments(columns)
    p_holm = holm(t_test(columns))
    low_adj, high_adj = holm_intervals(columns, p_holm, 1.0 - ci)
    out = pd.DataFrame({
        "term": [":".join(factors[i] for i in t) for t in terms],
        "kind": ["main" if len(t) == 1 else "interaction" for t in terms],
        "effect": per_seed.mean(axis=0),
        "ci_low": low,
        "ci_high": high,
        "n_seeds": per_seed.shape[0],
        "sd": se * np.sqrt(n),
        "p_holm": p_holm,
        "ci_low_adj": low_adj,
        "ci_high_adj": high_adj,
    })
    return out.sort_values("effect", key=np.abs, ascending=False, kind="stable").reset_index(drop=True)


def _check_design(runs: pd.DataFrame, metric: str, factors: list[str], *, ci: float, n_boot: int,
                  max_order: int | None, method: str) -> int:
    """Refuse bad arguments of :func:`factorial_effects`; returns ``max_order`` (None -> k)."""
    if not factors or len(set(factors)) != len(factors):
        raise AblateError("factors: expected a non-empty list of distinct boolean column names")
    require_frame(runs, "runs", ["seed", metric, *factors])
    check_ci(ci, n_boot)
    check_method(method)
    if max_order is None:
        max_order = len(factors)
    if isinstance(max_order, bool) or not isinstance(max_order, int) or max_order < 1:
        raise AblateError(f"max_order: {max_order!r} is not allowed; expected an integer >= 1 or None")
    return max_order


def _complete_seeds(runs: pd.DataFrame, metric: str, factors: list[str]) -> np.ndarray:
    """(seeds, 2^k) mean metric of each seed in each cell, for the seeds that have every cell.

    Cell c holds the runs whose factor i is on exactly where bit i of c is set.
    """
    k = len(factors)
    bits = np.column_stack([_factor_codes(runs, f) for f in factors])
    cell = bits.astype(np.int64) @ (1 << np.arange(k))
    y = numeric(runs, metric)
    table = pd.DataFrame({"seed": runs["seed"].to_numpy(), "cell": cell, "y": y.to_numpy()}).dropna()
    wide = table.groupby(["seed", "cell"])["y"].mean().unstack("cell").reindex(columns=range(2 ** k))
    complete: np.ndarray = wide.dropna().to_numpy()
    if complete.shape[0] == 0:
        raise AblateError(f"factors: no seed has a {metric} in all {2 ** k} on/off combinations of "
                          f"{', '.join(factors)}; factorial_effects needs a full 2^k design")
    return complete


def _contrasts(k: int, terms: Sequence[tuple[int, ...]]) -> np.ndarray:
    """(2^k cells, terms) contrast matrix: the product of the terms' factor signs (+1 on, -1 off)."""
    signs = np.where((np.arange(2 ** k)[:, None] >> np.arange(k)) & 1, 1.0, -1.0)  # (cells, k)
    contrasts: np.ndarray = np.column_stack([signs[:, list(t)].prod(axis=1) for t in terms])
    return contrasts
