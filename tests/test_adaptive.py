"""``ablate.analysis.adaptive``: the adaptive-seeds rule and its verdicts under optional stopping.

The simulations use ``benchmarks/bench_adaptive.py``'s vectorised study (every study of a cell
in one array); a test below checks that it takes the same rounds and reaches the same verdicts
as :func:`next_round` driven round by round through runs tables.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ablate.analysis import (
    Comparison,
    compare,
    look_levels,
    looks,
    next_round,
    sequential_verdicts,
    verdicts,
)
from ablate.errors import AblateError

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_adaptive.py"
_SPEC = importlib.util.spec_from_file_location("bench_adaptive", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
bench = importlib.util.module_from_spec(_SPEC)
sys.modules["bench_adaptive"] = bench
_SPEC.loader.exec_module(bench)

PT = 0.01
MARGIN = 0.5 * PT
ALPHA = 0.05
DRAWS = 300  # studies per cell
SLACK = 0.03  # about 2.4 binomial standard errors of a 5 % rate over 300 studies
SCHEDULE = {"step": 2, "max_seeds": 30}
FAMILY = np.array([2.0, 0.5, 0.0, -1.0]) * PT  # as benchmarks/bench_coverage.py
FAMILY_SD = np.full(4, 0.7) * PT


def _runs(y: np.ndarray, n_by_arm: dict[str, int], arms: list[str]) -> pd.DataFrame:
    """The runs table of one simulated study (y: seeds x arms) with the first n seeds of each arm."""
    return pd.DataFrame([{"arm": arm, "seed": s, "acc": y[s, j]}
                         for j, arm in enumerate(arms) for s in range(n_by_arm[arm])])


def _arms(tricks: int) -> tuple[list[str], list[Comparison]]:
    arms = ["reference", *[f"-t{i}" for i in range(tricks)]]
    return arms, [Comparison(f"t{i}", "reference", f"-t{i}") for i in range(tricks)]


def _drive(y: np.ndarray, start: int, **kwargs) -> list:
    """next_round round by round on one study, the supervisor's loop: the Rounds in order."""
    arms, comparisons = _arms(y.shape[1] - 1)
    have = dict.fromkeys(arms, start)
    rounds = []
    while True:
        r = next_round(_runs(y, have, arms), "acc", comparisons, start=start, margin=MARGIN, **kwargs)
        rounds.append(r)
        if r.done:
            return rounds
        have = dict(r.targets)


# --- validity under optional stopping ---------------------------------------------------------------


@pytest.mark.parametrize("start", [2, 3])
@pytest.mark.parametrize("noise", bench.NOISES)
def test_final_intervals_cover_and_null_rows_stay_quiet_under_the_adaptive_rule(start, noise):
    rng = np.random.default_rng(100 + start)
    y = bench.draw_runs(noise, DRAWS, 30, rng, effects=FAMILY, sds=FAMILY_SD)
    out = bench.adaptive(y, start=start, boundary="wang-tsiatis", effects=FAMILY, **SCHEDULE)
    e = bench.errors(out, effects=FAMILY)
    assert e["coverage"] >= 0.93, e
    assert e["family"] >= 0.93, e
    assert e["fwer_sign"] <= ALPHA + SLACK, e
    assert e["share"] > 0.75, e  # the rule does resolve most rows: the figures are not vacuous

    nulls = np.zeros(4)
    y0 = bench.draw_runs(noise, DRAWS, 30, rng, effects=nulls, sds=FAMILY_SD)
    e0 = bench.errors(bench.adaptive(y0, start=start, boundary="wang-tsiatis", effects=nulls, **SCHEDULE),
                      effects=nulls)
    assert e0["fwer_sign"] <= ALPHA + SLACK, e0
    assert e0["coverage"] >= 0.93 and e0["family"] >= 0.93, e0


@pytest.mark.parametrize("noise", bench.NOISES)
def test_no_false_no_effect_at_the_margin(noise):
    edge = np.array([1.0, -1.0, 1.0, -1.0]) * MARGIN
    y = bench.draw_runs(noise, DRAWS, 30, np.random.default_rng(7), effects=edge, sds=np.full(4, 0.4 * PT))
    e = bench.errors(bench.adaptive(y, start=3, boundary="wang-tsiatis", effects=edge, **SCHEDULE),
                     effects=edge)
    assert e["fwer_same"] <= ALPHA + SLACK, e
    assert e["coverage"] >= 0.93, e


