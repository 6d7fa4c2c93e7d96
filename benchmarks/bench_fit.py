"""Throughput of ``ablate.train.fit`` against a minimal hand-written PyTorch loop.

Both train the same model (same ``build_model`` call, same init, same seed) on the same in-memory
tensors with the same batch size, epochs, optimizer and thread count, and both evaluate validation
accuracy once per epoch under ``no_grad`` (fit does that, so it is the fair minimal equivalent).
Neither uses a DataLoader. Data loading is outside both timings; setup (seeding, model build,
init, optimizer) is inside both.

Runs are interleaved in one process (the order rotates every repeat so slow drift hits every
variant alike) after a warm-up, and the table reports median examples/second
(training examples x epochs / wall time) and the ratio fit/hand. The bar: ratio >= 0.95, aim >= 1.0.

Usage::

    .venv/bin/python benchmarks/bench_fit.py                       # every case, diagnostics on and off
    .venv/bin/python benchmarks/bench_fit.py --case digits-mlp --repeats 11
    .venv/bin/python benchmarks/bench_fit.py --diagnostics off --json /tmp/bench.json
    .venv/bin/python benchmarks/bench_fit.py --device cuda         # on a GPU machine

Since both loops use the same seed, generator and initial weights, they do the same arithmetic, so
each case also checks that their final validation accuracies agree (column ``same``): a mismatch
means the comparison is no longer like for like (or fit changed its arithmetic on purpose, e.g. a
fused optimizer).

fit does a little more than the hand loop by design (train loss/accuracy every step, val loss, the
test evaluation at the end, the diagnostics probe): that work is inside its timing, so the ratio is
the price of those features. On a shared, loaded machine wall times swing by 2x; trust ``paired``
(the median of per-repeat hand/fit time ratios) more than the ratio of medians, and rerun with more
``--repeats`` when the two disagree.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable from a checkout without an editable install
    sys.path.insert(0, str(ROOT))

from ablate.config import compose
from ablate.data import Dataset
from ablate.init import apply_init
from ablate.models import build_model
from ablate.train import fit, load_data

T = TypeVar("T")

# case name -> Hydra overrides (everything else is the default recipe)
CASES: dict[str, list[str]] = {
    "digits-mlp": ["data=digits", "model=mlp", "trainer.epochs=30"],
    "digits-mlp-adam-bn": ["data=digits", "model=mlp", "optimizer=adam", "norm=batch",
                           "trainer.epochs=30"],
    "mnist1d-cnn": ["data=mnist1d", "model=cnn", "trainer.epochs=5"],
}


# --- the minimal hand-written loop ----------------------------------------------------------------


def _hand_optimizer(cfg: Any, params: Any) -> torch.optim.Optimizer:
    """The optimizer the config names, built directly (one parameter group, no weight decay)."""
    o = cfg.optimizer
    if cfg.weight_decay or cfg.l1 or cfg.clip.name != "none" or cfg.schedule.name != "constant":
        raise SystemExit("the hand loop covers plain recipes only (no decay, l1, clipping, schedule)")
    if o.name in ("sgd", "momentum", "nesterov"):
        momentum = o.get("momentum", 0.0 if o.name == "sgd" else 0.9)
        return torch.optim.SGD(params, lr=o.lr, momentum=momentum,
                               nesterov=bool(o.get("nesterov", o.name == "nesterov")))
    if o.name in ("adam", "adamw"):
        cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
        return cls(params, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.get("eps", 1e-8))
    raise SystemExit(f"the hand loop does not implement optimizer {o.name!r}")


def hand_loop(cfg: Any, data: Dataset, device: torch.device) -> float:
    """Train like fit with nothing but the essentials; return the last epoch's val accuracy."""
    if cfg.averaging.name != "none" or cfg.early_stopping.patience:
        raise SystemExit("the hand loop covers plain recipes only (no averaging, early stopping)")
    seed, epochs, bs = int(cfg.seed), int(cfg.trainer.epochs), int(cfg.trainer.batch_size)
    torch.manual_seed(seed)
    order = torch.Generator().manual_seed(seed)
    model = build_model(cfg.model.name, input_shape=data.input_shape, num_classes=data.num_classes,
                        depth=cfg.model.depth, width=cfg.model.width,
                        activation=cfg.model.activation, norm=cfg.norm, dropout=cfg.dropout,
                        residual=cfg.model.residual)
    apply_init(model, cfg.init.name, activation=cfg.model.activation,
               **({"bound": cfg.init.bound} if "bound" in cfg.init else {}))
    model.to(device)
    optimizer = _hand_optimizer(cfg, model.parameters())
    x, y, xv, yv = data.x_train, data.y_train, data.x_val, data.y_val
    n = len(y)
    n_used = n - 1 if n % bs == 1 and n > 1 else n  # fit drops a last batch of one example
    val_acc = 0.0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=order).to(device)
        xs, ys = x[perm], y[perm]
        for start in range(0, n_used, bs):
            loss = F.cross_entropy(model(xs[start:start + bs]), ys[start:start + bs])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            val_acc = (model(xv).argmax(dim=1) == yv).sum().item() / len(yv)
        model.train()
    return val_acc


# --- measurement ----------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], T], device: torch.device) -> tuple[float, T]:
    """Seconds ``run`` takes (collected garbage first, the device synchronised), and what it returned."""
    gc.collect()
    _sync(device)
    t0 = time.perf_counter()
    out = run()
    _sync(device)
    return time.perf_counter() - t0, out


def case_overrides(overrides: list[str], args: argparse.Namespace) -> list[str]:
    """A case's overrides with the command line's device, threads, epochs and data root."""
    base = [*overrides, f"trainer.device={args.device}", f"trainer.threads={args.threads}"]
    if args.epochs:
        base.append(f"trainer.epochs={args.epochs}")
    if args.data_root:
        base.append(f"data.root={args.data_root}")
    return base


