"""Report build time on large synthetic ablations: analysis, figures and rendering timed apart.

What is generated (seeded, so every invocation builds the same tables):

- a leave-one-out ablation of 19 tricks: 20 arms (``reference`` and ``-trick01`` ... ``-trick19``),
  each with S seeds: S = 50 (1,000 runs) and S = 500 (10,000 runs);
- per run the report's columns: ``best_val_acc``, ``val_acc``, ``train_acc``, ``test_acc``,
  ``epochs_run``, ``train_time``, ``stop_reason`` (about 1 % of runs diverged) plus ``state``,
  ``dataset``, ``run_name`` and ``params.model.name``;
- a 20-epoch history for every run: ``val_acc``, ``train_acc``, ``val_loss``, ``train_loss`` and
  ``grad_norm/<layer>`` for 4 layers, i.e. 160 rows per run (1.6 M rows at 10,000 runs), which is
  what :func:`ablate.report.collect.collect` reads back for a real study. One arm has vanishing
  gradients, so the gradient figure has something to flag.

Only the pure path is timed: :func:`ablate.report.build_report` (analysis, figures, layout) and
:func:`~ablate.report.render.render_markdown` / :func:`~ablate.report.render.render_html`.
Reading MLflow (one ``get_metric_history`` call per run and metric) is excluded: it scales with the
store, not with this code. Data generation is excluded too.

Bar: the whole build + render of 10,000 runs in <= 10 s.

Usage::

    .venv/bin/python benchmarks/bench_report.py                  # 1,000 and 10,000 runs
    .venv/bin/python benchmarks/bench_report.py --seeds 500 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ablate.report import build_report
from ablate.report.render import render_html, render_markdown

ARMS = 20
EPOCHS = 20
LAYERS = 4
BAR_SECONDS = 10.0


def synthetic(seeds: int, *, arms: int = ARMS, epochs: int = EPOCHS, seed: int = 0):
    """``(runs, history, spec, meta)`` of a leave-one-out ablation with ``arms`` arms x ``seeds`` seeds."""
    rng = np.random.default_rng(seed)
    names = ["reference"] + [f"-trick{i:02d}" for i in range(1, arms)]
    level = np.concatenate([[0.95], 0.95 - rng.uniform(0.0, 0.08, arms - 1)])  # each trick helps 0-8 pts
    speed = np.concatenate([[2.0], rng.uniform(2.0, 6.0, arms - 1)])
    n = arms * seeds
    arm_idx = np.repeat(np.arange(arms), seeds)
    run_seed = np.tile(np.arange(seeds), arms)
    final = level[arm_idx] + rng.normal(0, 0.006, n)
    t = np.arange(1, epochs + 1)
    curves = final[:, None] * (1 - np.exp(-t[None, :] / speed[arm_idx, None]))  # (n, epochs)
    curves += rng.normal(0, 0.003, curves.shape)
    diverged = rng.random(n) < 0.01
    curves[diverged, epochs // 2:] = np.nan
    run_ids = np.array([f"{i:032x}" for i in range(n)], dtype=object)
    runs = pd.DataFrame({
        "run_id": run_ids,
        "run_name": [f"bench-t{i:05d}" for i in range(n)],
        "arm": np.array(names, dtype=object)[arm_idx],
        "seed": run_seed,
        "best_val_acc": np.nanmax(curves, axis=1),
        "val_acc": curves[:, -1],
        "train_acc": np.minimum(1.0, curves[:, -1] + 0.03),
        "test_acc": final - 0.01,
        "epochs_run": np.where(diverged, epochs // 2, epochs).astype(float),
        "train_time": 30 + 5 * rng.random(n),
        "stop_reason": np.where(diverged, "diverged", "completed").astype(object),
        "state": np.where(diverged, "diverged", "finished").astype(object),
        "dataset": "digits",
        "params.model.name": "mlp",
    })
    # Long history: one block per metric, all vectorised.
    rid = np.repeat(run_ids, epochs)
    step = np.tile(t, n)
    blocks = {
        "val_acc": curves.ravel(),
        "train_acc": np.minimum(1.0, curves + 0.03).ravel(),
        "val_loss": (2 * (1 - curves)).ravel(),
        "train_loss": (2 * (1 - curves) - 0.05).ravel(),
    }
    decay = np.where(arm_idx == 3, 1.2, 0.2)  # arm 3: gradients shrink 10^1.2 per layer (vanishing)
    for layer in range(LAYERS):
        norms = (10 ** (-layer * decay))[:, None] / t[None, :] * (1 + 0.1 * rng.random((n, epochs)))
        blocks[f"grad_norm/layers.{2 * layer}"] = norms.ravel()
    history = pd.DataFrame({
        "run_id": np.tile(rid, len(blocks)),
        "metric": np.repeat(np.array(list(blocks), dtype=object), n * epochs),
        "step": np.tile(step, len(blocks)),
        "value": np.concatenate(list(blocks.values())),
    })
    spec = {"name": "bench", "metric": "val_acc", "direction": "maximize", "design": "leave_one_out",
            "arms": {a: [] for a in names}, "seeds": list(range(seeds)),
            "comparisons": [{"label": a[1:], "with_arm": "reference", "without_arm": a} for a in names[1:]]}
    meta = {"name": "bench", "source": "study", "counts": {"finished": int((~diverged).sum()),
                                                            "diverged": int(diverged.sum())},
            "versions": ["synthetic"], "hardware": [(f"CPU: {platform.processor() or platform.machine()} "
                                                     f"({os.cpu_count()} cores)")]}
    return runs, history, spec, meta


def bench(seeds: int, repeats: int) -> dict[str, float]:
    runs, history, spec, meta = synthetic(seeds)
    best: dict[str, float] = {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        report = build_report(runs, history, spec, meta)
        t1 = time.perf_counter()
        md, files = render_markdown(report)
        t2 = time.perf_counter()
        page = render_html(report)
        t3 = time.perf_counter()
        timing = {**report.timings, "markdown": t2 - t1, "html": t3 - t2, "total": t3 - t0}
        best = timing if not best or timing["total"] < best["total"] else best
    best.update(runs=len(runs), rows=len(history), md_kb=len(md) / 1024, html_kb=len(page) / 1024,
                n_figures=len(files))
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[50, 500], help="seeds per arm (20 arms)")
    p.add_argument("--repeats", type=int, default=2,
                   help="best of N builds per size (imports are warmed before)")
    args = p.parse_args(argv)

    # Imports (pandas, scipy, matplotlib, optuna) are paid once, outside the timings.
    warm = synthetic(3)
    build_report(*warm)
    cols = ["runs", "history rows", "analysis s", "figures s", "assemble s", "markdown s", "html s",
            "total s", "md KiB", "html KiB"]
    print(f"python {platform.python_version()}, pandas {pd.__version__}, numpy {np.__version__}, "
          f"{os.cpu_count()} CPUs; best of {args.repeats}; MLflow reads excluded", flush=True)
    print("  ".join(f"{c:>12}" for c in cols), flush=True)
    ok = True
    for seeds in args.seeds:
        r = bench(seeds, args.repeats)
        cells = [f"{r['runs']:,}", f"{r['rows']:,}", f"{r['analysis']:.2f}", f"{r['figures']:.2f}",
                 f"{r['assemble']:.2f}", f"{r['markdown']:.2f}", f"{r['html']:.2f}", f"{r['total']:.2f}",
                 f"{r['md_kb']:.0f}", f"{r['html_kb']:.0f}"]
        print("  ".join(f"{c:>12}" for c in cells), flush=True)
        if r["runs"] >= 10_000 and r["total"] > BAR_SECONDS:
            ok = False
    print(f"bar: build + render of 10,000 runs <= {BAR_SECONDS:g} s: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
