"""Adaptive seeds: which arms get more seeds next round, with verdicts valid under optional stopping.

A study with ``seeds: {start, step, max}`` runs ``start`` seeds in every arm, then, round after
round, ``step`` more seeds in the arms of the comparisons still ``unresolved`` (an arm shared by
several comparisons, such as the reference arm, gets what the most demanding one needs) until
every comparison has a verdict or ``max`` is reached. :func:`next_round` is the rule the
supervisor calls after each round; :func:`sequential_verdicts` is the verdict table the report
shows after an adaptive study (the same table ``next_round`` returns).

Why a correction: looking after every round and stopping a comparison once a test rejects gives
each null comparison up to K chances to be called ``helps``/``hurts``, where K = 1 + ceil((max -
start) / step) is the number of looks (15 for start 3, step 2, max 30), and the interval shown
when it stops is biased away from 0. Measured without a correction (the fixed-design
:func:`~ablate.analysis.verdicts` applied at every look, ``none`` in ``benchmarks/bench_adaptive.py``):
on studies shaped like ``ablation_digits`` (9 tricks, 1000 studies a cell) a wrong
``helps``/``hurts`` in 7.8-9.2 % of studies at alpha 5 % and interval coverage 0.926-0.944 under
normal and accuracy-step noise; on the 4 tricks of ``benchmarks/bench_coverage.py`` (+2, +0.5, 0, -1 points;
300 studies, start 3) 15 % of studies and coverage 0.90-0.91.

The correction: a group-sequential boundary on each comparison's t-statistic, turned into
repeated p-values and repeated confidence intervals (Jennison & Turnbull 2000, *Group Sequential
Methods*, ch. 9). At look k (the largest grid point ``start + k step`` at or below the row's
pairs, the last one ``max``) the paired t-statistic's two-sided p-value is put on the normal
scale, ``z_k = Phi^-1(1 - p_k / 2)`` (exactly N(0, 1)-distributed under normal noise whatever the
pairs), and a row crosses at level a when ``z_k >= c(a) g_k`` with the Wang-Tsiatis shape
``g_k = (n_k / n_K)^(Delta - 1/2)``. ``c(a)`` makes the chance that a null row ever crosses, over
all K looks, equal to a: the (1 - a) quantile of ``max_k z_k / g_k`` of normal data, simulated once
per schedule (``2^17`` paths, fixed seed, so deterministic), or for levels whose tail holds fewer
than 256 paths the union bound ``sum_k 2 (1 - Phi(c g_k)) = a`` (conservative). A row then gets:

* ``p_seq``: the repeated p-value ``P(max_k z_k / g_k >= z / g)``, valid at any stopping look;
  ``p_holm`` is Holm over the family of the ``p_seq``; ``helps``/``hurts`` when ``p_holm < alpha``.
* ``ci_low``/``ci_high``: the repeated confidence interval at ``1 - alpha``, the t-interval at the
  look's nominal level ``a_k = 2 (1 - Phi(c(alpha) g_k))``; it holds the true effect at every
  look at once with probability >= 1 - alpha, so also at whichever look the study stops.
* ``ci_low_adj``/``ci_high_adj``: the same at ``alpha / m``, cut at 0 where Holm rejects (the
  rule of :func:`~ablate.analysis.holm_intervals`): they exclude 0 exactly when ``p_holm < alpha``.
* ``no effect``: the one-sided repeated bounds at ``alpha / m`` each (boundary from the signed
  ``max_k``) lie inside ``±margin``, Bonferroni over the family as in
  :func:`~ablate.analysis.verdicts`.
* ``seeds_needed``: as in :func:`~ablate.analysis.verdicts`, at the later looks' levels. Past the
  schedule's last look the estimate continues the schedule (its step, the last look's levels), so
  a trick still open at ``max`` reads what a longer schedule would need rather than "> 100".

With one look (``max == start``) every formula is the fixed-design one of
:func:`~ablate.analysis.verdicts` and :func:`~ablate.analysis.compare`.

Boundaries measured (``benchmarks/bench_adaptive.py``; see ``benchmarks/README.md`` for the
full table, the command and the draws): ``bonferroni`` (alpha / K at every look, no simulation),
``pocock`` (Delta 1/2, calibrated), ``wang-tsiatis`` (Delta 1/4, calibrated, the default) and
``obrien-fleming`` (Delta 0). All four keep coverage >= 0.95 and the false ``helps``/``hurts``
rate below alpha; they differ in the runs they need. With start 3, step 2, max 30, 9 tricks shaped
like ``ablation_digits``, 1000 studies a cell (normal / Student t(3) / accuracy-step noise):

==============  ==================  =====================  ======================  =================
boundary        coverage            wrong helps/hurts      every trick resolved    mean runs
==============  ==================  =====================  ======================  =================
bonferroni      0.994-0.996         0.1-0.7 %              0.84-0.89               105-127
pocock          0.985-0.991         0.9-1.5 %              0.90-0.92               97-117
wang-tsiatis    0.994-0.997         0.4-1.2 %              0.95-0.98               117-133
obrien-fleming  0.994-0.998         0.3-1.2 %              0.94-0.99               142-155
==============  ==================  =====================  ======================  =================

The fixed design needs 27 / 35 / 28 seeds per arm (270-350 runs) to resolve every trick as often
as ``wang-tsiatis`` does: 2.1 / 3.0 / 2.1 times its runs, the best ratio of the four (Pocock
2.1 / 2.9 / 2.0 but resolves fewer studies within the max; Bonferroni 1.7-2.4; O'Brien-Fleming
1.9-2.4, its early looks are too strict for 3-7 seeds). Hence the default: Wang-Tsiatis with
Delta 1/4, strict at the first looks, where a t-statistic on 2-4 degrees of freedom is least
reliable, and close to the fixed level at the last ones (per-row level 0.0025 at 30 seeds for
alpha / m = 0.0056, against 0.00066 at every look for Pocock and 0.00037 for Bonferroni). Its cost:
a trick is rarely resolved at the first look (a t of about 370 is needed at 3 seeds for alpha / 2),
so a study stops after round 1 only when every difference is far from noise.

Approximations, said once: the calibration assumes normal paired differences (Student t(3) and
accuracy-step noise are checked by simulation, not by proof); a row whose pairs fall between
grid points (failed runs) is tested at the lower grid point's boundary, calibrated for the grid's
pair counts; the schedule (start, step, max) must be fixed before the first look.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats

from ablate.analysis._checks import numeric, require_frame
from ablate.analysis.paired import OPEN_ZERO, Comparison, compare, holm
from ablate.analysis.verdicts import SEEDS_CAP
from ablate.errors import AblateError

__all__ = ["BOUNDARIES", "Round", "look_levels", "looks", "next_round", "sequential_verdicts"]

BOUNDARIES: dict[str, tuple[float, bool]] = {
    "bonferroni": (0.5, False),  # (Wang-Tsiatis Delta, calibrated by simulation)
    "pocock": (0.5, True),
    "wang-tsiatis": (0.25, True),
    "obrien-fleming": (0.0, True),
}
"""The boundaries :func:`next_round` offers: ``(Delta, simulated)``; ``simulated`` False = union bound."""
DEFAULT_BOUNDARY = "wang-tsiatis"
PATHS = 1 << 17
"""Null paths simulated per schedule to calibrate a boundary."""
TAIL_PATHS = 256
"""Fewest simulated paths a tail probability rests on; rarer tails use the union bound."""
_SIM_SEED = 20261211
_DIRECTIONS = ("maximize", "minimize")


# --- the schedule and its boundary -------------------------------------------------------------------


def looks(start: int, step: int, max_seeds: int) -> tuple[int, ...]:
    """The seeds per arm at each look: ``start, start + step, ...``, the last one ``max_seeds``."""
    _check_schedule(start, step, max_seeds)
    grid = list(range(start, max_seeds, step))
    return (*grid, max_seeds)


def _check_schedule(start: Any, step: Any, max_seeds: Any) -> None:
    def integer(x: Any) -> bool:
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

    if not integer(start) or start < 2:
        raise AblateError(f"seeds.start: {start!r} is not allowed; expected an integer >= 2 "
                          "(a paired interval needs 2 seeds)")
    if not integer(step) or step < 1:
        raise AblateError(f"seeds.step: {step!r} is not allowed; expected an integer >= 1")
    if not integer(max_seeds) or max_seeds < start:
        raise AblateError(f"seeds.max: {max_seeds!r} is not allowed; expected an integer >= seeds.start "
                          f"({start})")


@dataclass(frozen=True)
class _Boundary:
    """A calibrated boundary of one schedule: shapes and the sorted null maxima (or none)."""

    looks: tuple[int, ...]
    shape: np.ndarray  # g_k
    two_sided: np.ndarray | None  # sorted max_k |z_k| / g_k over the null paths
    one_sided: np.ndarray | None  # sorted max_k z_k / g_k

    def union_tail(self, s: np.ndarray, sides: int) -> np.ndarray:
        per_look = stats.norm.sf(np.multiply.outer(s, self.shape))
        tail: np.ndarray = np.minimum(1.0, sides * per_look.sum(axis=-1))
        return tail

    def tail(self, s: np.ndarray, sides: int) -> np.ndarray:
        """A valid upper estimate of ``P(max_k z_k / g_k >= s)`` under the null."""
        s = np.asarray(s, dtype=np.float64)
        union = self.union_tail(s, sides)
        null = self.two_sided if sides == 2 else self.one_sided
        if null is None:
            return union
        count = null.size - np.searchsorted(null, np.nan_to_num(s, nan=-np.inf), side="left")
        out: np.ndarray = np.where(count >= TAIL_PATHS, count / null.size,
                                   np.minimum(union, (TAIL_PATHS - 1) / null.size))
        tail: np.ndarray = np.where(np.isnan(s), np.nan, out)
        return tail

    def critical(self, level: float, sides: int) -> float:
        """``c(level)``: ``tail(s) < level`` exactly when ``s > c``."""
        null = self.two_sided if sides == 2 else self.one_sided
        if null is not None and level * null.size >= TAIL_PATHS:
            j = math.ceil(level * null.size) - 1
            return float(null[null.size - j - 1])

        def excess(c: float) -> float:
            return float(self.union_tail(np.asarray(c), sides)) - level

        return float(optimize.brentq(excess, -10.0, 100.0, xtol=1e-12))

    def nominal(self, level: float, sides: int) -> np.ndarray:
        """Per-look nominal level (two-sided p for sides 2, one-sided for 1) of ``c(level)``."""
        out: np.ndarray = sides * stats.norm.sf(self.critical(level, sides) * self.shape)
        return out


@functools.lru_cache(maxsize=32)
def _boundary(schedule: tuple[int, ...], boundary: str) -> _Boundary:
    delta, simulated = BOUNDARIES[boundary]
    n = np.asarray(schedule, dtype=np.float64)
    shape = (n / n[-1]) ** (delta - 0.5)
    if not simulated or len(schedule) == 1:  # one look: the union bound is exact
        return _Boundary(schedule, shape, None, None)
    rng = np.random.default_rng(_SIM_SEED)
    x = rng.standard_normal((PATHS, schedule[-1]))
    s1, s2 = np.cumsum(x, axis=1), np.cumsum(x * x, axis=1)
    two = np.full(PATHS, -np.inf)
    one = np.full(PATHS, -np.inf)
    for k, size in enumerate(schedule):
        mean = s1[:, size - 1] / size
        var = (s2[:, size - 1] - size * mean * mean) / (size - 1)
        t = mean / np.sqrt(np.maximum(var, 1e-300) / size)
        upper = stats.t.sf(t, size - 1)  # one-sided p, then the normal scale
        z_one = stats.norm.isf(upper)
        z_two = stats.norm.isf(np.minimum(upper, 1.0 - upper))  # = Phi^-1(1 - p_two / 2)
        one = np.maximum(one, z_one / shape[k])
        two = np.maximum(two, z_two / shape[k])
    return _Boundary(schedule, shape, np.sort(two), np.sort(one))


def look_levels(alpha: float, *, start: int, step: int, max_seeds: int,
                boundary: str = DEFAULT_BOUNDARY, sides: int = 2) -> pd.Series:
    """The nominal level of each look's interval and test for a family-wise level ``alpha``.

    A row with n pairs at look k (``looks()[k] <= n``) is tested and shown at the level of look k:
    a two-sided t-interval at ``1 - level_k`` (``sides=2``), or one-sided bounds at ``1 - level_k``
    each (``sides=1``, the TOST of ``no effect``). ``alpha`` is per row: pass ``alpha / m`` for a
    Bonferroni family of m rows.

    Returns:
        The levels indexed by the looks' seeds per arm.
    """
    _check_level(alpha)
    _check_boundary(boundary)
    schedule = looks(start, step, max_seeds)
    levels = _boundary(schedule, boundary).nominal(alpha, sides)
    return pd.Series(levels, index=pd.Index(schedule, name="seeds"), name="level")


def _check_level(alpha: Any) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha < 0.5:
        raise AblateError(f"alpha: {alpha!r} is not allowed; expected a level in (0, 0.5) such as 0.05")


def _check_boundary(boundary: Any) -> None:
    if boundary not in BOUNDARIES:
        raise AblateError(f"boundary: {boundary!r} is not allowed; expected one of: {', '.join(BOUNDARIES)}")


# --- verdicts at a look (arrays: families x rows) ----------------------------------------------------


def _t_half(se: np.ndarray, n: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Half-width of the two-sided t-interval at ``1 - level`` (se 0: the sign-flip rule's 0 or inf)."""
    df = np.maximum(np.nan_to_num(n, nan=2.0) - 1.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        half = stats.t.isf(level / 2.0, df) * se
    flat = np.where(2.0 ** (1.0 - np.nan_to_num(n, nan=1.0)) >= level, np.inf, 0.0)
    out: np.ndarray = np.where(se == 0.0, flat, half)
    return out


def _holm_rows(p: np.ndarray) -> np.ndarray:
    """Holm per family (row of ``p``), NaNs not counted."""
    out: np.ndarray = np.vstack([holm(row) for row in p]) if p.size else p.copy()
    return out


def decide(effect: np.ndarray, sd: np.ndarray, n: np.ndarray, p_value: np.ndarray, *,
           schedule: tuple[int, ...], boundary: str, alpha: float, margin: float | None,
           direction: str) -> dict[str, np.ndarray]:
    """The sequential verdict columns for families of rows (arrays of shape (families, rows)).

    The statistical core of :func:`sequential_verdicts` and :func:`next_round`, public to the
    package so that simulations run it on many studies at once. ``p_value`` is the fixed-sample
    two-sided paired t-test (:func:`~ablate.analysis.t_test`, its sign-flip rule for identical
    differences included).
    """
    effect, sd, n, p_value = (np.atleast_2d(np.asarray(a, dtype=np.float64))
                              for a in (effect, sd, n, p_value))
    bound = _boundary(schedule, boundary)
    grid = np.asarray(schedule, dtype=np.float64)
    usable = (n >= 2) & np.isfinite(effect) & np.isfinite(sd) & np.isfinite(p_value)
    k = np.clip(np.searchsorted(grid, np.nan_to_num(n, nan=0.0), side="right") - 1, 0, grid.size - 1)
    z = stats.norm.isf(np.where(usable, p_value, np.nan) / 2.0)
    p_seq = np.where(usable, bound.tail(z / bound.shape[k], 2), np.nan)
    p_holm = _holm_rows(p_seq)
    m = np.maximum(usable.sum(axis=1, keepdims=True), 1)
    se = np.where(usable, sd / np.sqrt(np.maximum(n, 1.0)), np.nan)

    def level_at(level: float, sides: int) -> np.ndarray:
        levels: np.ndarray = bound.nominal(level, sides)[k]
        return levels

    half = _t_half(se, n, level_at(alpha, 2))
    sizes, which = np.unique(m[:, 0], return_inverse=True)  # one boundary per family size
    levels_adj = np.stack([bound.nominal(alpha / mi, 2) for mi in sizes])[which]  # (families, looks)
    half_adj = _t_half(se, n, np.take_along_axis(levels_adj, k, axis=1))
    tost = np.stack([bound.nominal(alpha / mi, 1) for mi in sizes])[which]
    half_tost = _t_half(se, n, 2.0 * np.take_along_axis(tost, k, axis=1))

    rejected = usable & (np.nan_to_num(p_holm, nan=1.0) < alpha)
    low_adj, high_adj = effect - half_adj, effect + half_adj
    some_kept = (usable & ~rejected).any(axis=1, keepdims=True)
    up, down = rejected & (effect > 0), rejected & (effect < 0)
    low_adj = np.where(up, np.where(some_kept, OPEN_ZERO, np.maximum(low_adj, OPEN_ZERO)), low_adj)
    high_adj = np.where(up & some_kept, np.inf, high_adj)
    high_adj = np.where(down, np.where(some_kept, -OPEN_ZERO, np.minimum(high_adj, -OPEN_ZERO)), high_adj)
    low_adj = np.where(down & some_kept, -np.inf, low_adj)

    equivalent = usable & (margin is not None) & (np.abs(effect) + half_tost < (margin or 0.0))
    better = effect if direction == "maximize" else -effect
    verdict = np.select([rejected & (better > 0), rejected & (better < 0), equivalent],
                        ["helps", "hurts", "no effect"], "unresolved")
    # The estimate looks past the last look too, continuing the schedule at its last level: a
    # trick open at max then reads what a longer schedule would need (not "> 100" for every one).
    step = grid[-1] - grid[-2] if grid.size > 1 else max(grid[-1], 1.0)
    beyond = grid[-1] + step * np.arange(1, math.ceil(SEEDS_CAP / step) + 1)

    def extend(levels: np.ndarray) -> np.ndarray:
        return np.concatenate([levels, np.repeat(levels[:, -1:], beyond.size, axis=1)], axis=1)

    needed = _seeds_needed(effect, se * np.sqrt(np.maximum(n, 1.0)), n, k, np.concatenate([grid, beyond]),
                           extend(levels_adj), extend(2.0 * tost), margin)
    needed = np.where(needed > SEEDS_CAP, np.inf, needed)
    nan = np.full(effect.shape, np.nan)
    return {
        "p_seq": p_seq, "p_holm": p_holm,
        "ci_low": np.where(usable, effect - half, nan), "ci_high": np.where(usable, effect + half, nan),
        "ci_low_adj": np.where(usable, low_adj, nan), "ci_high_adj": np.where(usable, high_adj, nan),
        "verdict": verdict, "look": k,
        "seeds_needed": np.where((verdict == "unresolved") & usable, needed, nan),
    }


def _seeds_needed(effect: np.ndarray, sd: np.ndarray, n: np.ndarray, k: np.ndarray, grid: np.ndarray,
                  levels: np.ndarray, tost_levels: np.ndarray, margin: float | None) -> np.ndarray:
    """Additional pairs until a later look would resolve the row at the observed effect and sd."""
    size = np.abs(np.nan_to_num(effect))
    best = np.full(effect.shape, np.inf)
    for j in range(grid.size - 1, -1, -1):  # latest first, so earlier hits overwrite
        later = grid[j] > np.nan_to_num(n, nan=np.inf)
        big_n = np.full(effect.shape, grid[j])
        se = np.nan_to_num(sd) / np.sqrt(grid[j])
        hit = (size > 0) & (_t_half(se, big_n, levels[:, j:j + 1]) < size)
        if margin is not None:
            hit |= size + _t_half(se, big_n, tost_levels[:, j:j + 1]) < margin
        best = np.where(later & hit & (k < j), grid[j] - n, best)
    return best


# --- the public tables -------------------------------------------------------------------------------


def _check(margin: Any, alpha: Any, direction: Any, boundary: Any) -> None:
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))
                               or not math.isfinite(margin) or margin <= 0):
        raise AblateError(f"margin: {margin!r} is not allowed; expected a number > 0 in the metric's "
                          "units (0.005 = 0.5 points of accuracy) or None")
    _check_level(alpha)
    if direction not in _DIRECTIONS:
        raise AblateError(f"direction: {direction!r} is not allowed; expected one of: maximize, minimize")
    _check_boundary(boundary)


