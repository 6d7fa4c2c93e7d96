"""Sweep benchmarks: pruning savings, asynchronous vs batch-synchronous workers, orchestration overhead.

    .venv/bin/python benchmarks/bench_sweep.py pruning   [--n-trials 40] [--pruners none,median,hyperband]
    .venv/bin/python benchmarks/bench_sweep.py async     [--n-trials 48] [--repeats 3] [--short 1 --long 30]
    .venv/bin/python benchmarks/bench_sweep.py overhead  [--study tricks_digits] [--n-trials 12]
    .venv/bin/python benchmarks/bench_sweep.py short     [--n-trials 16] [--epochs 100] [--repeats 3]
    .venv/bin/python benchmarks/bench_sweep.py fused     [--seeds-per-arm 16] [--fuse 8]

Every run uses the real `ablate sweep` path (worker processes, a journal storage, a SQLite MLflow
store) in a fresh temporary folder, and compares variants measured in the same invocation.

- pruning: the same study, sampler and seed with each pruner; total epochs trained and best value.
  Bar: at most 1/3 of the epochs for a best within 0.5 points of no pruning.
- async: 2 workers on trials of unequal length (mnist1d CNN trials of 1 or 30 epochs, half of each,
  in a shuffled queue), pulling freely against the same workers held to a batch-of-2 barrier (what
  the stock Hydra sweeper does), on several queues. Bar: >= 1.3x trials per hour. How much any
  scheduler can gain depends on the queue's order, so each queue's ideal ratio is printed too: the
  two schedules of its trials' measured durations, with no orchestration cost.
- overhead: one worker; sweep wall time divided by the sum of the trials' fit() time (imports,
  composition, MLflow and Optuna bookkeeping are the overhead). Bar: <= 1.10. Also against a
  hand-written baseline: the same trial configs trained back to back by fit() in one process.
- short: a short study as users start one (16 trials of about 1.4 s, 2 workers, one torch thread
  each): wall time against the ideal, the same configs' fit() time back to back in one process
  (one thread) divided by the 2 workers. Bar: <= 1.3x.
- fused: `ablation_digits` with N seeds per arm (2 workers), every (arm, seed) trained alone and then
  with `fuse_seeds=K` (a worker trains up to K queued seeds of one arm as one fused model): wall
  times side by side, and the largest difference of a run's value between the two.
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

from ablate.records import ATTR_EPOCHS_RUN, ATTR_TRAIN_TIME

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
    from ablate.sweep import count_states

    seeds = list(range(args.seeds))
    print(f"pruning: study {args.study}, {args.n_trials} trials, 2 workers, sampler tpe, seeds {seeds}")
    print(f"{'pruner':<40} {'epochs':>7} {'share':>6} {'best':>7} {'Δbest':>7} {'worst Δ':>7} "
          f"{'pruned':>7} {'wall s':>7}")
    base: dict[int, tuple[int, float]] = {}
    for item in args.pruners.split(","):
        pruner, *settings = item.split(";")  # e.g. "hyperband;pruner.reduction_factor=4"
        rows = []
        for seed in seeds:
            with tempfile.TemporaryDirectory() as tmp:
                cwd = Path(tmp)
                wall = _sweep(cwd, args.study, f"n_trials={args.n_trials}", "workers=2", f"pruner={pruner}",
                              f"sampler.seed={seed}", *settings)
                study = _load(cwd, args.study)
                epochs = sum(int(t.user_attrs.get(ATTR_EPOCHS_RUN, 0)) for t in study.trials)
                rows.append((seed, epochs, study.best_value, count_states(study.trials)["pruned"], wall))
        if not base:  # the first entry (none) is what the others are compared with, seed by seed
            base = {seed: (epochs, best) for seed, epochs, best, _, _ in rows}
        share = sum(e for _, e, _, _, _ in rows) / sum(base[s][0] for s in seeds)
        deltas = [100 * (best - base[seed][1]) for seed, _, best, _, _ in rows]
        print(f"{item:<40} {sum(r[1] for r in rows) / len(rows):>7.0f} {share:>6.2f} "
              f"{sum(r[2] for r in rows) / len(rows):>7.4f} {sum(deltas) / len(deltas):>+7.2f} "
              f"{min(deltas):>+7.2f} {sum(r[3] for r in rows) / len(rows):>7.1f} "
              f"{sum(r[4] for r in rows) / len(rows):>7.1f}", flush=True)
    print("means over the seeds; share = epochs / epochs without pruning (bar <= 0.33); Δbest = best val "
          "acc minus no pruning's with the same seed, in points (bar: mean >= -0.5)")


def _async_worker(name: str, storage: str, index: int, barrier, cwd: str) -> None:
    os.chdir(cwd)
    from ablate.sweep.worker import run_worker

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


def _schedules(durations: list[float]) -> tuple[float, float]:
    """Makespans of a queue of trial durations on 2 workers: pairs at a barrier, and pulling freely."""
    barrier = sum(max(durations[i:i + 2]) for i in range(0, len(durations), 2))
    free = [0.0, 0.0]
    for d in durations:
        free[free.index(min(free))] += d
    return barrier, max(free)


def asynchronous(args: argparse.Namespace) -> None:
    import statistics

    ctx = mp.get_context("spawn")
    print(f"async: {args.n_trials} trials of {args.short} or {args.long} epochs "
          f"({args.data}, {args.model}), half of each in a shuffled queue, 2 worker processes, "
          f"{args.repeats} repeats (a new queue each)")
    with tempfile.TemporaryDirectory() as shared:
        # the dataset is made once, before the timed runs
        fixed = {"data": args.data, "model": args.model, "data.root": str(Path(shared) / "data")}
        overrides = [f"{k}={v}" for k, v in fixed.items()]
        make = ("from ablate.config import compose\nfrom ablate.train import load_data\n"
                f"load_data(compose({overrides!r}))")
        subprocess.run([sys.executable, "-c", make], check=True)
        rows = []
        for repeat in range(args.repeats):
            rng = random.Random(repeat)
            n_short = args.n_trials // 2
            queue = [args.short] * n_short + [args.long] * (args.n_trials - n_short)
            rng.shuffle(queue)
            rate, took = {}, {}
            for mode in (("barrier", "async") if repeat % 2 == 0 else ("async", "barrier")):
                rate[mode], took[mode] = _uneven_run(ctx, mode, queue, fixed, args.n_trials)
            # The same queue scheduled ideally (no orchestration cost) with the durations the trials
            # took in the free-pulling run: what a perfect scheduler could gain on this queue.
            barrier, free = _schedules(took["async"])
            rows.append((rate["barrier"], rate["async"], barrier / free))
            print(f"queue {repeat}: barrier {rate['barrier']:6.0f} trials/h, "
                  f"async {rate['async']:6.0f} trials/h, ratio {rate['async'] / rate['barrier']:.2f}x "
                  f"(ideal for this queue {barrier / free:.2f}x)",
                  flush=True)
    ratios = [a / b for b, a, _ in rows]
    print(f"async / barrier = {statistics.median(ratios):.2f}x median, {statistics.mean(ratios):.2f}x mean "
          f"(per queue: {', '.join(f'{r:.2f}' for r in ratios)}; ideal mean "
          f"{statistics.mean(r[2] for r in rows):.2f}x) (bar >= 1.3)")


def _uneven_run(
    ctx, mode: str, queue: list[int], fixed: dict[str, str], n_trials: int
) -> tuple[float, list[float]]:
    """One sweep of the queued trials, freely or at a batch-of-2 barrier: trials/hour and durations."""
    from ablate.sweep import compose_study, prepare_study

    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        (cwd / "sweeps").mkdir()
        lines = "\n".join(f"  {k}: {v}" for k, v in fixed.items())
        (cwd / "sweeps" / "uneven.yaml").write_text(
            "defaults: [base_study, {sampler: random}, {pruner: none}, _self_]\n"
            f"n_trials: {n_trials}\nworkers: 2\nfixed:\n{lines}\n"
            "params:\n  trainer.epochs: choice(" + ", ".join(map(str, sorted(set(queue)))) + ")\n"
            "  seed: range(0, 1000)\n")
        os.chdir(cwd)
        try:
            spec = compose_study("uneven", [], cwd=cwd)
            study, spec, _ = prepare_study(spec)
            for i, epochs in enumerate(queue):
                study.enqueue_trial({"trainer.epochs": epochs, "seed": i})
            barrier = ctx.Barrier(2) if mode == "barrier" else None
            procs = [ctx.Process(target=_async_worker, args=(spec.name, spec.storage, i, barrier, tmp))
                     for i in range(2)]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
        finally:
            os.chdir(ROOT)
        done = sorted((t for t in _load(cwd, "uneven").trials if t.state.name == "COMPLETE"),
                      key=lambda t: t.number)
    if len(done) != n_trials:
        raise SystemExit(f"{mode}: {len(done)} of {n_trials} trials completed")
    # From the first trial's start to the last one's end: the workers' start-up (imports, the same
    # in both modes) is left out, as it is paid once per sweep, not per trial.
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    return len(done) / span * 3600, [(t.datetime_complete - t.datetime_start).total_seconds() for t in done]


def _standalone_fit_time(cwd: Path, study_name: str, trials: list, overrides: list[str],
                         threads: int | None = None) -> float:
    """The hand-written baseline: the sweep's trials, trained back to back by ``fit`` in this process.

    The same configs (composed as the worker composes them, with its thread count), no Optuna, no
    MLflow, no worker processes; the data loaded once as a worker does. Returns the total seconds.
    """
    from ablate.sweep import TrialComposer, compose_study, worker_threads
    from ablate.train import fit, load_data

    here = os.getcwd()
    os.chdir(cwd)
    try:
        spec = compose_study(study_name, overrides, cwd=cwd)
        composer = TrialComposer(spec.space, {"trainer.threads": threads or worker_threads(1)})
        cache, total = {}, 0.0
        for t in trials:
            cfg = composer(t.params, f"baseline-{t.number}")
            key = tuple(sorted(cfg.data.items()))
            if key not in cache:
                cache[key] = load_data(cfg)
            t0 = time.perf_counter()
            fit(cfg, data=cache[key])
            total += time.perf_counter() - t0
        return total
    finally:
        os.chdir(here)


_FLOOR = """\
import pickle, sys
from ablate.train import fit, load_data
configs = pickle.loads(sys.stdin.buffer.read())
data = load_data(configs[0])
for cfg in configs:
    fit(cfg, data=data)
