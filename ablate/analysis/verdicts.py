"""A verdict per trick: ``helps``, ``hurts``, ``no effect`` or ``unresolved`` (with the seeds it needs).

:func:`verdicts` reads one family of contrasts (the rows of one :func:`~ablate.analysis.compare`
call, or of :func:`~ablate.analysis.factorial_effects`) and adds a ``verdict`` and a
``seeds_needed`` column. With ``alpha = 1 - confidence`` and m the rows that have at least 2 pairs:

* ``helps`` / ``hurts``: Holm's test rejects "no difference", ``p_holm < alpha`` (the rows'
  simultaneous interval ``ci_low_adj``/``ci_high_adj`` excludes 0, see
  :func:`~ablate.analysis.holm_intervals`), and the effect lies on the better / worse side of 0
  for the study's ``direction`` (a lower ``val_loss`` helps). Family-wise, the chance that any
  row with no true effect gets either verdict is at most alpha.
* ``no effect``: equivalence within ``±margin`` by two one-sided t-tests (TOST) at level
  ``alpha / m`` each, Bonferroni over the family: the ``1 - 2 alpha / m`` t-interval of the mean
  difference lies inside ``(-margin, +margin)``. Family-wise, the chance that any row whose true
  effect is ``±margin`` or beyond is declared ``no effect`` is at most alpha. A row that is both
  significant and equivalent (a real but small effect, many seeds) keeps ``helps``/``hurts``: the
  sign is established; the effect size shown says it is small.
* ``unresolved``: neither. ``seeds_needed`` estimates how many more paired seeds per arm would
  resolve it if the effect and the spread (sd of the differences) stayed what they are: the
  smallest N > n with ``t_{N-1, 1-alpha/(2m)} sd / sqrt(N) < |effect|`` (the row's Bonferroni
  interval, the widest Holm ever uses, would exclude 0) or ``|effect| + t_{N-1, 1-alpha/m} sd /
  sqrt(N) < margin`` (TOST), minus n; ``inf`` beyond :data:`SEEDS_CAP` more (the report writes
  ">100"). With sd from 3-5 seeds the estimate is rough: sd itself is uncertain by a factor of 2.

Edge cases: fewer than 2 pairs: ``unresolved``, ``seeds_needed`` NaN (no spread to extrapolate).
Identical differences (sd 0, frequent at 2-3 seeds with accuracies in steps of one example):
the tests are the exact sign-flip tests of :func:`~ablate.analysis.t_test` and
:func:`~ablate.analysis.t_interval`, so n identical differences c decide ``helps``/``hurts`` once
``2 / 2^n < alpha / m`` and ``no effect`` (|c| < margin) once ``2 / 2^n < 2 alpha / m``;
``seeds_needed`` counts the seeds until then. No ``margin`` (a metric other than an accuracy,
with none given): ``no effect`` is never concluded and the estimate uses the first criterion only.

Calibration by simulation with known truth (normal paired differences with sd 0.5 points;
``tests/test_verdicts.py`` checks the first three at 2000 families a cell, the figures here are
from 20000):

* families of 3 rows, every true effect 0: any ``helps``/``hurts`` in 4.9 % of families at
  n = 3, 5 and 10 pairs (alpha 5 %); every true effect at ±margin (0.5 points): any
  ``no effect`` in 3.0-4.0 %.
* true effect 0, margin 0.5 points, 3 rows: ``no effect`` for 49 % of rows at n = 10 and 95 % at
  n = 20; with sd 0.3 points 97 % at n = 10.
* true effect +2 points: ``helps`` at n = 3 in 92 % of draws alone, 71 % in a family of 2 (the
  other null), 59 % in a family of 3; from n = 5 on in >= 99.7 %.
* ``seeds_needed``: of the rows left unresolved at n = 3-5 (true effects 0.2-1 point, sd 0.5-2),
  53-78 % are resolved once the estimated number of seeds is added (the spread estimated from
  few seeds is noisy, so about half to three quarters, as an estimate at the observed spread
  should be).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from ablate.analysis._checks import numeric, require_frame
from ablate.errors import AblateError

__all__ = ["ACCURACY_MARGIN", "SEEDS_CAP", "VERDICTS", "default_margin", "verdicts"]

VERDICTS = ("helps", "hurts", "no effect", "unresolved")
"""The verdicts, in the order a reader looks for them."""
ACCURACY_MARGIN = 0.005
"""The default equivalence margin of an accuracy (values in [0, 1]): 0.5 percentage points."""
SEEDS_CAP = 100
"""Most additional seeds per arm :func:`verdicts` estimates; beyond it ``seeds_needed`` is inf."""
_DIRECTIONS = ("maximize", "minimize")


def default_margin(metric: str) -> float | None:
    """The margin of ``metric`` when the study gives none: 0.5 points for an accuracy, else None.

    Accuracies are the metrics whose name ends in ``acc`` (``val_acc``, ``test_acc``,
    ``best_val_acc``); any other metric (``val_loss``) needs its margin in its own units.
    """
    return ACCURACY_MARGIN if str(metric).endswith("acc") else None


def _check(margin: float | None, alpha: float, direction: str, family_size: int | None) -> None:
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))
                               or not math.isfinite(margin) or margin <= 0):
        raise AblateError(f"margin: {margin!r} is not allowed; expected a number > 0 in the metric's "
                          "units (0.005 = 0.5 points of accuracy) or None")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha < 0.5:
        raise AblateError(f"alpha: {alpha!r} is not allowed; expected a level in (0, 0.5) such as 0.05")
    if direction not in _DIRECTIONS:
        raise AblateError(f"direction: {direction!r} is not allowed; expected one of: maximize, minimize")
    if family_size is not None and (isinstance(family_size, bool) or not isinstance(family_size, int)
                                    or family_size < 1):
        raise AblateError(f"family_size: {family_size!r} is not allowed; expected an integer >= 1 or None")


def _half_widths(sd: np.ndarray, n: np.ndarray, level: float) -> np.ndarray:
    """Half-width of the two-sided t-interval at ``1 - level`` (sd 0: the sign-flip interval's 0 or inf)."""
    df = np.maximum(np.nan_to_num(n, nan=2.0) - 1.0, 1.0)
    # t quantiles depend on the pairs only: one per distinct count, not one per (row, N) cell.
    distinct, where = np.unique(df, return_inverse=True)
    quantile = np.asarray(stats.t.isf(level / 2.0, distinct))[where.reshape(df.shape)]
    with np.errstate(divide="ignore", invalid="ignore"):
        half = quantile * sd / np.sqrt(n)
    flat = np.where(2.0 ** (1.0 - n) >= level, np.inf, 0.0)
    out: np.ndarray = np.where(sd == 0.0, flat, half)
    return out


def _decided(effect: np.ndarray, sd: np.ndarray, n: np.ndarray, a: float,
             margin: float | None) -> tuple[np.ndarray, np.ndarray]:
    """``(significant, equivalent)`` at n pairs: Bonferroni two-sided test at ``a``, TOST at ``a``."""
    size = np.abs(effect)
    significant = (size > 0.0) & (_half_widths(sd, n, a) < size)
    if margin is None:
        return significant, np.zeros_like(significant)
    equivalent = size + _half_widths(sd, n, 2.0 * a) < margin
    return significant, equivalent


def _seeds_needed(effect: np.ndarray, sd: np.ndarray, n: np.ndarray, a: float,
                  margin: float | None) -> np.ndarray:
    """Additional pairs until either criterion holds at the observed effect and sd (inf past the cap)."""
    more = np.arange(1, SEEDS_CAP + 1, dtype=np.float64)[None, :]
    grid = n[:, None] + more  # (rows, SEEDS_CAP): every candidate N
    significant, equivalent = _decided(effect[:, None], sd[:, None], grid, a, margin)
    hit = significant | equivalent
    first = np.where(hit.any(axis=1), more[0, np.argmax(hit, axis=1)], np.inf)
    out: np.ndarray = np.where(n >= 2, first, np.nan)
    return out


def verdicts(table: pd.DataFrame, *, margin: float | None, alpha: float = 0.05,
             direction: str = "maximize", family_size: int | None = None) -> pd.DataFrame:
    """The table with a ``verdict`` and a ``seeds_needed`` column (rules: see the module docstring).

    Args:
        table: One family of contrasts with ``effect``, ``sd`` (of the paired differences, or of
            the per-seed effects), ``p_holm`` and the number of pairs ``n_pairs`` (or ``n_seeds``):
            the output of :func:`~ablate.analysis.compare` or
            :func:`~ablate.analysis.factorial_effects`.
        margin: Equivalence margin in the metric's units (0.005 = 0.5 points of an accuracy in
            [0, 1]; :func:`default_margin`); None: ``no effect`` is never concluded.
        alpha: Family-wise level, ``1 - confidence``; ``p_holm`` must be adjusted over the same family.
        direction: ``maximize`` (higher is better) or ``minimize`` (a loss: lower is better).
        family_size: m, the rows of the family; None = the rows of ``table`` with >= 2 pairs.
            (Several families stacked in one table, as a simulation does, give theirs.)

    Returns:
        A copy of ``table`` with ``verdict`` (one of :data:`VERDICTS`) and ``seeds_needed``
        (additional seeds per arm; NaN unless unresolved, NaN with < 2 pairs, inf past
        :data:`SEEDS_CAP`).

    Raises:
        AblateError: a missing column, a bad margin, alpha, direction or family size.
    """
    n_column = "n_pairs" if isinstance(table, pd.DataFrame) and "n_pairs" in table.columns else "n_seeds"
    require_frame(table, "table", ["effect", "sd", "p_holm", n_column])
    _check(margin, alpha, direction, family_size)
    out = table.copy()
    effect = numeric(table, "effect", "table").to_numpy(dtype=np.float64)
    sd = numeric(table, "sd", "table").to_numpy(dtype=np.float64)
    n = numeric(table, n_column, "table").to_numpy(dtype=np.float64)
    p_holm = numeric(table, "p_holm", "table").to_numpy(dtype=np.float64)
    usable = (n >= 2) & np.isfinite(effect) & np.isfinite(sd)
    m = family_size if family_size is not None else max(1, int(usable.sum()))
    a = alpha / m
    better = effect if direction == "maximize" else -effect
    rejected = usable & (np.nan_to_num(p_holm, nan=1.0) < alpha)
    _, equivalent = _decided(effect, sd, n, a, margin)
    verdict = np.select([rejected & (better > 0), rejected & (better < 0), usable & equivalent],
                        ["helps", "hurts", "no effect"], "unresolved")
    needed = _seeds_needed(np.where(usable, effect, 0.0), np.where(usable, sd, 0.0), n, a, margin)
    out["verdict"] = verdict.astype(object)
    out["seeds_needed"] = np.where((verdict == "unresolved") & usable, needed, np.nan)
    return out
