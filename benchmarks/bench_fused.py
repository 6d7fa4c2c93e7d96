"""Throughput of ``ablate.fused.fit_seeds`` (K seeds as one fused model) against K sequential ``fit`` calls.

Both train the same recipe on seeds ``0..K-1`` from the same in-memory tensors, in one process, with
the same thread count; both do everything a run does (validation every epoch, test evaluation,
diagnostics as the recipe says). Data loading is outside both timings; model building is inside both.

For every K the two variants are timed interleaved (the order alternates every repeat) after a
warm-up, and the table reports median examples/second (training examples x epochs x K / wall time)
and ``ratio`` = fused / sequential (> 1: fusing is faster). The last lines give
``fused/sequential K=8: <ratio>`` per case. Bars: CPU >= 1.3 at K=8 on both models (one thread); on a
GPU >= 8 at K=16 on the mnist1d CNN.

Usage::

    .venv/bin/python benchmarks/bench_fused.py                          # every case, K in 1 4 8 16 32
    .venv/bin/python benchmarks/bench_fused.py --case digits-mlp --ks 1 8 --repeats 5
    .venv/bin/python benchmarks/bench_fused.py --ks 1 4 --epochs 2 --repeats 1 --warmup 0   # smoke test
    .venv/bin/python benchmarks/bench_fused.py --device cuda            # on a GPU machine

Each case also checks that the fused seeds end where the sequential ones do (column ``same``: every
seed's final validation accuracy within one validation example; a recipe without dropout does the
same arithmetic up to float32 rounding).
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable from a checkout without an editable install
    sys.path.insert(0, str(ROOT))

from bench_fit import case_overrides, timed  # benchmarks/, this script's folder, is on sys.path

from ablate.config import compose
from ablate.data import Dataset
from ablate.fused import fit_seeds
from ablate.train import fit, load_data

# case name -> Hydra overrides (everything else is the default recipe)
CASES: dict[str, list[str]] = {
    "digits-mlp": ["data=digits", "model=mlp", "trainer.epochs=20"],
    "mnist1d-cnn": ["data=mnist1d", "model=cnn", "trainer.epochs=5"],
    "mnist1d-cnn-bn": ["data=mnist1d", "model=cnn", "norm=batch", "trainer.epochs=5"],
}
KS = (1, 4, 8, 16, 32)


def bench_case(name: str, overrides: list[str], args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    base = case_overrides(overrides, args)
    cfg = compose(base)
    per_seed = {s: compose([*base, f"seed={s}"]) for s in range(max(args.ks))}  # composing is not timed
    data: Dataset = load_data(cfg).to(device)
    bs, n = int(cfg.trainer.batch_size), len(data.y_train)
    examples = (n - 1 if n % bs == 1 and n > 1 else n) * int(cfg.trainer.epochs)

    def sequential(k: int) -> list[float]:
        return [fit(per_seed[s], data=data).history[-1]["val_acc"] for s in range(k)]

    def fused(k: int) -> list[float]:
        return [r.history[-1]["val_acc"] for r in fit_seeds(cfg, list(range(k)), data=data)]

    rows = []
    for k in args.ks:
        variants = {"sequential": sequential, "fused": fused}
        times: dict[str, list[float]] = {v: [] for v in variants}
        accs: dict[str, list[float]] = {}
        for rep in range(args.warmup + args.repeats):
            order = list(variants) if rep % 2 == 0 else list(variants)[::-1]
            for v in order:
                torch.set_num_threads(args.threads)
                seconds, acc = timed(functools.partial(variants[v], k), device)
                if rep >= args.warmup:
                    times[v].append(seconds)
                accs[v] = acc
        row: dict[str, Any] = {"k": k}
        for v in variants:
            med = statistics.median(times[v])
            row[v] = {"median_s": med, "ex_per_s": examples * k / med, "times_s": times[v]}
        row["ratio"] = row["fused"]["ex_per_s"] / row["sequential"]["ex_per_s"]
        row["paired_ratio"] = statistics.median(
            s / f for s, f in zip(times["sequential"], times["fused"], strict=True))
        one = 1 / len(data.y_val) + 1e-9
        row["same"] = all(abs(a - b) <= one for a, b in zip(accs["fused"], accs["sequential"], strict=True))
        rows.append(row)
        print(f"{name:<16} {k:>3} {row['sequential']['ex_per_s']:>12.0f} {row['fused']['ex_per_s']:>12.0f} "
              f"{row['ratio']:>6.2f} {row['paired_ratio']:>6.2f} {'yes' if row['same'] else 'NO':>4}",
              flush=True)
    return {"case": name, "overrides": overrides, "train_examples": n, "epochs": int(cfg.trainer.epochs),
            "batch_size": bs, "rows": rows}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", action="append", choices=[*CASES, "all"],
                   help="case to run (repeatable; default all)")
    p.add_argument("--ks", type=int, nargs="+", default=list(KS),
                   help="seeds per fused model (default 1 4 8 16 32)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each variant per K (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs of each variant first (default 1)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--epochs", type=int, default=0, help="override every case's epochs")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--data-root", default="", help="data.root override (where mnist1d is cached)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")
    if args.repeats < 1 or args.warmup < 0 or args.threads < 1 or min(args.ks) < 1:
        p.error("--repeats, --threads and every K must be >= 1, --warmup >= 0")
    cases = list(CASES) if not args.case or "all" in args.case else list(dict.fromkeys(args.case))

    torch.set_num_threads(args.threads)
    dev = args.device
    if dev.startswith("cuda"):
        dev += f" ({torch.cuda.get_device_name(torch.device(args.device))})"
    header = (f"torch {torch.__version__} | python {platform.python_version()} | cpu: {cpu_model()} "
              f"| device: {dev} | threads: {args.threads} | repeats: {args.repeats} "
              f"(+{args.warmup} warm-up), interleaved, median")
    print(header)
    print(f"{'case':<16} {'K':>3} {'seq ex/s':>12} {'fused ex/s':>12} {'ratio':>6} {'paired':>6} {'same':>4}",
          flush=True)
    started = time.perf_counter()
    results = [bench_case(name, CASES[name], args) for name in cases]
    total = time.perf_counter() - started
    print("ratio = median fused ex/s / median sequential ex/s; paired = median over repeats of sequential "
          "time / fused time;\nsame = every seed's final val acc within one validation example; "
          f"{total:.0f}s in all")
    for r in results:
        at8 = [row for row in r["rows"] if row["k"] == 8]
        if at8:
            print(f"{r['case']}: fused/sequential K=8: {at8[0]['ratio']:.2f}")
    if args.json:
        payload = {"header": header, "torch": torch.__version__, "cpu": cpu_model(), "device": dev,
                   "threads": args.threads, "repeats": args.repeats, "warmup": args.warmup,
                   "total_s": total, "cases": results}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
