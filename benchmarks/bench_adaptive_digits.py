"""Adaptive against fixed seeds on the real ``ablation_digits`` study: training runs to a verdict per trick.

Runs ``ablation_digits`` with ``seeds=<max>`` (every arm gets seeds 0..max-1; 10 arms) and, in
another folder, with adaptive seeds ``{start, step, max}``, both with ``ablate sweep`` and two
workers. A run's result depends only on its (arm, seed) and the thread count, so the fixed study
holds every run the adaptive one could ask for; from it:

* **fixed N**: the verdicts of the fixed design (:func:`ablate.analysis.verdicts` on
  :func:`~ablate.analysis.compare`) on seeds 0..N-1 of every arm, for N = 2..max; the smallest N
  that gives every trick the adaptive study resolved the same verdict (a trick it left
  unresolved at max may be anything), and its 10 N runs;
* **adaptive**: the training runs the adaptive sweep made (its Optuna trials), its verdicts and
  the seeds it gave each arm; and, as a check, the rule replayed on the fixed study's runs
  (:func:`~ablate.analysis.next_round` round after round), which must ask for the same seeds.

    .venv/bin/python benchmarks/bench_adaptive_digits.py                  # start 3, step 2, max 30
    .venv/bin/python benchmarks/bench_adaptive_digits.py --folder /tmp/b  # keep (and reuse) the runs
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd

from ablate.analysis import Comparison, compare, default_margin, next_round, verdicts
from ablate.sweep.spec import StudySpec
from ablate.sweep.storage import open_storage

STUDY = "ablation_digits"
ABLATE = [sys.executable, "-m", "ablate"]


def _sweep(folder: Path, seeds: str) -> float:
    """``ablate sweep ablation_digits seeds=...`` in ``folder`` (resumed when already there); seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    started = time.time()
    subprocess.run([*ABLATE, "sweep", STUDY, f"seeds={seeds}", "workers=2"], cwd=folder, check=True,
                   stdout=subprocess.DEVNULL)
    return time.time() - started


def _study(folder: Path) -> tuple[optuna.Study, StudySpec]:
    storage = open_storage(str(folder / "runs" / STUDY / "journal.log"))
    study = optuna.load_study(study_name=STUDY, storage=storage)
    return study, StudySpec.from_json(study.user_attrs["ablate.spec"])


def _runs(study: optuna.Study) -> pd.DataFrame:
    rows = [{"arm": t.params["arm"], "seed": t.params["seed"], "value": t.value} for t in study.trials
            if t.state == optuna.trial.TrialState.COMPLETE]
    return pd.DataFrame(rows).drop_duplicates(["arm", "seed"], keep="last")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=int, default=3)
    parser.add_argument("--step", type=int, default=2)
    parser.add_argument("--max", type=int, default=30, dest="max_seeds")
    parser.add_argument("--folder", type=Path, default=None, help="working folder (default: a temp one)")
    args = parser.parse_args()
    root = args.folder or Path(tempfile.mkdtemp(prefix="ablate-adaptive-digits-"))
    schedule = f"{{start:{args.start},step:{args.step},max:{args.max_seeds}}}"
    fixed_s = _sweep(root / "fixed", str(args.max_seeds))
    adaptive_s = _sweep(root / "adaptive", schedule)

    fixed_study, spec = _study(root / "fixed")
    adaptive_study, adaptive_spec = _study(root / "adaptive")
    comparisons = [Comparison(c["label"], c["with_arm"], c["without_arm"]) for c in spec.comparisons]
    margin = default_margin(spec.metric)
    every = _runs(fixed_study)
    options = {"start": args.start, "step": args.step, "max_seeds": args.max_seeds, "margin": margin,
               "direction": spec.direction}

    # the adaptive sweep as it ran
    ran = _runs(adaptive_study)
    final = next_round(ran, "value", comparisons, **options)
    adaptive_verdicts = dict(zip(final.table["label"], final.table["verdict"], strict=True))
    per_arm = ran.groupby("arm")["seed"].nunique().to_dict()
    trials = sum(t.state == optuna.trial.TrialState.COMPLETE for t in adaptive_study.trials)

    # the rule replayed on the fixed study's runs: the same seeds?
    have = dict.fromkeys(spec.arms, args.start)
    while True:
        subset = every[every["seed"] < every["arm"].map(have)]
        step = next_round(subset, "value", comparisons, **options)
        if step.done or step.targets == have:
            break
        have = {**have, **step.targets}
    replay_same = {arm: int(n) for arm, n in subset.groupby("arm")["seed"].nunique().items()} == per_arm

    # the smallest fixed N with the same verdicts, every trick resolved
    fixed_n = None
    for n in range(2, args.max_seeds + 1):
        table = verdicts(compare(every[every["seed"] < n], "value", comparisons), margin=margin,
                         direction=spec.direction)
        got = dict(zip(table["label"], table["verdict"], strict=True))
        resolved = {k: v for k, v in adaptive_verdicts.items() if v != "unresolved"}
        if all(got[k] == v for k, v in resolved.items()):  # what the adaptive study resolved, alike
            fixed_n = n
            break

    print(f"ablation_digits: {len(spec.arms)} arms, adaptive seeds {schedule} vs fixed; "
          f"sweeps {fixed_s:.0f} s (fixed {args.max_seeds}) and {adaptive_s:.0f} s (adaptive), 2 workers")
    print(f"adaptive stopped: {final.reason}; replayed on the fixed runs: "
          f"{'the same seeds' if replay_same else 'OTHER seeds'}")
    print()
    at_max = verdicts(compare(every, "value", comparisons), margin=margin, direction=spec.direction)
    fixed_verdicts = dict(zip(at_max["label"], at_max["verdict"], strict=True))
    print(f"| trick | adaptive verdict | seeds (arm) | fixed {args.max_seeds} seeds |")
    print("|---|---|---:|---|")
    for c in comparisons:
        print(f"| {c.label} | {adaptive_verdicts[c.label]} | {per_arm.get(c.without_arm, 0)} "
              f"| {fixed_verdicts[c.label]} |")
    print(f"| (reference) | | {per_arm.get(comparisons[0].with_arm, 0)} | |")
    print()
    fixed_runs = None if fixed_n is None else fixed_n * len(spec.arms)
    ratio = "n/a (no fixed N up to max reaches them)" if fixed_runs is None else f"{fixed_runs / trials:.2f}x"
    print("| design | training runs |")
    print("|---|---:|")
    print(f"| adaptive {schedule} | {trials} |")
    shown = f"{fixed_runs} (N = {fixed_n})" if fixed_runs else f"> {len(spec.arms) * args.max_seeds}"
    print(f"| fixed, smallest N giving the tricks adaptive resolved the same verdicts | {shown} |")
    print(f"\nfixed / adaptive runs: {ratio}")
    del adaptive_spec
    return 0


if __name__ == "__main__":
    sys.exit(main())
