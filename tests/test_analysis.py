from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from scipy import stats

from ablate.analysis import (
    Comparison,
    arm_summary,
    bootstrap_ci,
    check_single,
    compare,
    convergence,
    cost,
    epochs_to_target,
    expected_best,
    factorial_effects,
    holm,
    overfitting,
    param_importance,
    stability,
)
from ablate.errors import AblateError

BASE = 0.9


def _paired_runs(effects, n_seeds, *, rng, seed_sd=0.02, noise_sd=0.005, datasets=1):
    """Runs of ``reference`` plus one arm per true effect, ``datasets`` independent copies.

    Each (dataset, seed) draws one random effect shared by all its arms (a lucky seed is lucky
    in every arm) plus independent noise per run, so pairing by seed removes the seed variance.
    Arms of copy j are suffixed ``@j`` when there are several copies.
    """
    arms = ["reference", *effects]
    truth = np.array([0.0, *effects.values()])
    shared = rng.normal(0.0, seed_sd, (datasets, 1, n_seeds))
    y = BASE + truth[None, :, None] + shared + rng.normal(0.0, noise_sd, (datasets, len(arms), n_seeds))
    names = np.array([[a if datasets == 1 else f"{a}@{j}" for a in arms] for j in range(datasets)])
    return pd.DataFrame({
        "run_id": [f"r{i}" for i in range(y.size)],
        "arm": np.repeat(names.ravel(), n_seeds),
        "seed": np.tile(np.arange(n_seeds), datasets * len(arms)),
        "best_val_acc": y.ravel(),
    })


# ------------------------------------------------------------------------------- compare


def test_compare_recovers_signs_and_leaves_the_null_alone():
    effects = {"+a": 0.03, "+b": -0.02, "+c": 0.0, "+d": 0.01}
    runs = _paired_runs(effects, 20, rng=np.random.default_rng(0))
    out = compare(runs, "best_val_acc", [Comparison(k[1:], k, "reference") for k in effects])

    assert list(out.columns) == ["label", "with_arm", "without_arm", "n_pairs", "effect", "sd", "ci_low",
                                 "ci_high", "p_better", "p_value", "p_holm", "ci_low_adj", "ci_high_adj"]
    assert list(out["label"]) == ["a", "d", "c", "b"]  # sorted by effect, descending
    row = out.set_index("label")
    for label, true in (("a", 0.03), ("b", -0.02), ("d", 0.01)):
        assert np.sign(row.loc[label, "effect"]) == np.sign(true)
        assert np.sign(row.loc[label, "ci_low"]) == np.sign(row.loc[label, "ci_high"]) == np.sign(true)
        assert row.loc[label, "p_holm"] < 0.01
    assert row.loc["c", "ci_low"] < 0.0 < row.loc["c", "ci_high"]
    assert row.loc["c", "p_holm"] > 0.2
    assert (row["n_pairs"] == 20).all()
    assert row.loc["a", "p_better"] == 1.0 and row.loc["b", "p_better"] == 0.0


def test_compare_pairs_by_seed_and_matches_scipy_and_the_t_interval():
    runs = _paired_runs({"+x": 0.01}, 12, rng=np.random.default_rng(1))
    runs = runs[~((runs["arm"] == "+x") & (runs["seed"] == 7))]  # seed 7 only in reference
    runs.loc[(runs["arm"] == "reference") & (runs["seed"] == 3), "best_val_acc"] = np.nan  # diverged
    runs = runs.sample(frac=1.0, random_state=0)  # row order must not matter

    row = compare(runs, "best_val_acc", [("x", "+x", "reference")]).iloc[0]

    table = runs.pivot(index="seed", columns="arm", values="best_val_acc").dropna()
    d = (table["+x"] - table["reference"]).to_numpy()
    assert row["n_pairs"] == 10 == d.size
    assert row["effect"] == pytest.approx(d.mean())
    assert row["p_value"] == pytest.approx(stats.ttest_rel(table["+x"], table["reference"]).pvalue)
    half = stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    old = compare(runs, "best_val_acc", [("x", "+x", "reference")], method="expanded").iloc[0]
    assert (old["ci_low"], old["ci_high"]) == pytest.approx(bootstrap_ci(d, n_boot=5000, seed=0))