"""


def _fresh_process_floor(cwd: Path, study_name: str, trials: list, overrides: list[str]) -> float:
    """What no orchestration at all costs with fresh processes: two new Python processes, each
    importing torch and training its half of the trials' configs with ``fit`` (no Optuna, no MLflow,
    no supervisor), started together; wall seconds until both are done."""
    import pickle

    from ablate.sweep import TrialComposer, compose_study

    here = os.getcwd()
    os.chdir(cwd)
    try:
        spec = compose_study(study_name, overrides, cwd=cwd)
        composer = TrialComposer(spec.space, {"trainer.threads": 1})
        configs = [composer(t.params, f"floor-{t.number}") for t in trials]
    finally:
        os.chdir(here)
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", _FLOOR], cwd=cwd, stdin=subprocess.PIPE)
             for _ in range(2)]
    for i, p in enumerate(procs):
        assert p.stdin is not None
        p.stdin.write(pickle.dumps(configs[i::2]))
        p.stdin.close()
    for p in procs:
        if p.wait() != 0:
            raise SystemExit("the fresh-process floor failed")
    return time.perf_counter() - t0


def _prepare_data(cwd: Path, study_name: str, overrides: list[str]) -> None:
    """Generate the study's dataset cache (mnist1d) in ``cwd`` first, as after any earlier run.

    Making a dataset is a one-time preparation, not per-sweep orchestration: it stays out of the
    timed sweep (as it does out of the baseline).
    """
    subprocess.run([sys.executable, "-c", textwrap.dedent(f"""\
        from ablate.sweep import compose_study
        from ablate.train import load_data
        from ablate.sweep import TrialComposer
        spec = compose_study({study_name!r}, {overrides!r})
        load_data(TrialComposer(spec.space)(spec.space.representative(), "prepare"))
    """)], cwd=cwd, check=True)


def overhead(args: argparse.Namespace) -> None:
    print(f"overhead: study {args.study}, {args.n_trials} trials, 1 worker, no pruning")
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        overrides = [f"n_trials={args.n_trials}", "workers=1", "pruner=none"]
        overrides += [f"trainer.epochs={args.epochs}"] if args.epochs else []
        _prepare_data(cwd, args.study, overrides)
        started = time.time()
        wall = _sweep(cwd, args.study, *overrides)
        ended = started + wall
        trials = sorted(_load(cwd, args.study).trials, key=lambda t: t.number)
        alone = _standalone_fit_time(cwd, args.study, trials, overrides)
    train = sum(float(t.user_attrs.get(ATTR_TRAIN_TIME, 0.0)) for t in trials)
    # Where the rest goes, from the trials' ask and tell times in the storage. A worker asks for its
    # next trial while the last one's final MLflow writes and tell run on its writer thread, so
    # "between" is negative when they overlap.
    starts = [t.datetime_start.timestamp() for t in trials]
    ends = [t.datetime_complete.timestamp() for t in trials]
    inside = sum(e - s - float(t.user_attrs.get(ATTR_TRAIN_TIME, 0.0))
                 for s, e, t in zip(starts, ends, trials, strict=True))
    between = sum(s - e for s, e in zip(starts[1:], ends[:-1], strict=True))
    print(f"wall {wall:.1f} s = training {train:.1f} s + start-up {starts[0] - started:.1f} s "
          f"(sweep start to the first ask) + {inside:.1f} s inside trials (ask to tell, less training; "
          f"{inside / len(trials):.3f} s each) + {between:.1f} s between trials "
          f"+ {ended - ends[-1]:.1f} s wind-down")
    print(f"mean fit() {train / len(trials):.2f} s per trial; wall / training = {wall / train:.2f} "
          "(bar <= 1.10)")
    print(f"baseline: the same {len(trials)} configs trained back to back by fit() in one process, no "
          f"Optuna/MLflow: {alone:.1f} s; wall / baseline = {wall / alone:.2f}")


def short(args: argparse.Namespace) -> None:
    epochs = args.epochs or 100
    print(f"short: study {args.study}, {args.n_trials} trials of {epochs} epochs, 2 workers (1 thread each), "
          f"no pruning, {args.repeats} repeats")
    overrides = [f"n_trials={args.n_trials}", "workers=2", "pruner=none", f"trainer.epochs={epochs}",
                 "trainer.threads=1"]
    ratios: list[float] = []
    floors: list[float] = []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            cwd = Path(tmp)
            _prepare_data(cwd, args.study, overrides)
            started = time.time()
            wall = _sweep(cwd, args.study, *overrides)
            trials = sorted(_load(cwd, args.study).trials, key=lambda t: t.number)
            alone = _standalone_fit_time(cwd, args.study, trials, overrides, threads=1)
            floor = _fresh_process_floor(cwd, args.study, trials, overrides)
            floors.append(floor / (alone / 2))
        first = min(t.datetime_start.timestamp() for t in trials)
        last = max(t.datetime_complete.timestamp() for t in trials)
        train = sum(float(t.user_attrs.get(ATTR_TRAIN_TIME, 0.0)) for t in trials)
        ideal = alone / 2
        ratios.append(wall / ideal)
        print(f"  repeat {repeat}: wall {wall:.1f} s, ideal {ideal:.1f} s (fit() back to back {alone:.1f} s, "
              f"{alone / len(trials):.2f} s a trial) -> wall / ideal {wall / ideal:.2f}; start-up "
              f"{first - started:.1f} s to the first ask, trials {last - first:.1f} s (training in the "
              f"sweep {train:.1f} s, {train / alone:.2f}x fit() alone), wind-down "
              f"{started + wall - last:.1f} s; fresh-process floor {floor:.1f} s "
              f"({floor / ideal:.2f}x ideal)")
    ratios.sort()
    floors.sort()
    print(f"wall / ideal: median {ratios[len(ratios) // 2]:.2f} over {len(ratios)} repeats "
          f"({', '.join(f'{r:.2f}' for r in ratios)}); bar <= 1.30")
    print(f"fresh-process floor / ideal (two new processes importing torch and running fit(), nothing "
          f"else): median {floors[len(floors) // 2]:.2f} ({', '.join(f'{r:.2f}' for r in floors)})")


def fused(args: argparse.Namespace) -> None:
    """ablation_digits with N seeds per arm, each (arm, seed) trained alone and then K seeds fused."""
    seeds, fuse = args.seeds_per_arm, args.fuse
    print(f"fused: ablation_digits, {seeds} seeds per arm, 2 workers (1 thread each), fuse_seeds 1 vs {fuse}")
    walls, values = {}, {}
    for k in (1, fuse):
        with tempfile.TemporaryDirectory() as tmp:
            cwd = Path(tmp)
            overrides = [f"seeds={seeds}", "workers=2", "trainer.threads=1", f"fuse_seeds={k}"]
            _prepare_data(cwd, "ablation_digits", overrides)
            walls[k] = _sweep(cwd, "ablation_digits", *overrides)
            trials = _load(cwd, "ablation_digits").trials
            values[k] = {(t.params["arm"], t.params["seed"]): t.value for t in trials if t.value is not None}
            train = sum(float(t.user_attrs.get(ATTR_TRAIN_TIME, 0.0)) for t in trials)
        print(f"  fuse_seeds={k}: {len(values[k])} runs, wall {walls[k]:.1f} s (training {train:.1f} s)")
    same = [p for p in values[1] if p in values[fuse]]
    differ = max(abs(values[1][p] - values[fuse][p]) for p in same)
    print(f"  largest difference of a run's value, fused against alone: {differ:.4f} over {len(same)} runs")
    print(f"wall fuse_seeds=1 / fuse_seeds={fuse}: {walls[1] / walls[fuse]:.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["pruning", "async", "overhead", "short", "fused"])
    p.add_argument("--study", default="tricks_digits")
    p.add_argument("--n-trials", type=int, default=0)
    p.add_argument("--epochs", type=int, default=0, help="overhead: trainer.epochs of every trial")
    p.add_argument("--pruners", default="none,median,hyperband")
    p.add_argument("--seeds", type=int, default=3, help="pruning: sampler seeds 0..N-1 per pruner")
    p.add_argument("--repeats", type=int, default=3, help="async: queues, each run in both modes")
    p.add_argument("--data", default="mnist1d", help="async: dataset of the trials")
    p.add_argument("--model", default="cnn", help="async: model of the trials")
    p.add_argument("--short", type=int, default=1, help="async: epochs of a short trial")
    p.add_argument("--long", type=int, default=30, help="async: epochs of a long trial")
    p.add_argument("--seeds-per-arm", type=int, default=16, help="fused: seeds per arm of ablation_digits")
    p.add_argument("--fuse", type=int, default=8, help="fused: fuse_seeds of the fused sweep")
    args = p.parse_args()
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # not "Creating initial MLflow database tables"
    args.n_trials = args.n_trials or {"pruning": 40, "async": 48, "overhead": 12, "short": 16,
                                      "fused": 0}[args.what]
    if args.what == "short" and args.study == "tricks_digits":
        args.study = "optimizers_digits"
    print(f"python {platform.python_version()} | {os.cpu_count()} cpus | {time.strftime('%Y-%m-%d')}")
    {"pruning": pruning, "async": asynchronous, "overhead": overhead, "short": short,
     "fused": fused}[args.what](args)


if __name__ == "__main__":
    main()