def test_without_the_correction_the_null_rows_speak_too_often():
    # why a correction: the fixed-design rule at every look ("none") calls null rows helps/hurts
    # well above alpha, and the corrected rule on the same runs does not
    nulls = np.zeros(4)
    y = bench.draw_runs("normal", DRAWS, 30, np.random.default_rng(8), effects=nulls, sds=FAMILY_SD)
    naive = bench.errors(bench.adaptive(y, start=3, boundary="none", effects=nulls, **SCHEDULE),
                         effects=nulls)
    fixed = bench.errors(bench.adaptive(y, start=3, boundary="wang-tsiatis", effects=nulls, **SCHEDULE),
                         effects=nulls)
    assert naive["fwer_sign"] > 2 * ALPHA
    assert fixed["fwer_sign"] <= ALPHA + SLACK


def test_the_simulation_takes_the_rounds_next_round_takes():
    y = bench.draw_runs("rounded", 12, 30, np.random.default_rng(9), effects=FAMILY, sds=FAMILY_SD)
    sim = bench.adaptive(y, start=3, boundary="wang-tsiatis", effects=FAMILY, **SCHEDULE)
    for j in range(len(y)):
        last = _drive(y[j], 3, **SCHEDULE)[-1]
        table = last.table.set_index("label").loc[[f"t{i}" for i in range(4)]]
        assert table["verdict"].tolist() == sim.table["verdict"][j].tolist()
        np.testing.assert_array_equal(table["n_pairs"].to_numpy(), sim.n[j])
        np.testing.assert_allclose(table["ci_low"].to_numpy(), sim.table["ci_low"][j], rtol=1e-9)
        assert sum(last.targets.values()) == sim.runs[j]


# --- the rule ---------------------------------------------------------------------------------------


def _study(seed: int = 3) -> np.ndarray:
    """One study: a clear trick, a small one, a null one (seeds x arms, 30 seeds)."""
    effects, sds = np.array([2.0, 0.6, 0.0]) * PT, np.array([0.3, 0.6, 0.6]) * PT
    return bench.draw_runs("normal", 1, 30, np.random.default_rng(seed), effects=effects, sds=sds)[0]


def test_targets_only_grow_and_the_shared_reference_gets_the_largest_need():
    rounds = _drive(_study(), 3, **SCHEDULE)
    assert len(rounds) > 2
    for before, after in itertools.pairwise(rounds):
        assert all(after.targets[a] >= before.targets[a] for a in before.targets)
    for r in rounds[:-1]:
        unresolved = r.table.loc[r.table["verdict"] == "unresolved", "without_arm"]
        assert r.targets["reference"] == max(r.targets.values())
        assert r.targets["reference"] == max(r.targets[a] for a in unresolved)
        grid = looks(3, **SCHEDULE)
        assert r.targets["reference"] == grid[r.look + 1]
    # the clear trick stops early while the others go on: its arm keeps its seeds
    first = rounds[0].table.set_index("label")
    later = rounds[-1].table.set_index("label")
    assert rounds[-1].targets["-t0"] < rounds[-1].targets["reference"]
    assert later.loc["t0", "n_pairs"] == rounds[-1].targets["-t0"] <= first.loc["t0", "n_pairs"] + 4


def test_a_study_whose_comparisons_are_all_clear_stops_after_the_first_round():
    rng = np.random.default_rng(1)
    ref = 0.9 + rng.normal(0, 0.01, 3)
    y = np.column_stack([ref, ref - 0.03 + rng.normal(0, 3e-5, 3), ref + 0.03 + rng.normal(0, 3e-5, 3),
                         ref + rng.normal(0, 1e-5, 3)])
    arms, comparisons = _arms(3)
    r = next_round(_runs(y, dict.fromkeys(arms, 3), arms), "acc", comparisons, start=3, margin=MARGIN,
                   **SCHEDULE)
    assert r.done and r.reason == "every trick has a verdict" and r.look == 0
    expected = {"t0": "helps", "t1": "hurts", "t2": "no effect"}
    assert r.table.set_index("label")["verdict"].to_dict() == expected
    assert r.targets == dict.fromkeys(arms, 3)