def test_p_better_counts_ties_as_half_and_zero_variance_p_values():
    seeds = np.arange(5)
    runs = pd.DataFrame({
        "arm": ["ref"] * 5 + ["mixed"] * 5 + ["shift"] * 5 + ["same"] * 5,
        "seed": np.tile(seeds, 4),
        "m": [0.5] * 5 + [0.6, 0.5, 0.5, 0.4, 0.7] + [0.75] * 5 + [0.5] * 5,
    })
    out = compare(runs, "m", [Comparison("mixed", "mixed", "ref"), Comparison("shift", "shift", "ref"),
                              Comparison("same", "same", "ref")]).set_index("label")
    assert out.loc["mixed", "p_better"] == pytest.approx((2 + 0.5 * 2) / 5)
    # every difference identical: t is undefined; the exact sign-flip test gives 2 / 2^5
    assert out.loc["shift", "p_value"] == pytest.approx(2 / 2**5) and out.loc["shift", "p_better"] == 1.0
    assert out.loc["same", "p_value"] == 1.0 and out.loc["same", "p_better"] == 0.5
    # and the interval is that test's inversion: unbounded while 2 / 2^n >= 0.05 (n <= 5) ...
    assert out.loc["shift", "ci_low"] == -np.inf and out.loc["shift", "ci_high"] == np.inf
    assert out.loc["same", "ci_low"] == -np.inf and out.loc["same", "ci_high"] == np.inf
    # ... and the point beyond; differences equal up to float noise count as equal
    six = pd.DataFrame({"arm": ["ref"] * 6 + ["up"] * 6, "seed": np.tile(np.arange(6), 2),
                        "m": [0.5, 0.75, 0.8, 0.55, 0.9, 0.6, 0.55, 0.8, 0.85, 0.6, 0.95, 0.65]})
    row = compare(six, "m", [Comparison("up", "up", "ref")]).iloc[0]
    assert row["p_value"] == pytest.approx(2 / 2**6) and row["ci_low"] == pytest.approx(0.05)
    assert row["ci_high"] == pytest.approx(0.05)


def test_compare_refuses_bad_input():
    runs = _paired_runs({"+x": 0.01}, 4, rng=np.random.default_rng(2))
    with pytest.raises(AblateError, match="'nope'"):
        compare(runs, "best_val_acc", [Comparison("x", "nope", "reference")])
    with pytest.raises(AblateError, match="not numeric"):
        compare(runs, "arm", [Comparison("x", "+x", "reference")])
    with pytest.raises(AblateError, match="several runs with seed"):
        compare(pd.concat([runs, runs.iloc[:1]]), "best_val_acc", [Comparison("x", "+x", "reference")])
    assert compare(runs, "best_val_acc", []).empty
    lost = runs.assign(best_val_acc=np.where(runs["arm"] == "+x", np.nan, runs["best_val_acc"]))
    row = compare(lost, "best_val_acc", [Comparison("x", "+x", "reference")]).iloc[0]
    assert row["n_pairs"] == 0 and np.isnan(row[["effect", "ci_low", "p_better", "p_value", "p_holm"]]
                                            .to_numpy(dtype=float)).all()


def test_compare_ci_covers_the_true_effect_about_95_percent():
    # 300 independent synthetic ablations of 10 seeds each, analysed in one vectorised call
    n_data, true = 300, 0.01
    runs = _paired_runs({"+x": true}, 10, rng=np.random.default_rng(3), noise_sd=0.01, datasets=n_data)
    comparisons = [Comparison(str(j), f"+x@{j}", f"reference@{j}") for j in range(n_data)]
    out = compare(runs, "best_val_acc", comparisons)
    covered = ((out["ci_low"] <= true) & (true <= out["ci_high"])).mean()
    assert 0.90 <= covered <= 0.99


def test_arm_summary_ci_covers_the_true_mean_about_95_percent():
    n_data = 300
    runs = _paired_runs({}, 10, rng=np.random.default_rng(4), noise_sd=0.01, datasets=n_data)
    out = arm_summary(runs, "best_val_acc")
    covered = ((out["ci_low"] <= BASE) & (out["ci_high"] >= BASE)).mean()
    assert 0.90 <= covered <= 0.99


# ------------------------------------------------------------------------------- holm


