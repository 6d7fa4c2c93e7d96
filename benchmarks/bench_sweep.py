"""Sweep benchmarks: pruning savings, asynchronous vs batch-synchronous workers, orchestration overhead.

    .venv/bin/python benchmarks/bench_sweep.py pruning   [--n-trials 40] [--pruners none,median,hyperband]
    .venv/bin/python benchmarks/bench_sweep.py async     [--n-trials 16]
    .venv/bin/python benchmarks/bench_sweep.py overhead  [--study tricks_digits] [--n-trials 12]

Every run uses the real `ablate sweep` path (worker processes, a journal storage, a SQLite MLflow
store) in a fresh temporary folder, and compares variants measured in the same invocation.

- pruning: the same study, sampler and seed with each pruner; total epochs trained and best value.
  Bar: at most 1/3 of the epochs for a best within 0.5 points of no pruning.
- async: 2 workers on trials of unequal length (trainer.epochs drawn from {2, 60}), pulling freely
  against the same workers held to a batch-of-2 barrier (what the stock Hydra sweeper does).
  Bar: >= 1.3x trials per hour.
- overhead: one worker; sweep wall time divided by the sum of the trials' fit() time (imports,
  composition, MLflow and Optuna bookkeeping are the overhead). Bar: <= 1.10.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import random
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load(cwd: Path, name: str):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(cwd / "runs" / name / "journal.log")))
    return optuna.load_study(study_name=name, storage=storage)


def _sweep(cwd: Path, *args: str) -> float:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "ablate", "sweep", *args], cwd=cwd, capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"ablate sweep {' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return time.perf_counter() - t0


def pruning(args: argparse.Namespace) -> None:
    from ablate.worker import count_states

    print(f"pruning: study {args.study}, {args.n_trials} trials, 2 workers, sampler tpe seed 0")
    print(f"{'pruner':<12} {'epochs':>7} {'share':>6} {'best':>7} {'Δbest':>7} {'pruned':>7} {'wall s':>7}")
    base_epochs = base_best = None
    for item in args.pruners.split(","):
        pruner, *settings = item.split(";")  # e.g. "hyperband;pruner.reduction_factor=4"
        with tempfile.TemporaryDirectory() as tmp:
            cwd = Path(tmp)
            wall = _sweep(cwd, args.study, f"n_trials={args.n_trials}", "workers=2", f"pruner={pruner}",
                          "sampler.seed=0", *settings)
            study = _load(cwd, args.study)
            epochs = sum(int(t.user_attrs.get("ablate.epochs_run", 0)) for t in study.trials)
            best = study.best_value
            pruned = count_states(study.trials)["pruned"]
        base_epochs = base_epochs or epochs
        base_best = base_best if base_best is not None else best
        print(f"{item:<12} {epochs:>7} {epochs / base_epochs:>6.2f} {best:>7.4f} "
              f"{100 * (best - base_best):>+7.2f} {pruned:>7} {wall:>7.1f}", flush=True)
    print("share = epochs / epochs without pruning (bar <= 0.33); Δbest in points vs no pruning "
          "(bar >= -0.5)")


def _async_worker(name: str, storage: str, index: int, barrier, cwd: str) -> None:
    os.chdir(cwd)
    from ablate.worker import run_worker

    def wait() -> None:
        barrier.wait(timeout=300)

    try:
        run_worker(name, storage, index=index, before_ask=wait if barrier is not None else None,
                   verbose=False)
    except threading.BrokenBarrierError:
        pass  # the partner finished the study: nothing left to pair with
    finally:
        if barrier is not None:
            barrier.abort()


def asynchronous(args: argparse.Namespace) -> None:
    from ablate.study import compose_study
    from ablate.sweep import prepare_study

    ctx = mp.get_context("spawn")
    rates = {}
    print(f"async: {args.n_trials} trials of 2 or 60 epochs on digits, 2 worker processes")
    for mode in ("barrier", "async"):
        with tempfile.TemporaryDirectory() as tmp:
            cwd = Path(tmp)
            (cwd / "sweeps").mkdir()
            (cwd / "sweeps" / "uneven.yaml").write_text(textwrap.dedent(f"""\
                defaults: [base_study, {{sampler: random}}, {{pruner: none}}, _self_]
                n_trials: {args.n_trials}
                workers: 2
                params:
                  trainer.epochs: choice(2, 60)
                  seed: range(0, 1000)
            """))
            os.chdir(cwd)
            spec = compose_study("uneven", [], cwd=cwd)
            study, spec, _ = prepare_study(spec)
            rng = random.Random(0)  # the same queue of trials in both modes
            for i in range(args.n_trials):
                study.enqueue_trial({"trainer.epochs": rng.choice([2, 60]), "seed": i})
            barrier = ctx.Barrier(2) if mode == "barrier" else None
            procs = [ctx.Process(target=_async_worker, args=(spec.name, spec.storage, i, barrier, tmp))
                     for i in range(2)]
            t0 = time.perf_counter()
            for p in procs:
                p.start()
            for p in procs:
                p.join()
            wall = time.perf_counter() - t0
            os.chdir(ROOT)
            done = [t for t in _load(cwd, "uneven").trials if t.state.name == "COMPLETE"]
            # From the first trial's start to the last one's end: the workers' start-up (imports,
            # the same in both modes) is left out, as it is paid once per sweep, not per trial.
            span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
            rates[mode] = len(done) / span * 3600
            print(f"{mode:<8} {len(done):>3} trials in {span:6.1f} s of trials ({wall:5.1f} s with start-up)"
                  f" = {rates[mode]:8.0f} trials/hour", flush=True)
    print(f"async / barrier = {rates['async'] / rates['barrier']:.2f}x (bar >= 1.3)")


def overhead(args: argparse.Namespace) -> None:
    print(f"overhead: study {args.study}, {args.n_trials} trials, 1 worker, no pruning")
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        extra = [f"trainer.epochs={args.epochs}"] if args.epochs else []
        wall = _sweep(cwd, args.study, f"n_trials={args.n_trials}", "workers=1", "pruner=none", *extra)
        study = _load(cwd, args.study)
        train = sum(float(t.user_attrs.get("ablate.train_time", 0.0)) for t in study.trials)
    print(f"wall {wall:.1f} s, sum of fit() time {train:.1f} s, per trial overhead "
          f"{(wall - train) / args.n_trials:.2f} s; wall / training = {wall / train:.2f} (bar <= 1.10)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["pruning", "async", "overhead"])
    p.add_argument("--study", default="tricks_digits")
    p.add_argument("--n-trials", type=int, default=0)
    p.add_argument("--epochs", type=int, default=0, help="overhead: trainer.epochs of every trial")
    p.add_argument("--pruners", default="none,median,hyperband")
    args = p.parse_args()
    args.n_trials = args.n_trials or {"pruning": 40, "async": 24, "overhead": 12}[args.what]
    print(f"python {platform.python_version()} | {os.cpu_count()} cpus | {time.strftime('%Y-%m-%d')}")
    {"pruning": pruning, "async": asynchronous, "overhead": overhead}[args.what](args)


if __name__ == "__main__":
    main()