def bench_case(name: str, overrides: list[str], args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    base = case_overrides(overrides, args)
    cfg_on = compose([*base, "trainer.diagnostics=true"])
    cfg_off = compose([*base, "trainer.diagnostics=false"])
    data = load_data(cfg_on).to(device)  # outside every timing; fit's own .to(device) is a no-op
    bs, n = int(cfg_on.trainer.batch_size), len(data.y_train)
    examples = (n - 1 if n % bs == 1 and n > 1 else n) * int(cfg_on.trainer.epochs)

    variants: dict[str, Callable[[], float]] = {"hand": lambda: hand_loop(cfg_on, data, device)}
    if args.diagnostics in ("on", "both"):
        variants["fit"] = lambda: fit(cfg_on, data=data).history[-1]["val_acc"]
    if args.diagnostics in ("off", "both"):
        variants["fit_nodiag"] = lambda: fit(cfg_off, data=data).history[-1]["val_acc"]

    names = list(variants)
    times: dict[str, list[float]] = {k: [] for k in names}
    accs: dict[str, float] = {}
    for rep in range(args.warmup + args.repeats):
        shift = rep % len(names)
        for k in names[shift:] + names[:shift]:  # rotate the order: hand/fit/.. then fit/../hand
            torch.set_num_threads(args.threads)
            seconds, acc = timed(variants[k], device)
            if rep >= args.warmup:
                times[k].append(seconds)
            accs[k] = acc

    out: dict[str, Any] = {"case": name, "overrides": overrides, "train_examples": n,
                           "epochs": int(cfg_on.trainer.epochs), "batch_size": bs,
                           "examples": examples, "variants": {}}
    for k in names:
        med = statistics.median(times[k])
        out["variants"][k] = {"median_s": med, "ex_per_s": examples / med,
                              "min_s": min(times[k]), "max_s": max(times[k]),
                              "times_s": times[k], "final_val_acc": accs[k]}
    hand = out["variants"]["hand"]["ex_per_s"]
    for k in names[1:]:
        out["variants"][k]["ratio"] = out["variants"][k]["ex_per_s"] / hand
        # hand time / fit time within each repeat, runs taken seconds apart: robust to slow drift
        out["variants"][k]["paired_ratio"] = statistics.median(
            h / f for h, f in zip(times["hand"], times[k], strict=True))
    out["same_val_acc"] = len({round(a, 9) for a in accs.values()}) == 1
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", action="append", choices=[*CASES, "all"],
                   help="case to run (repeatable; default all)")
    p.add_argument("--repeats", type=int, default=7, help="timed runs of each variant (default 7)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs of each variant first (default 1)")
    p.add_argument("--threads", type=int, default=1, help="torch threads in both loops (default 1)")
    p.add_argument("--diagnostics", choices=["on", "off", "both"], default="both",
                   help="time fit with trainer.diagnostics on, off or both (default both)")
    p.add_argument("--epochs", type=int, default=0, help="override every case's epochs")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--data-root", default="", help="data.root override (where mnist1d is cached)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")
    if args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        p.error("--repeats and --threads must be >= 1, --warmup >= 0")
    cases = list(CASES) if not args.case or "all" in args.case else list(dict.fromkeys(args.case))

    torch.set_num_threads(args.threads)
    dev = args.device
    if dev.startswith("cuda"):
        dev += f" ({torch.cuda.get_device_name(torch.device(args.device))})"
    header = (f"torch {torch.__version__} | python {platform.python_version()} | cpu: {cpu_model()} "
              f"| device: {dev} | threads: {args.threads} | repeats: {args.repeats} "
              f"(+{args.warmup} warm-up), interleaved, median")
    print(header, flush=True)

    started = time.perf_counter()
    results = []
    for name in cases:
        r = bench_case(name, CASES[name], args)
        results.append(r)
        v = r["variants"]
        cells = [f"{name:<20}", f"{r['epochs']:>6}", f"{v['hand']['ex_per_s']:>10.0f}"]
        for k in ("fit", "fit_nodiag"):
            if k in v:
                cells += [f"{v[k]['ex_per_s']:>10.0f}", f"{v[k]['ratio']:>6.3f}",
                          f"{v[k]['paired_ratio']:>6.3f}"]
        cells.append(f"{'yes' if r['same_val_acc'] else 'NO':>4}")
        if name == cases[0]:
            titles = [f"{'case':<20}", f"{'epochs':>6}", f"{'hand ex/s':>10}"]
            if "fit" in v:
                titles += [f"{'fit ex/s':>10}", f"{'ratio':>6}", f"{'paired':>6}"]
            if "fit_nodiag" in v:
                titles += [f"{'fit-nodiag':>10}", f"{'ratio':>6}", f"{'paired':>6}"]
            titles.append(f"{'same':>4}")
            print("  ".join(titles))
        print("  ".join(cells), flush=True)
    total = time.perf_counter() - started
    print("ratio = median fit ex/s / median hand ex/s (bar >= 0.95, aim >= 1.0); paired = median over "
          "repeats of hand time / fit time\nin the same repeat (less sensitive to load drift); "
          f"fit-nodiag = fit with trainer.diagnostics=false; same = equal final val acc; {total:.0f}s in all")

    if args.json:
        payload = {"header": header, "torch": torch.__version__, "cpu": cpu_model(),
                   "device": dev, "threads": args.threads, "repeats": args.repeats,
                   "warmup": args.warmup, "diagnostics": args.diagnostics,
                   "total_s": total, "cases": results}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