def test_the_max_ends_the_study_with_its_reason():
    y = _study(4)
    y[:, 3] = y[:, 0] + np.random.default_rng(0).normal(0.0, 0.05, 30)  # a trick too noisy to resolve
    rounds = _drive(y, 3, step=2, max_seeds=9)
    last = rounds[-1]
    assert last.done and last.reason.startswith("max seeds reached (9)")
    assert [r.done for r in rounds] == [False] * (len(rounds) - 1) + [True]
    assert last.targets["reference"] == last.targets["-t2"] == 9
    assert (last.table["verdict"] == "unresolved").any()


def test_the_round_depends_on_the_runs_only():
    y = _study(5)
    arms, comparisons = _arms(3)
    runs = _runs(y, {"reference": 7, "-t0": 3, "-t1": 7, "-t2": 7}, arms)
    a = next_round(runs, "acc", comparisons, start=3, margin=MARGIN, **SCHEDULE)
    b = next_round(runs.sample(frac=1.0, random_state=1).reset_index(drop=True), "acc", comparisons, start=3,
                   margin=MARGIN, **SCHEDULE)
    assert a.targets == b.targets and a.done == b.done and a.reason == b.reason and a.look == b.look == 2
    pd.testing.assert_frame_equal(a.table, b.table)


def test_missing_and_failed_runs_count_only_pairs_both_arms_have():
    y = _study(6)
    arms, comparisons = _arms(3)
    runs = _runs(y, dict.fromkeys(arms, 5), arms)
    runs.loc[(runs["arm"] == "-t1") & (runs["seed"] == 4), "acc"] = np.nan  # failed, still listed
    runs = runs[~((runs["arm"] == "reference") & (runs["seed"] == 1))]  # lost entirely
    r = next_round(runs, "acc", comparisons, start=3, margin=MARGIN, **SCHEDULE)
    n = r.table.set_index("label")["n_pairs"]
    assert n.to_dict() == {"t0": 4, "t1": 3, "t2": 4}
    assert r.look == 1  # seeds up to 4 were run: the look at 5 seeds
    assert all(t >= 5 for t in r.targets.values())
    assert (r.table["look"] == 0).all()  # 3-4 pairs: the look at 3 seeds


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"step": 0}, r"seeds.step: 0 is not allowed; expected an integer >= 1"),
    ({"max_seeds": 2}, r"seeds.max: 2 is not allowed; expected an integer >= seeds.start \(3\)"),
    ({"start": 1}, r"seeds.start: 1 is not allowed; expected an integer >= 2"),
    ({"direction": "up"}, r"direction: 'up' is not allowed; expected one of: maximize, minimize"),
    ({"confidence": 1.5}, r"confidence: 1.5 is not allowed"),
    ({"boundary": "spending"}, r"boundary: 'spending' is not allowed; expected one of: bonferroni"),
    ({"margin": -0.1}, r"margin: -0.1 is not allowed"),
])
def test_bad_arguments_are_one_line(kwargs, message):
    arms, comparisons = _arms(2)
    runs = _runs(_study()[:, :3], dict.fromkeys(arms, 3), arms)
    args = {"start": 3, "step": 2, "max_seeds": 30, "margin": MARGIN} | kwargs
    with pytest.raises(AblateError, match=message) as err:
        next_round(runs, "acc", comparisons, **args)
    assert "\n" not in str(err.value)


# --- agreement with the fixed design and with itself -----------------------------------------------


def _tables(rng: np.random.Generator, count: int, n_max: int = 12) -> list[pd.DataFrame]:
    out = []
    for _ in range(count):
        n = int(rng.integers(2, n_max))
        y = {"reference": 0.9 + rng.normal(0.0, 0.01, n)}
        for arm, effect in (("-a", 0.02), ("-b", 0.003), ("-c", 0.0)):
            v = y["reference"] - effect + rng.normal(0.0, 0.004, n)
            y[arm] = np.round(v * 360) / 360 if rng.random() < 0.3 else v
        runs = pd.DataFrame([{"arm": a, "seed": s, "acc": v}
                             for a, ys in y.items() for s, v in enumerate(ys)])
        out.append(compare(runs, "acc", [Comparison(a[1:], "reference", a) for a in ("-a", "-b", "-c")]))
    return out


