"""Adaptive seeds vs fixed seeds on synthetic leave-one-out studies shaped like ``ablation_digits``.

Each draw is one study: a reference arm and one ``-trick`` arm per trick (10 arms), the
contrast of a trick is reference minus ``-trick``, paired by seed. Per seed an offset (sd 1
point) shared by every arm, plus per-run noise whose sd makes each trick's paired-difference sd
the one in :data:`TRICKS` (0.18-1.17 points, as in ``reports/ablation_digits``): the reference
arm's noise is :data:`REF_SD`, the ``-trick`` arm's the rest. Noises: ``normal``, ``t3``
(Student t(3) scaled to the same sd) and ``rounded`` (normal, then accuracies in steps of 1/360).

The adaptive study runs ``start`` seeds in every arm, then ``step`` more in the arms of
unresolved tricks (the reference arm while any is unresolved), verdicts from
:func:`ablate.analysis.adaptive.decide` (what :func:`~ablate.analysis.adaptive.next_round`
returns, checked equal in ``tests/test_adaptive.py``). The fixed study runs N seeds in every arm
and is judged once by the fixed-design rule (one look). ``none`` = the fixed-design rule applied
at every adaptive look (no correction).

    .venv/bin/python benchmarks/bench_adaptive.py                      # 1000 studies a cell
    .venv/bin/python benchmarks/bench_adaptive.py --draws 300 --noises normal --boundaries wang-tsiatis
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ablate.analysis.adaptive import BOUNDARIES, decide, looks

PT = 0.01
TRICKS = {  # label: (true effect of reference minus -trick, paired-difference sd), points
    "optimizer=adam": (2.1, 0.6),
    "clip=norm": (0.6, 0.18),
    "data.scaling=standard": (0.5, 0.5),
    "norm=batch": (0.0, 0.5),
    "weight_decay=0.0001": (0.0, 0.18),
    "dropout=0.1": (-0.1, 0.3),
    "schedule=cosine": (-0.5, 0.2),
    "averaging=ema": (-0.9, 0.25),
    "init=kaiming": (-2.1, 1.17),
}
EFFECTS = np.array([v[0] for v in TRICKS.values()]) * PT
SDS = np.array([v[1] for v in TRICKS.values()]) * PT
REF_SD, SEED_SD, BASE, STEPS = 0.12 * PT, 1.0 * PT, 0.955, 360
MARGIN, ALPHA = 0.5 * PT, 0.05
NOISES = ("normal", "t3", "rounded")
TOLERANCE = 1e-10  # as ablate.analysis.intervals.CONSTANT_TOLERANCE


def draw_runs(noise: str, draws: int, seeds: int, rng: np.random.Generator, effects: np.ndarray = EFFECTS,
              sds: np.ndarray = SDS) -> np.ndarray:
    """Metric of (draws, seeds, 1 + tricks) runs: the reference arm first, then each ``-trick`` arm."""
    arm_sd = np.concatenate([[REF_SD], np.sqrt(np.maximum(sds**2 - REF_SD**2, 0.0))])
    mean = BASE + rng.normal(0.0, SEED_SD, (draws, seeds, 1)) - np.concatenate([[0.0], effects])
    if noise == "normal":
        y = mean + arm_sd * rng.standard_normal(mean.shape)
    elif noise == "t3":
        y = mean + arm_sd * rng.standard_t(3, mean.shape) / np.sqrt(3.0)
    elif noise == "rounded":
        y = np.round((mean + arm_sd * rng.standard_normal(mean.shape)) * STEPS) / STEPS
    else:
        raise ValueError(f"noise: {noise!r}; expected one of {', '.join(NOISES)}")
    return y


def prefix_stats(d: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(effect, sd, p_value)`` of the first n[f, i] differences d[f, :, i], as compare computes them."""
    mask = np.arange(d.shape[1])[None, :, None] < n[:, None, :]
    x = np.where(mask, d, np.nan)
    effect = np.nanmean(x, axis=1)
    spread = np.nanmax(x, axis=1) - np.nanmin(x, axis=1)
    flat = spread <= TOLERANCE * np.nanmax(np.abs(x), axis=1)
    sd = np.where(flat, 0.0, np.nanstd(x, axis=1, ddof=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.abs(effect) / (sd / np.sqrt(n))
    p = 2.0 * stats.t.sf(t, np.maximum(n - 1, 1))
    p = np.where(flat, np.where(effect != 0.0, np.minimum(1.0, 2.0 ** (1.0 - n)), 1.0), p)
    return effect, sd, p


@dataclass
class Outcome:
    """The final verdicts of many studies and the runs they took."""

    table: dict[str, np.ndarray]  # decide()'s columns, (draws, tricks)
    n: np.ndarray  # pairs per trick at the end
    runs: np.ndarray  # training runs per study


def adaptive(y: np.ndarray, *, start: int, step: int, max_seeds: int, boundary: str,
             margin: float | None = MARGIN, alpha: float = ALPHA, effects: np.ndarray = EFFECTS) -> Outcome:
    """Run the adaptive rule on pre-drawn runs ``y`` (draws, >= max_seeds, arms)."""
    grid = looks(start, step, max_seeds)
    judge = grid if boundary != "none" else (max_seeds,)  # "none": the fixed rule at every look
    kind = boundary if boundary != "none" else "bonferroni"
    d = y[:, :, :1] - y[:, :, 1:]
    draws, tricks = d.shape[0], d.shape[2]
    n = np.full((draws, tricks), float(start))
    ref = np.full(draws, float(start))
    final: dict[str, np.ndarray] = {}
    active = np.ones(draws, dtype=bool)
    for r in range(len(grid)):
        effect, sd, p = prefix_stats(d[active], n[active])
        out = decide(effect, sd, n[active], p, schedule=judge, boundary=kind, alpha=alpha, margin=margin,
                     direction="maximize")
        for name, values in out.items():
            final.setdefault(name, np.empty((draws, tricks), dtype=values.dtype))[active] = values
        unresolved = out["verdict"] == "unresolved"
        stop = ~unresolved.any(axis=1) if r < len(grid) - 1 else np.ones(len(unresolved), dtype=bool)
        idx = np.flatnonzero(active)
        going = idx[~stop]
        if going.size:
            n[going] = np.where(unresolved[~stop], grid[r + 1], n[going])
            ref[going] = grid[r + 1]
        active[idx[stop]] = False
        if not active.any():
            break
    return Outcome(final, n, ref + n.sum(axis=1))


def fixed(y: np.ndarray, seeds: int, *, margin: float | None = MARGIN, alpha: float = ALPHA) -> Outcome:
    """The fixed design: ``seeds`` per arm, judged once."""
    d = y[:, :seeds, :1] - y[:, :seeds, 1:]
    n = np.full((d.shape[0], d.shape[2]), float(seeds))
    effect, sd, p = prefix_stats(d, n)
    out = decide(effect, sd, n, p, schedule=(seeds,), boundary="bonferroni", alpha=alpha, margin=margin,
                 direction="maximize")
    return Outcome(out, n, np.full(d.shape[0], seeds * (d.shape[2] + 1.0)))


def errors(o: Outcome, effects: np.ndarray = EFFECTS, margin: float = MARGIN) -> dict[str, float]:
    """Coverage and family-wise error rates of the final tables, with the resolution and the runs."""
    t = o.table
    truth = effects[None, :]
    covered = (t["ci_low"] <= truth) & (truth <= t["ci_high"])
    family = ((t["ci_low_adj"] <= truth) & (truth <= t["ci_high_adj"])).all(axis=1)
    verdict = t["verdict"]
    signed = np.isin(verdict, ("helps", "hurts"))
    wrong_sign = (signed & (truth == 0)).any(axis=1)
    wrong_sign |= ((verdict == "helps") & (truth < 0)).any(axis=1)
    wrong_sign |= ((verdict == "hurts") & (truth > 0)).any(axis=1)
    wrong_same = ((verdict == "no effect") & (np.abs(truth) >= margin - 1e-12)).any(axis=1)
    resolved = verdict != "unresolved"
    return {
        "coverage": float(covered.mean()), "family": float(family.mean()),
        "fwer_sign": float(wrong_sign.mean()), "fwer_same": float(wrong_same.mean()),
        "all": float(resolved.all(axis=1).mean()), "share": float(resolved.mean()),
        "runs": float(o.runs.mean()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--noises", default=",".join(NOISES))
    parser.add_argument("--boundaries", default=",".join(["none", *BOUNDARIES]))
    parser.add_argument("--start", type=int, default=3)
    parser.add_argument("--step", type=int, default=2)
    parser.add_argument("--max", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    began = time.perf_counter()
    print(f"{args.draws} studies a cell, {len(TRICKS)} tricks, seeds start {args.start} step {args.step} "
          f"max {args.max}, margin {MARGIN / PT:g} pts, alpha {ALPHA}\n")
    print("| noise | design | coverage | family coverage | FWER helps/hurts | FWER no effect | "
          "all resolved | share resolved | runs | fixed N (same all resolved) | runs ratio | "
          "fixed N (same share) | runs ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for noise in args.noises.split(","):
        y = draw_runs(noise, args.draws, 100, np.random.default_rng(args.seed))
        fixed_by_n = {s: errors(fixed(y, s)) for s in range(2, 101)}
        for boundary in args.boundaries.split(","):
            e = errors(adaptive(y, start=args.start, step=args.step, max_seeds=args.max, boundary=boundary))
            cells = []
            for key in ("all", "share"):
                match = next((s for s, f in fixed_by_n.items() if f[key] >= e[key]), None)
                ratio = f"{fixed_by_n[match]['runs'] / e['runs']:.2f}" if match else "-"
                cells += [f"{match or '>100'}", ratio]
            print(f"| {noise} | adaptive, {boundary} | {e['coverage']:.3f} | {e['family']:.3f} | "
                  f"{e['fwer_sign']:.3f} | {e['fwer_same']:.3f} | {e['all']:.3f} | {e['share']:.3f} | "
                  f"{e['runs']:.1f} | {' | '.join(cells)} |")
        for s in (5, 10, 20, 30):
            f = fixed_by_n[s]
            print(f"| {noise} | fixed, {s} seeds | {f['coverage']:.3f} | {f['family']:.3f} | "
                  f"{f['fwer_sign']:.3f} | {f['fwer_same']:.3f} | {f['all']:.3f} | {f['share']:.3f} | "
                  f"{f['runs']:.0f} | | | | |")
    print(f"\n{time.perf_counter() - began:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