def sequential_verdicts(table: pd.DataFrame, *, start: int, step: int, max_seeds: int,
                        margin: float | None, alpha: float = 0.05, direction: str = "maximize",
                        boundary: str = DEFAULT_BOUNDARY) -> pd.DataFrame:
    """The verdict table of an adaptive study: :func:`~ablate.analysis.verdicts` at corrected levels.

    Args:
        table: One family of contrasts from :func:`~ablate.analysis.compare` (``effect``, ``sd``,
            ``n_pairs``, ``p_value``), on every run of the study so far.
        start, step, max_seeds: The study's ``seeds`` schedule (fixed before the first look).
        margin, alpha, direction: As for :func:`~ablate.analysis.verdicts`.
        boundary: One of :data:`BOUNDARIES` (module docstring).

    Returns:
        A copy of ``table`` whose ``p_holm``, ``ci_low``, ``ci_high``, ``ci_low_adj`` and
        ``ci_high_adj`` are the sequential ones, plus ``p_seq`` (repeated p-value), ``look``
        (0-based index into :func:`looks`), ``verdict`` and ``seeds_needed``.
    """
    require_frame(table, "table", ["effect", "sd", "n_pairs", "p_value"])
    _check(margin, alpha, direction, boundary)
    schedule = looks(start, step, max_seeds)
    columns = {c: numeric(table, c, "table").to_numpy(dtype=np.float64)
               for c in ("effect", "sd", "n_pairs", "p_value")}
    decided = decide(columns["effect"], columns["sd"], columns["n_pairs"], columns["p_value"],
                     schedule=schedule, boundary=boundary, alpha=alpha, margin=margin, direction=direction)
    out = table.copy()
    for name, values in decided.items():
        out[name] = values[0].astype(object) if name == "verdict" else values[0]
    return out