def test_one_look_is_the_fixed_design():
    for table in _tables(np.random.default_rng(11), 60):
        n = int(table["n_pairs"].max())
        fixed = verdicts(table, margin=MARGIN)
        seq = sequential_verdicts(table, start=n, step=1, max_seeds=n, margin=MARGIN)
        assert seq["verdict"].tolist() == fixed["verdict"].tolist()
        for column in ("p_holm", "ci_low", "ci_high", "ci_low_adj", "ci_high_adj"):
            np.testing.assert_allclose(seq[column], fixed[column], rtol=1e-6, atol=1e-12, err_msg=column)


@pytest.mark.parametrize("boundary", ["bonferroni", "pocock", "wang-tsiatis", "obrien-fleming"])
def test_intervals_exclude_zero_exactly_when_the_sequential_tests_reject(boundary):
    verdict_tables = [sequential_verdicts(t, start=2, boundary=boundary, margin=MARGIN, **SCHEDULE)
                      for t in _tables(np.random.default_rng(12), 200, n_max=30)]
    out = pd.concat(verdict_tables)
    plain = (out["ci_low"] > 0) | (out["ci_high"] < 0)
    np.testing.assert_array_equal(plain, out["p_seq"] < ALPHA)
    adjusted = (out["ci_low_adj"] > 0) | (out["ci_high_adj"] < 0)
    np.testing.assert_array_equal(adjusted, out["p_holm"] < ALPHA)
    assert 20 < (out["p_holm"] < ALPHA).sum() < len(out) - 20  # both sides exercised


def test_later_looks_are_looser_and_every_level_is_below_the_fixed_one():
    for boundary in ("pocock", "wang-tsiatis", "obrien-fleming"):
        levels = look_levels(ALPHA, start=3, boundary=boundary, **SCHEDULE).to_numpy()
        assert (np.diff(levels) >= -1e-15).all() and levels.max() < ALPHA
    bonferroni = look_levels(ALPHA, start=3, boundary="bonferroni", **SCHEDULE)
    assert bonferroni.index.tolist() == [3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 30]
    np.testing.assert_allclose(bonferroni.to_numpy(), ALPHA / 15)


def test_a_trick_open_at_max_reads_what_a_longer_schedule_would_need_not_over_100():
    # At the schedule's last look no later look was left to resolve it, so every trick open at max
    # read "> 100 more seeds per arm", even one a few more rounds would resolve (the demo's report).
    from scipy import stats

    effect, sd, n = 0.45, 0.9, 12
    p = 2 * stats.t.sf(effect / (sd / np.sqrt(n)), n - 1)
    table = pd.DataFrame({"effect": [effect], "sd": [sd], "n_pairs": [n], "p_value": [p]})
    at_max = sequential_verdicts(table, start=3, step=3, max_seeds=12, margin=0.5)
    assert at_max["look"].iloc[0] == 3 and at_max["verdict"].iloc[0] == "unresolved"
    needed = at_max["seeds_needed"].iloc[0]
    assert np.isfinite(needed) and needed % 3 == 0 and 3 <= needed <= 30
    # the same estimate as a schedule that goes on: its looks at max + 3, + 6, ... at the last level
    longer = sequential_verdicts(table, start=3, step=3, max_seeds=12 + int(needed), margin=0.5)
    assert longer["verdict"].iloc[0] == "unresolved" and np.isfinite(longer["seeds_needed"].iloc[0])
    # a difference the margin can never settle stays past the cap
    flat = table.assign(effect=0.5, sd=40.0, p_value=2 * stats.t.sf(0.5 / (40.0 / np.sqrt(n)), n - 1))
    far = sequential_verdicts(flat, start=3, step=3, max_seeds=12, margin=0.5)
    assert far["verdict"].iloc[0] == "unresolved" and np.isinf(far["seeds_needed"].iloc[0])
