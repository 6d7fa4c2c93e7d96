"""``ablate.analysis.verdicts``: helps, hurts, no effect (TOST within a margin) and unresolved.

Constructed tables check each rule and the seed estimate by hand; the simulations check the
error rates with known truth, every family of a cell in one stacked table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ablate.analysis import (
    Comparison,
    compare,
    default_margin,
    factorial_effects,
    holm,
    t_test,
    verdicts,
)
from ablate.analysis.verdicts import SEEDS_CAP
from ablate.errors import AblateError

PT = 0.01  # one percentage point of an accuracy in [0, 1]
MARGIN = 0.5 * PT
ALPHA = 0.05


def _runs(diffs: dict[str, list[float]], base: float = 0.9) -> pd.DataFrame:
    """A reference arm and one arm per trick whose paired differences are exactly ``diffs``."""
    n = len(next(iter(diffs.values())))
    rng = np.random.default_rng(0)
    ref = base + rng.normal(0, 0.01, n)
    rows = [{"arm": "reference", "seed": s, "best_val_acc": ref[s]} for s in range(n)]
    for arm, d in diffs.items():
        rows += [{"arm": arm, "seed": s, "best_val_acc": ref[s] + d[s]} for s in range(n)]
    return pd.DataFrame(rows)


def _compare(diffs: dict[str, list[float]]) -> pd.DataFrame:
    runs = _runs(diffs)
    return compare(runs, "best_val_acc", [Comparison(a, a, "reference") for a in diffs])


def test_constructed_help_hurt_equivalence_and_unresolved_with_its_seed_estimate():
    diffs = {
        "help": [2.1 * PT, 1.9 * PT, 2.0 * PT, 2.2 * PT, 1.8 * PT],
        "hurt": [-3.1 * PT, -2.9 * PT, -3.0 * PT, -3.2 * PT, -2.8 * PT],
        "same": [0.02 * PT, -0.03 * PT, 0.01 * PT, -0.02 * PT, 0.03 * PT],
        "noisy": [1.0 * PT, -0.5 * PT, 1.5 * PT, 0.2 * PT, 0.8 * PT],
    }
    out = verdicts(_compare(diffs), margin=MARGIN, alpha=ALPHA).set_index("label")
    assert out.loc["help", "verdict"] == "helps" and out.loc["help", "ci_low_adj"] > 0
    assert out.loc["hurt", "verdict"] == "hurts" and out.loc["hurt", "ci_high_adj"] < 0
    assert out.loc["same", "verdict"] == "no effect"
    assert out.loc["noisy", "verdict"] == "unresolved"
    assert out.loc[["help", "hurt", "same"], "seeds_needed"].isna().all()

    # the estimate by hand: the smallest N whose Bonferroni interval (alpha / 4) at the observed sd
    # excludes 0, or whose TOST interval fits in the margin, minus the 5 pairs there are
    d = np.array(diffs["noisy"])
    effect, sd, a = d.mean(), d.std(ddof=1), ALPHA / 4
    sig = [N for N in range(6, 200) if stats.t.isf(a / 2, N - 1) * sd / np.sqrt(N) < abs(effect)]
    eq = [N for N in range(6, 200) if abs(effect) + stats.t.isf(a, N - 1) * sd / np.sqrt(N) < MARGIN]
    assert out.loc["noisy", "seeds_needed"] == min(sig + eq) - 5 == 9
    assert out.loc["noisy", "sd"] == pytest.approx(sd)


def test_the_equivalence_is_bonferroni_over_the_family_and_needs_a_margin():
    same = [x * 2.5 * PT for x in (0.1, -0.2, 0.15, -0.05, 0.2, 0.0, -0.1, 0.05)]  # sd 0.33 pts
    alone = verdicts(_compare({"same": same}), margin=MARGIN)
    assert alone["verdict"].tolist() == ["no effect"]
    # the same row in a family of 20 is tested at alpha / 20: its interval no longer fits
    assert verdicts(_compare({"same": same}), margin=MARGIN, family_size=20)["verdict"].tolist() \
        == ["unresolved"]
    # no margin (a loss without one given): never "no effect", and the estimate aims at the sign
    loose = verdicts(_compare({"same": same}), margin=None)
    assert loose["verdict"].tolist() == ["unresolved"] and loose["seeds_needed"].iloc[0] > 0
    assert default_margin("val_acc") == default_margin("best_val_acc") == MARGIN
    assert default_margin("val_loss") is None


def test_a_minimised_metric_helps_when_it_goes_down():
    lower = [-0.21, -0.19, -0.2, -0.22, -0.18]
    table = _compare({"trick": lower})
    assert verdicts(table, margin=0.05, direction="minimize")["verdict"].tolist() == ["helps"]
    assert verdicts(table, margin=0.05, direction="maximize")["verdict"].tolist() == ["hurts"]


def test_edge_cases_one_pair_identical_differences_and_the_cap():
    one = verdicts(_compare({"x": [0.02]}), margin=MARGIN)
    assert one["verdict"].tolist() == ["unresolved"] and np.isnan(one["seeds_needed"].iloc[0])
    # 3 identical differences of +1 point: the sign-flip p is 2/2^3 = 0.25; 2/2^n < 0.05 from n = 6
    same = verdicts(_compare({"x": [PT, PT, PT]}), margin=MARGIN)
    assert same["sd"].iloc[0] == 0 and same["verdict"].tolist() == ["unresolved"]
    assert same["seeds_needed"].iloc[0] == 3
    assert verdicts(_compare({"x": [PT] * 6}), margin=MARGIN)["verdict"].tolist() == ["helps"]
    # an effect of 0.01 points at a spread of 5 points: beyond the cap
    far = [5 * PT, -5 * PT, 5.0001 * PT, -4.9999 * PT, 0.0]
    capped = verdicts(_compare({"x": far}), margin=None)
    assert capped["verdict"].tolist() == ["unresolved"] and capped["seeds_needed"].iloc[0] == np.inf
    assert SEEDS_CAP == 100


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"margin": 0.0}, "margin: 0.0 is not allowed"),
    ({"margin": -1.0}, "margin: -1.0 is not allowed"),
    ({"margin": MARGIN, "alpha": 0.5}, "alpha: 0.5 is not allowed"),
    ({"margin": MARGIN, "direction": "up"}, "direction: 'up' is not allowed"),
    ({"margin": MARGIN, "family_size": 0}, "family_size: 0 is not allowed"),
])
def test_bad_arguments_are_one_line(kwargs, message):
    with pytest.raises(AblateError, match=message) as err:
        verdicts(_compare({"x": [PT, 2 * PT, 3 * PT]}), **kwargs)
    assert "\n" not in str(err.value)
    with pytest.raises(AblateError, match="missing column"):
        verdicts(pd.DataFrame({"effect": [1.0]}), margin=MARGIN)


def test_factorial_terms_get_verdicts_from_their_own_t_test():
    rng = np.random.default_rng(4)
    cells = np.array([[a, b] for a in (False, True) for b in (False, True)])
    n_seeds = 6
    y = 0.8 + 0.04 * cells[:, 0] + rng.normal(0, 0.002, (n_seeds, 4))  # norm: +4 pts, dropout: none
    runs = pd.DataFrame({"seed": np.repeat(np.arange(n_seeds), 4), "best_val_acc": y.ravel(),
                         "norm": np.tile(cells[:, 0], n_seeds), "dropout": np.tile(cells[:, 1], n_seeds)})
    table = factorial_effects(runs, "best_val_acc", ["norm", "dropout"], method="t")
    out = verdicts(table, margin=MARGIN).set_index("term")
    assert out.loc["norm", "verdict"] == "helps" and out.loc["norm", "ci_low_adj"] > 0
    assert out.loc["dropout", "verdict"] == out.loc["norm:dropout", "verdict"] == "no effect"
    per_seed = y[:, [2, 3]].mean(1) - y[:, [0, 1]].mean(1)  # cell bit 0 = norm
    assert out.loc["norm", "sd"] == pytest.approx(per_seed.std(ddof=1))
    assert out.loc["norm", "p_holm"] == pytest.approx(min(1.0, 3 * stats.ttest_1samp(per_seed, 0).pvalue))


# --- simulations with known truth -----------------------------------------------------------------

DRAWS = 2000  # families per cell


def _simulate(truth_pts: list[float], n: int, sd_pts: float, seed: int) -> np.ndarray:
    """(DRAWS, rows) verdicts of families of paired differences ~ N(truth, sd), Holm per family."""
    rng = np.random.default_rng(seed)
    truth = np.asarray(truth_pts) * PT
    m = len(truth)
    d = truth[None, :, None] + rng.normal(0.0, sd_pts * PT, (DRAWS, m, n))
    p = t_test(list(d.reshape(-1, n))).reshape(DRAWS, m)
    table = pd.DataFrame({"effect": d.mean(axis=2).ravel(), "sd": d.std(axis=2, ddof=1).ravel(),
                          "p_holm": np.apply_along_axis(holm, 1, p).ravel(), "n_pairs": n})
    out = verdicts(table, margin=MARGIN, alpha=ALPHA, family_size=m)
    verdict: np.ndarray = out["verdict"].to_numpy().reshape(DRAWS, m)
    return verdict


# Monte Carlo slack: 3 binomial standard errors at 2000 draws and rate 0.05.
SLACK = 3 * np.sqrt(ALPHA * (1 - ALPHA) / DRAWS)


@pytest.mark.parametrize("n", [3, 5, 10])
def test_no_true_effect_rarely_gets_a_sign_and_a_true_margin_rarely_looks_equivalent(n):
    v = _simulate([0.0, 0.0, 0.0], n, 0.5, seed=n)
    assert np.mean(((v == "helps") | (v == "hurts")).any(axis=1)) <= ALPHA + SLACK
    v = _simulate([0.5, -0.5, 0.5], n, 0.5, seed=100 + n)
    assert np.mean((v == "no effect").any(axis=1)) <= ALPHA + SLACK


def test_an_effect_well_inside_the_margin_is_found_equivalent_at_ten_seeds():
    v = _simulate([0.0, 0.05, -0.05], 10, 0.3, seed=7)
    assert np.mean(v == "no effect") >= 0.9
    v = _simulate([0.0, 0.05, -0.05], 10, 0.5, seed=8)
    assert np.mean(v == "no effect") >= 0.4


def test_two_points_at_a_spread_of_half_a_point_helps_at_three_seeds():
    assert np.mean(_simulate([2.0], 3, 0.5, seed=9)[:, 0] == "helps") >= 0.85
    assert np.mean(_simulate([2.0, 0.0], 3, 0.5, seed=10)[:, 0] == "helps") >= 0.6
    assert np.mean(_simulate([2.0, 0.0, 0.0], 5, 0.5, seed=11)[:, 0] == "helps") >= 0.98