@dataclass(frozen=True)
class Round:
    """What the supervisor does next.

    Attributes:
        targets: Per arm, the seeds it should have after this round (seeds ``0 .. target - 1``);
            never below what the runs show the arm already had.
        table: The verdict table at the current runs (:func:`sequential_verdicts`).
        done: True when every comparison has a verdict or the schedule's last look is reached.
        reason: Why done, or what is queued, in one line.
        look: Index into ``looks(start, step, max_seeds)`` of the seeds the runs have reached.
    """

    targets: dict[str, int]
    table: pd.DataFrame = field(repr=False)
    done: bool
    reason: str
    look: int


def next_round(runs: pd.DataFrame, metric: str, comparisons: Iterable[Comparison], *, start: int, step: int,
               max_seeds: int, margin: float | None, confidence: float = 0.95,
               direction: str = "maximize", boundary: str = DEFAULT_BOUNDARY) -> Round:
    """The adaptive rule after a round: verdicts at corrected levels and each arm's seed target.

    Deterministic in ``runs``: a resumed supervisor gets the same :class:`Round`. The look the
    study is at is the smallest grid point of :func:`looks` at or above ``1 + the highest seed``
    among the compared arms' runs (failed runs count when they are in ``runs`` with a NaN metric;
    a comparison uses only the seeds that both its arms have). Every arm of an unresolved
    comparison is asked for the next grid point; other arms keep what they have.

    Args:
        runs: As for :func:`~ablate.analysis.compare` (``arm``, ``seed`` 0-based, the metric).
        metric: The study's metric column.
        comparisons: The study's comparisons, one family.
        start, step, max_seeds: ``seeds: {start, step, max}``.
        margin: Equivalence margin in the metric's units (None: no ``no effect``).
        confidence: ``resolve.confidence``; alpha = 1 - confidence, family-wise.
        direction: ``maximize`` or ``minimize``.
        boundary: One of :data:`BOUNDARIES`.

    Raises:
        AblateError: a bad schedule, margin, confidence, direction or boundary, or bad runs.
    """
    schedule = looks(start, step, max_seeds)
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.5 < confidence < 1:
        raise AblateError(f"confidence: {confidence!r} is not allowed; expected a level in (0.5, 1) "
                          "such as 0.95")
    alpha = 1.0 - float(confidence)
    _check(margin, alpha, direction, boundary)
    require_frame(runs, "runs", ["arm", "seed", metric])
    items = [c if isinstance(c, Comparison) else Comparison(*c) for c in comparisons]
    if not items:
        raise AblateError("comparisons: none given; expected at least one Comparison")
    table = sequential_verdicts(compare(runs, metric, items, ci=confidence), start=start, step=step,
                                max_seeds=max_seeds, margin=margin, alpha=alpha, direction=direction,
                                boundary=boundary)
    arms = list(dict.fromkeys(a for c in items for a in (c.with_arm, c.without_arm)))
    seeds = numeric(runs, "seed")
    if seeds.isna().any() or (seeds < 0).any() or (seeds != np.floor(seeds)).any():
        raise AblateError("runs: column 'seed' must hold seed indices 0, 1, 2, ...; found "
                          f"{seeds[seeds.isna() | (seeds < 0) | (seeds != np.floor(seeds))].iloc[0]!r}")
    top = seeds[runs["arm"].isin(arms)].groupby(runs["arm"]).max() + 1

    def grid_at_least(count: float) -> int:
        return int(np.searchsorted(np.asarray(schedule), count, side="left").clip(0, len(schedule) - 1))

    look = grid_at_least(float(top.max()) if len(top) else 0.0)
    unresolved = table.loc[table["verdict"] == "unresolved", ["with_arm", "without_arm"]]
    wanting = set(unresolved["with_arm"]) | set(unresolved["without_arm"])
    upcoming = schedule[min(look + 1, len(schedule) - 1)]
    targets = {}
    for arm in arms:
        had = schedule[grid_at_least(float(top.get(arm, 0)))]
        targets[arm] = max(had, upcoming) if arm in wanting else had
    if unresolved.empty:
        done, reason = True, "every trick has a verdict"
    elif look == len(schedule) - 1:
        done, reason = True, f"max seeds reached ({max_seeds}); {len(unresolved)} of {len(table)} unresolved"
    else:
        done = False
        reason = (f"{len(unresolved)} of {len(table)} unresolved: {len(wanting)} arm(s) to "
                  f"{upcoming} seeds")
    return Round(targets=targets, table=table, done=done, reason=reason, look=look)