def test_holm_against_a_hand_computed_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    p = [0.01, 0.04, 0.03, 0.005, np.nan]
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02, np.nan])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1
    assert holm([]).shape == (0,)
    with pytest.raises(AblateError, match="pvalues"):
        holm([0.5, 1.5])


# ------------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_edge_cases():
    assert all(np.isnan(bootstrap_ci([])))
    assert all(np.isnan(bootstrap_ci([0.7])))
    assert all(np.isnan(bootstrap_ci([0.7, np.nan])))  # NaNs dropped before counting
    assert bootstrap_ci([0.8, 0.8, 0.8]) == (0.8, 0.8)
    x = np.random.default_rng(5).normal(size=30)
    assert bootstrap_ci(x, seed=1) == bootstrap_ci(x, seed=1)
    assert bootstrap_ci(x, seed=1) != bootstrap_ci(x, seed=2)
    assert bootstrap_ci(np.append(x, np.nan)) == bootstrap_ci(x)
    low, high = bootstrap_ci(x)
    assert low < x.mean() < high
    plain = bootstrap_ci(x, method="percentile")
    assert low < plain[0] < plain[1] < high  # the small-sample expansion only widens
    med_low, med_high = bootstrap_ci(x, statistic="median")
    assert med_low < np.median(x) < med_high
    with pytest.raises(AblateError, match="ci"):
        bootstrap_ci(x, ci=95)
    with pytest.raises(AblateError, match="statistic"):
        bootstrap_ci(x, statistic="mode")


def test_arm_summary_columns_and_order():
    runs = pd.DataFrame({"arm": ["b", "a", "b", "a", "b"], "m": [0.1, 0.5, 0.3, np.nan, 0.2]})
    out = arm_summary(runs, "m")
    assert list(out.index) == ["b", "a"] and out.index.name == "arm"
    assert list(out.columns) == ["n", "n_runs", "mean", "std", "median", "ci_low", "ci_high"]
    assert out.loc["b", "mean"] == pytest.approx(0.2) and out.loc["a", "n"] == 1
    assert out.loc["a", "n_runs"] == 2 and np.isnan(out.loc["a", "ci_low"])
    assert (out.loc["b", "ci_low"], out.loc["b", "ci_high"]) == bootstrap_ci([0.1, 0.3, 0.2])


# ------------------------------------------------------------------------------- curves


def _history():
    curves = {"a": [0.5, 0.7, 0.85, 0.8, 0.9], "b": [0.1, 0.2, 0.3], "c": [0.95, 0.96]}
    rows = [(run, "val_acc", step, v) for run, vs in curves.items() for step, v in enumerate(vs, 1)]
    rows += [(run, "train_loss", step, 1.0 / step) for run in curves for step in range(1, 4)]
    frame = pd.DataFrame(rows, columns=["run_id", "metric", "step", "value"])
    return frame.sample(frac=1.0, random_state=0)  # rows in no particular order


def test_epochs_to_target_on_a_scripted_curve():
    out = epochs_to_target(_history(), 0.85)
    assert out.name == "epochs_to_target"
    assert out.to_dict() == pytest.approx({"a": 3.0, "b": np.nan, "c": 1.0}, nan_ok=True)
    assert epochs_to_target(_history(), 0.4, metric="train_loss", maximize=False).to_dict() == {
        "a": 3.0, "b": 3.0, "c": 3.0}
    with pytest.raises(AblateError,
                       match="no 'val_accuracy' rows in history; metrics are train_loss, val_acc"):
        epochs_to_target(_history(), 0.85, metric="val_accuracy")


def test_convergence_counts_never_reached_runs():
    runs = pd.DataFrame({"run_id": ["a", "b", "c", "d"], "arm": ["x", "x", "y", "y"]})
    out = convergence(runs, _history(), 0.85)  # d has no curve: it never reached the target
    assert list(out.columns) == ["n_runs", "n_reached", "share_reached", "median_epochs", "mean_epochs"]
    assert out.loc["x", "share_reached"] == 0.5 and out.loc["x", "mean_epochs"] == 3.0
    assert np.isnan(out.loc["x", "median_epochs"])  # half the runs never got there
    runs3 = pd.DataFrame({"run_id": ["a", "c", "b"], "arm": ["z", "z", "z"]})
    assert convergence(runs3, _history(), 0.85).loc["z", "median_epochs"] == 3.0  # of 1, 3, never


