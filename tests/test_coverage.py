"""The paired intervals mean what they say: coverage at 2-30 pairs, agreement with the p-values.

The synthetic studies are those of ``benchmarks/bench_coverage.py`` (a shared seed offset plus
per-run noise: normal, Student t(3), accuracies in steps of 1/360), every draw of a cell in one
array.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ablate.analysis import Comparison, compare, holm, holm_intervals, t_interval, t_test

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_coverage.py"
_SPEC = importlib.util.spec_from_file_location("bench_coverage", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
bench = importlib.util.module_from_spec(_SPEC)
sys.modules["bench_coverage"] = bench
_SPEC.loader.exec_module(bench)

DRAWS = 300  # studies per cell, 4 intervals each
ALPHA = 0.05


def _excludes_zero(low, high):
    return (np.asarray(low) > 0) | (np.asarray(high) < 0)


@pytest.mark.parametrize("noise", bench.NOISES)
def test_t_interval_covers_at_every_n_and_noise(noise):
    for n in bench.SIZES:
        covered, ties = bench.coverage("t", noise, n, DRAWS)
        assert covered >= 0.93, f"{noise}, n={n}: coverage {covered:.3f} (ties {ties:.3f})"


def test_the_discrete_cells_do_hold_identical_differences():
    # the rounded cell is the one where the zero-variance rule matters: it must be exercised
    _, ties = bench.coverage("t", "rounded", 2, DRAWS)
    assert ties > 0.1


def test_the_old_expanded_bootstrap_undercovers_at_three_pairs():
    # why the default changed: resampling 3 pairs sees at most 3 distinct values, so even the
    # widened percentile levels cannot reach the t quantile's width (about 75 % for "95 %")
    for noise in ("normal", "binomial"):
        covered, _ = bench.coverage("expanded", noise, 3, DRAWS)
        assert covered < 0.85
        assert bench.coverage("t", noise, 3, DRAWS)[0] >= 0.93


def _random_groups(rng, k):
    """k groups of paired differences, 2-8 values each, continuous or in steps (many ties)."""
    groups = []
    for i in range(k):
        n = int(rng.integers(2, 9))
        effect = rng.choice([0.0, 0.003, 0.01, 0.03, -0.02])
        if i % 2:
            d = effect + rng.normal(0.0, 0.01, n)
        else:
            d = np.round((effect + rng.normal(0.0, 0.004, n)) * 360) / 360
        groups.append(d)
    return groups


def test_t_interval_excludes_zero_exactly_when_the_t_test_rejects():
    rng = np.random.default_rng(7)
    groups = _random_groups(rng, 4000)
    p = t_test(groups)
    for alpha in (0.05, 0.01, 0.2):
        low, high = t_interval(groups, alpha)
        np.testing.assert_array_equal(_excludes_zero(low, high), p < alpha)
    constant = np.array([np.ptp(g) == 0 for g in groups])
    assert constant.sum() > 50  # the sign-flip branch is tested too


def test_compare_ci_and_p_value_agree_on_many_tables():
    rng = np.random.default_rng(8)
    rows = []
    for j in range(200):
        n = int(rng.integers(2, 9))
        ref = 0.9 + rng.normal(0.0, 0.01, n)
        step = j % 2 == 0
        for arm, effect in (("ref", 0.0), ("a", 0.01), ("b", 0.0), ("c", -0.004)):
            y = ref + effect + rng.normal(0.0, 0.003 if step else 0.008, n)
            y = np.round(y * 360) / 360 if step else y
            rows += [{"arm": f"{arm}@{j}", "seed": s, "m": v} for s, v in enumerate(y)]
    runs = pd.DataFrame(rows)
    comparisons = [Comparison(f"{a}@{j}", f"{a}@{j}", f"ref@{j}") for j in range(200) for a in "abc"]
    out = compare(runs, "m", comparisons)
    np.testing.assert_array_equal(_excludes_zero(out["ci_low"], out["ci_high"]), out["p_value"] < ALPHA)


def test_holm_intervals_exclude_zero_exactly_when_holm_rejects():
    rng = np.random.default_rng(9)
    families = 0
    for _ in range(1500):
        m = int(rng.integers(1, 9))
        groups = _random_groups(rng, m)
        if rng.random() < 0.2:
            groups.append(np.array([0.01]))  # a row with one pair: NaN, not in the family
        p_holm = holm(t_test(groups))
        low, high = holm_intervals(groups, p_holm, ALPHA)
        ok = ~np.isnan(p_holm)
        assert np.isnan(low[~ok]).all() and np.isnan(high[~ok]).all()
        np.testing.assert_array_equal(_excludes_zero(low[ok], high[ok]), p_holm[ok] < ALPHA)
        families += bool((p_holm[ok] < ALPHA).any() and (p_holm[ok] >= ALPHA).any())
    assert families > 100  # the mixed case (some rejected, some not) is exercised


def test_compare_adjusted_columns_agree_with_p_holm():
    rng = np.random.default_rng(10)
    effects = {"+a": 0.03, "+b": 0.004, "+c": 0.0, "+d": -0.01}
    for n in (3, 5, 10):
        for _ in range(20):
            y = {"reference": 0.9 + rng.normal(0.0, 0.01, n)}
            y.update({k: y["reference"] + v + rng.normal(0.0, 0.005, n) for k, v in effects.items()})
            runs = pd.DataFrame([{"arm": a, "seed": s, "m": v}
                                 for a, ys in y.items() for s, v in enumerate(ys)])
            out = compare(runs, "m", [Comparison(k, k, "reference") for k in effects])
            np.testing.assert_array_equal(_excludes_zero(out["ci_low_adj"], out["ci_high_adj"]),
                                          out["p_holm"] < ALPHA)
            # simultaneous intervals are never narrower than the plain ones where they are finite
            finite = np.isfinite(out["ci_low_adj"]) & (out["ci_low_adj"] != 0) & (out["p_holm"] >= ALPHA)
            assert (out.loc[finite, "ci_low_adj"] <= out.loc[finite, "ci_low"]).all()


@pytest.mark.parametrize("truth", [(0.0, 0.0, 0.0, 0.0), (0.02, 0.005, 0.0, -0.01), (0.03, 0.03, 0.03, 0.03)])
def test_holm_intervals_cover_the_whole_family(truth):
    rng = np.random.default_rng(11)
    n, draws = 5, 600
    d = np.asarray(truth)[None, :, None] + rng.normal(0.0, 0.01, (n, len(truth), draws))
    covered = 0
    for j in range(draws):
        groups = [d[:, i, j] for i in range(len(truth))]
        low, high = holm_intervals(groups, holm(t_test(groups)), ALPHA)
        covered += bool(np.all((low <= truth) & (np.asarray(truth) <= high)
                               & ~((np.asarray(truth) == 0) & _excludes_zero(low, high))))
    assert covered / draws >= 0.93