def test_stability_cost_overfitting():
    runs = pd.DataFrame({
        "arm": ["r", "r", "r", "-n"], "stop_reason": ["completed", "diverged", "early_stopped", "diverged"],
        "train_time": [10.0, 20.0, np.nan, 5.0], "epochs_run": [10, 4, 8, 2],
        "train_acc": [0.99, 0.95, 0.97, np.nan], "val_acc": [0.9, 0.9, 0.92, 0.1],
    })
    st = stability(runs)
    assert st.loc["r"].tolist() == pytest.approx([3, 1, 1 / 3]) and st.loc["-n", "share_diverged"] == 1.0
    co = cost(runs)
    assert co.loc["r", "mean_train_time"] == 15.0 and co.loc["r", "mean_epochs_run"] == pytest.approx(22 / 3)
    ov = overfitting(runs)
    assert list(ov.columns) == ["n", "mean_gap", "ci_low", "ci_high"]
    assert ov.loc["r", "mean_gap"] == pytest.approx(np.mean([0.09, 0.05, 0.05]))
    assert ov.loc["-n", "n"] == 0


# ------------------------------------------------------------------------------- factorial


def _factorial_runs(rng, n_seeds=20):
    names = ["norm", "dropout", "aug"]
    cells = np.array(list(itertools.product([False, True], repeat=3)))  # (8, 3)
    x = np.where(cells, 1.0, -1.0)
    # effects in the +-1 coding are half the "on minus off" effects
    y_cell = BASE + 0.04 / 2 * x[:, 0] - 0.02 / 2 * x[:, 1] + 0.015 / 2 * x[:, 0] * x[:, 1]
    y = y_cell[None, :] + rng.normal(0, 0.02, (n_seeds, 1)) + rng.normal(0, 0.004, (n_seeds, 8))
    runs = pd.DataFrame({"seed": np.repeat(np.arange(n_seeds), 8), "best_val_acc": y.ravel()})
    for i, name in enumerate(names):
        runs[name] = np.tile(cells[:, i], n_seeds)
    return runs


def test_factorial_effects_recovers_planted_terms():
    runs = _factorial_runs(np.random.default_rng(6))
    out = factorial_effects(runs, "best_val_acc", ["norm", "dropout", "aug"])
    assert list(out.columns) == ["term", "kind", "effect", "ci_low", "ci_high", "n_seeds", "sd", "p_holm",
                                 "ci_low_adj", "ci_high_adj"]
    assert list(out["term"][:3]) == ["norm", "dropout", "norm:dropout"]  # by |effect|
    row = out.set_index("term")
    assert row.loc["norm", "kind"] == "main" and row.loc["norm:dropout:aug", "kind"] == "interaction"
    for term, true in (("norm", 0.04), ("dropout", -0.02), ("norm:dropout", 0.015)):
        assert row.loc[term, "ci_low"] * true > 0 and row.loc[term, "ci_high"] * true > 0
        assert row.loc[term, "effect"] == pytest.approx(true, abs=0.003)
    for term in ("aug", "norm:aug", "dropout:aug", "norm:dropout:aug"):
        assert abs(row.loc[term, "effect"]) < 0.003
    assert (row["n_seeds"] == 20).all()

    # the documented formula: sum(y * contrast) / (N / 2) over the balanced data
    sign = {f: np.where(runs[f], 1.0, -1.0) for f in ("norm", "dropout")}
    pooled = (runs["best_val_acc"] * sign["norm"] * sign["dropout"]).sum() / (len(runs) / 2)
    assert row.loc["norm:dropout", "effect"] == pytest.approx(pooled)
    main = runs.groupby("norm")["best_val_acc"].mean()
    assert row.loc["norm", "effect"] == pytest.approx(main[True] - main[False])


def test_factorial_effects_skips_incomplete_seeds_and_refuses_non_boolean():
    runs = _factorial_runs(np.random.default_rng(7), n_seeds=5)
    runs = runs.drop(index=3)  # one of the 8 cells of seed 0 lost
    out = factorial_effects(runs, "best_val_acc", ["norm", "dropout", "aug"], max_order=1)
    assert set(out["term"]) == {"norm", "dropout", "aug"} and (out["n_seeds"] == 4).all()
    # with two factors, seed 0 still has all four cells (aug=False rows)
    assert (factorial_effects(runs, "best_val_acc", ["norm", "dropout"])["n_seeds"] == 5).all()
    with pytest.raises(AblateError, match="'best_val_acc' must hold True/False"):
        factorial_effects(runs, "best_val_acc", ["best_val_acc"])


# ------------------------------------------------------------------------------- expected best


def test_expected_best_shape_mean_and_limit():
    v = np.random.default_rng(8).normal(0.8, 0.05, 10)
    curve = expected_best(np.append(v, np.nan), n_max=300)
    assert curve.shape == (300,)
    assert curve[0] == pytest.approx(v.mean())
    assert np.all(np.diff(curve) >= -1e-12)
    assert curve[-1] == pytest.approx(v.max(), abs=1e-9)
    assert len(expected_best(v)) == 10
    np.testing.assert_allclose(expected_best(v, maximize=False), -expected_best(-v))
    assert expected_best(v, maximize=False)[0] == pytest.approx(v.mean())


def test_expected_best_against_brute_force():
    v = np.array([0.3, 0.7, 0.7, 0.1])
    exact = [np.mean([max(draw) for draw in itertools.product(v, repeat=n)]) for n in range(1, 5)]
    np.testing.assert_allclose(expected_best(v), exact)

    w = np.array([0.61, 0.72, 0.55, 0.9, 0.68, 0.8])
    draws = np.random.default_rng(9).choice(w, size=(200_000, 6))
    monte_carlo = np.maximum.accumulate(draws, axis=1).mean(axis=0)
    np.testing.assert_allclose(expected_best(w), monte_carlo, atol=2e-3)


# ------------------------------------------------------------------------------- sweeps, guards


def _trials(n, rng):
    x, z = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    opt = rng.choice(["sgd", "adam"], n)
    trials = pd.DataFrame({"lr": x, "noise": z, "optimizer": opt,
                           "val_acc": 0.5 + 0.4 * x + rng.normal(0, 0.02, n)})
    dists = {"lr": FloatDistribution(0, 1), "noise": FloatDistribution(0, 1),
             "optimizer": CategoricalDistribution(["sgd", "adam"])}
    return trials, dists


def test_param_importance_ranks_the_driving_parameter_first():
    trials, dists = _trials(60, np.random.default_rng(10))
    trials.loc[5, "val_acc"] = np.nan  # a diverged trial is skipped
    out = param_importance(trials, dists, "val_acc")
    assert list(out.columns) == ["param", "fanova", "ped_anova"]
    assert out["param"].iloc[0] == "lr"
    imp = out.set_index("param")
    assert imp.loc["lr", "fanova"] > imp.loc["noise", "fanova"]
    assert np.isfinite(imp["ped_anova"]).all()  # 59 trials: 6 in PED-ANOVA's top 10 %

    few = param_importance(*_trials(20, np.random.default_rng(11)), "val_acc")
    assert few["ped_anova"].isna().all() and few["param"].iloc[0] == "lr"
    with pytest.raises(AblateError, match="trials"):
        param_importance(trials.assign(lr=2.0), dists, "val_acc")


def test_check_single():
    runs = pd.DataFrame({"dataset": ["digits", "mnist1d", "digits", None], "metric": ["acc"] * 4})
    assert check_single(runs, "metric") == "acc"
    assert check_single(runs.assign(x=None), "x") is None
    with pytest.raises(AblateError) as error:
        check_single(runs, "dataset")
    assert str(error.value) == ("runs: mixed dataset (digits, mnist1d) in one table; "
                                "select runs of one dataset")
    with pytest.raises(AblateError, match="missing column"):
        check_single(runs, "seed")


def test_ten_thousand_runs_twenty_arms_run_quickly():
    rng = np.random.default_rng(12)
    arms = ["reference", *(f"-t{i}" for i in range(19))]
    runs = _paired_runs({a: rng.normal(0, 0.01) for a in arms[1:]}, 500, rng=rng)
    runs.loc[rng.random(len(runs)) < 0.05, "best_val_acc"] = np.nan
    assert len(runs) == 10_000
    summary = arm_summary(runs, "best_val_acc")
    effects = compare(runs, "best_val_acc", [Comparison(a, a, "reference") for a in arms[1:]])
    assert len(summary) == 20 and len(effects) == 19 and effects["ci_low"].notna().all()
