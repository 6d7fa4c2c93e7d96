"""``ablate.report``: MLflow stores written by ablate's own writer, read back into Markdown and HTML.

Every run is written by :func:`ablate.tracking.track_run` from a composed config (params, per-epoch
metrics, final metrics, tags), with tag and param names from :mod:`ablate.records`: renaming one in
the writer or the vocabulary fails these tests. The per-epoch numbers are synthetic, so the effects
are known. A study's parent run is a tracked run carrying the study tags and ``study.json``.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable, Iterator, Mapping
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from markdown_it import MarkdownIt
from omegaconf import DictConfig, OmegaConf

from ablate import records
from ablate.config import compose
from ablate.errors import AblateError
from ablate.report import build_report, render, render_html, render_markdown, write_report
from ablate.report.collect import collect, derive_arms
from ablate.sweep.runs import trial_tags
from ablate.tracking import environment, finish_study_run, git_commit, open_study_run, track_run

XSS = "<script>alert(1)</script>"
PIPE_ARM = "-a|b"
EPOCHS = 6


# --- building stores through the writer -----------------------------------------------------------


def _curve(final: float, speed: float) -> np.ndarray:
    return final * (1 - np.exp(-np.arange(1, EPOCHS + 1) / speed))


def _config(uri: str, experiment: str, *overrides: str) -> DictConfig:
    return compose([f"tracking.uri={uri}", f"tracking.experiment={experiment}", f"trainer.epochs={EPOCHS}",
                    "tracking.flush_every=60", *overrides])


class _Failed(RuntimeError):
    """Raised inside a run's body: track_run ends the run FAILED."""


def _log_run(cfg: DictConfig, *, name: str | None, seed: int, curve: np.ndarray, tags: Mapping[str, Any],
             parent: str | None = None, params: Mapping[str, Any] | None = None,
             end_tags: Mapping[str, Any] | None = None, failed: bool = False, grad_decay: float = 0.3,
             stop_reason: str = "completed", set_values: Mapping[str, Any] | None = None) -> None:
    """One run as ablate records it: config params, one metrics dict per epoch, then ``finish``."""
    cfg = cfg.copy()
    for key, value in {"seed": seed, "tracking.run_name": name, **(set_values or {})}.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    try:
        with track_run(cfg, tags={k: str(v) for k, v in tags.items()}, parent_run_id=parent) as tracker:
            for epoch, v in enumerate(curve, 1):
                metrics = {"val_acc": v, "train_acc": min(1.0, v + 0.03), "val_loss": 2 * (1 - v),
                           "train_loss": 2 * (1 - v) - 0.05, "lr": 0.1, "epoch_time": 0.01}
                metrics |= {f"grad_norm/layers.{2 * i}": 10 ** (-i * grad_decay) / epoch for i in range(3)}
                metrics |= {f"act_std/layers.{2 * i}": 1.0 for i in range(3)}
                tracker(epoch, metrics)
            if failed:
                raise _Failed("diverged into an exception")
            final = {"test_acc": float(curve[-1] - 0.01), "test_loss": 0.5,
                     records.best_metric("val_acc"): float(np.nanmax(curve)),
                     "best_epoch": float(np.nanargmax(curve) + 1), "epochs_run": float(len(curve)),
                     "train_time": 1.5, "n_params": 1234.0}
            tracker.finish(final, stop_reason, params=params, tags=end_tags)
    except _Failed:
        pass


def _trial_tags(study: str, number: int | None, arm: str | None, design: str | None) -> dict[str, Any]:
    """A trial's tags as the worker writes them (:func:`ablate.sweep.runs.trial_tags`)."""
    if number is None:  # a run that carries its study's name (and arm) only
        return {records.TAG_STUDY: study, **({records.TAG_ARM: arm} if arm is not None else {})}
    tags: dict[str, Any] = trial_tags(study=study, number=number, worker="host:1", device="cpu", arm=arm,
                                      design=design)
    if arm is not None and not design:
        tags[records.TAG_ARM] = arm
    return tags


def _completed(state: str = "COMPLETE", status: str = records.COMPLETED) -> dict[str, str]:
    return {records.TAG_OPTUNA_STATE: state, records.TAG_STATUS: status}


def _study(cfg: DictConfig, name: str, doc: Mapping[str, Any] | None, design: str,
           trials: Callable[[str], None]) -> None:
    """A study's parent run, written as ``ablate sweep`` writes it (tags, ``study.json``), and its trials.

    ``doc`` None: a parent run without its ``study.json`` (as an older ablate left them).
    """
    if doc is None:
        tags = {records.TAG_KIND: records.KIND_STUDY, records.TAG_STUDY: name, records.TAG_DESIGN: design}
        with track_run(cfg, tags=tags) as old:
            assert old.run_id is not None
            trials(old.run_id)
            old.finish({}, "completed")
        return
    parent = open_study_run(tracking_uri=cfg.tracking.uri, experiment=cfg.tracking.experiment, name=name,
                            storage="runs/journal.log", design=None if design == "search" else design,
                            document=json.dumps(doc, indent=2))
    trials(parent)
    finish_study_run(tracking_uri=cfg.tracking.uri, parent_run_id=parent, status="FINISHED",
                     counts={"complete": 1}, metric="val_acc", best=None)


ARMS = {"reference": 0.93, "-norm=batch": 0.85, PIPE_ARM: 0.90}
SEEDS = [0, 1, 2, 3]


def _ablation(uri: str, name: str = "abl") -> None:
    cfg = _config(uri, name)
    doc = {"name": name, "metric": "val_acc", "direction": "maximize", "design": "leave_one_out",
           "arms": {a: [] for a in ARMS}, "seeds": SEEDS, "experiment": name,
           "comparisons": [{"label": "norm=batch", "with_arm": "reference", "without_arm": "-norm=batch"},
                           {"label": "a|b", "with_arm": "reference", "without_arm": PIPE_ARM}],
           "factors": {}, "params": {}, "distributions": {}, "fixed": {}}

    def trials(parent: str) -> None:
        rng = np.random.default_rng(0)
        trial = 0
        for arm, level in ARMS.items():
            for seed in SEEDS:
                run_name = XSS if (arm == "reference" and seed == 0) else f"{name}-t{trial:04d}"
                _log_run(cfg, name=run_name, seed=seed, curve=_curve(level + rng.normal(0, 0.005), 1.5),
                         parent=parent, tags=_trial_tags(name, trial, arm, "leave_one_out"),
                         params={f"{records.PARAM_SAMPLED}arm": arm, f"{records.PARAM_SAMPLED}seed": seed},
                         end_tags=_completed(), grad_decay=1.5 if arm == "-norm=batch" else 0.2)
                trial += 1
        # One pruned and one failed trial: counted in the header, left out of the tables.
        _log_run(cfg, name=f"{name}-t{trial:04d}", seed=9, curve=_curve(0.5, 3)[:2], parent=parent,
                 tags=_trial_tags(name, None, "reference", None), stop_reason=records.PRUNED,
                 end_tags=_completed("PRUNED", records.PRUNED))
        _log_run(cfg, name=f"{name}-t{trial + 1:04d}", seed=8, curve=_curve(0.5, 3)[:1], parent=parent,
                 tags=_trial_tags(name, None, "reference", None), failed=True)

    _study(cfg, name, doc, "leave_one_out", trials)


# best val acc per seed (0-3) of each arm of the "verd" study: the reference with the trick minus
# each arm without it is a clear help, a clear hurt, an equivalence and an unresolved case.
VERDICT_ARMS = {
    "reference": [0.930, 0.932, 0.929, 0.931],
    "-help": [0.900, 0.903, 0.898, 0.901],  # the trick adds ~3 pts, seed after seed
    "-hurt": [0.950, 0.951, 0.950, 0.952],  # the trick costs ~2 pts
    "-same": [0.9303, 0.9318, 0.9291, 0.9309],  # within 0.05 pts of the reference
    "-noisy": [0.920, 0.936, 0.917, 0.929],  # +0.5 pts on average, spread ~0.8 pts
}


def _verdict_study(uri: str, name: str = "verd") -> None:
    cfg = _config(uri, name)
    doc = {"name": name, "metric": "val_acc", "direction": "maximize", "design": "leave_one_out",
           "arms": {a: [] for a in VERDICT_ARMS}, "seeds": SEEDS, "experiment": name,
           "comparisons": [{"label": arm[1:], "with_arm": "reference", "without_arm": arm}
                           for arm in VERDICT_ARMS if arm != "reference"],
           "factors": {}, "params": {}, "distributions": {}, "fixed": {},
           "resolve": {"margin": 0.005, "confidence": 0.95}}

    def trials(parent: str) -> None:
        trial = 0
        for arm, levels in VERDICT_ARMS.items():
            for seed, level in zip(SEEDS, levels, strict=True):
                # a curve whose best epoch is exactly the level: the last epoch of a rising curve
                curve = _curve(1.0, 1.5) * level / _curve(1.0, 1.5)[-1]
                _log_run(cfg, name=f"{name}-t{trial:04d}", seed=seed, curve=curve, parent=parent,
                         tags=_trial_tags(name, trial, arm, "leave_one_out"),
                         params={f"{records.PARAM_SAMPLED}arm": arm, f"{records.PARAM_SAMPLED}seed": seed},
                         end_tags=_completed())
                trial += 1

    _study(cfg, name, doc, "leave_one_out", trials)


def _search(uri: str) -> None:
    """12 trials over lr (log) and optimizer; each trial is its own arm."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, distribution_to_json

    dists = {"optimizer.lr": FloatDistribution(1e-4, 1.0, log=True),
             "optimizer": CategoricalDistribution(["sgd", "adam"])}
    doc = {"name": "srch", "metric": "val_acc", "direction": "maximize", "design": None, "arms": {},
           "seeds": [], "comparisons": [], "factors": {}, "params": {"optimizer.lr": "interval(1e-4, 1, log)",
                                                        "optimizer": "choice(sgd, adam)"},
           "distributions": {k: distribution_to_json(d) for k, d in dists.items()}, "fixed": {}}
    configs = {opt: _config(uri, "srch", f"optimizer={opt}") for opt in ("sgd", "adam")}

    def trials(parent: str) -> None:
        rng = np.random.default_rng(1)
        for t in range(12):
            lr = float(10 ** rng.uniform(-4, 0))
            opt = ["sgd", "adam"][t % 2]
            level = 0.95 - 0.1 * abs(np.log10(lr) + 2) / 2 - (0.05 if opt == "sgd" else 0)
            _log_run(configs[opt], name=f"srch-t{t:04d}", seed=0, curve=_curve(level, 2), parent=parent,
                     set_values={"optimizer.lr": lr}, tags=_trial_tags("srch", t, None, None),
                     params={f"{records.PARAM_SAMPLED}optimizer.lr": lr,
                             f"{records.PARAM_SAMPLED}optimizer": opt},
                     end_tags=_completed())

    _study(configs["sgd"], "srch", doc, "search", trials)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One SQLite store holding every scenario (creating its tables costs a couple of seconds)."""
    root = tmp_path_factory.mktemp("report")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    _ablation(uri, "abl")
    _verdict_study(uri)
    _search(uri)

    # `ablate train -m optimizer=sgd,adam seed=0,1,2`: no parent, arms from the differing params.
    for opt, level in (("sgd", 0.88), ("adam", 0.92)):
        cfg = _config(uri, "plain", f"optimizer={opt}")
        for seed in range(3):
            _log_run(cfg, name=None, seed=seed, curve=_curve(level, 2), tags={})

    # Runs of two datasets in one experiment.
    for dataset in ("digits", "mnist1d"):
        _log_run(_config(uri, "mixed", f"data={dataset}"), name=None, seed=0, curve=_curve(0.9, 2), tags={})

    # A study whose every trial failed.
    cfg = _config(uri, "dead")

    def failing(parent: str) -> None:
        for seed in range(2):
            _log_run(cfg, name=None, seed=seed, curve=_curve(0.5, 2)[:1], parent=parent, failed=True,
                     tags=_trial_tags("dead", None, "reference", None))

    _study(cfg, "dead", None, "leave_one_out", failing)
    yield uri


# --- reading reports back ---------------------------------------------------------------------------


def _tables(markdown: str) -> list[list[list[str]]]:
    """Every GFM table as rows of cell texts (header row first), parsed by markdown-it."""
    md = MarkdownIt("commonmark").enable("table")
    tables: list[list[list[str]]] = []
    row: list[str] | None = None
    tokens = md.parse(markdown)
    for i, tok in enumerate(tokens):
        if tok.type == "table_open":
            tables.append([])
        elif tok.type == "tr_open":
            row = []
        elif tok.type == "tr_close":
            tables[-1].append(row)  # type: ignore[arg-type]
        elif tok.type == "inline" and row is not None and tokens[i - 1].type in ("th_open", "td_open"):
            row.append("".join(c.content for c in tok.children or [] if c.type in ("text", "code_inline")))
        elif tok.type == "table_close":
            row = None
    return tables


def _table_with(tables: list[list[list[str]]], first_header: str,
                second: str | None = None) -> list[list[str]]:
    return next(t for t in tables if t[0][0] == first_header and second in (None, t[0][1]))


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
        self.tags.append(tag)
        self.attrs.extend(attrs)

    def handle_data(self, data):  # type: ignore[no-untyped-def]
        self.text.append(data)


def _page(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.rglob("*")) if out.exists() else []


# --- tests ----------------------------------------------------------------------------------------------


def test_ablation_report_markdown_and_html(store, tmp_path):
    paths = write_report("abl", out=tmp_path / "reports", tracking_uri=store)
    folder = tmp_path / "reports" / "abl"
    assert paths == [folder / "report.md", folder / "report.html"]
    text = paths[0].read_text(encoding="utf-8")

    # Every image the Markdown references sits beside it.
    images = {line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")}
    assert {"learning_curves.png", "effects.png", "grad_norms.png"} <= images
    for image in images:
        assert (folder / image).read_bytes().startswith(b"\x89PNG")

    tables = _tables(text)
    header = {r[0]: r[1] for r in _table_with(tables, "Field")[1:]}
    assert header["Study"] == "abl" and header["Dataset"] == "digits" and header["Model"] == "mlp"
    assert header["Seeds"] == "0–3 (4 per arm)"
    assert "12 finished" in header["Runs"] and "1 pruned" in header["Runs"] and "1 failed" in header["Runs"]
    assert header["Versions"] == environment()[records.TAG_VERSIONS]
    assert header["Git commit"] == ((git_commit() or "")[:12] or "not recorded")

    arms = _table_with(tables, "arm")
    assert len(arms) == 1 + len(ARMS)  # header + one row per arm
    assert {r[0] for r in arms[1:]} == set(ARMS)  # the "|" in an arm survives as text
    assert all(len(r) == len(arms[0]) for r in arms)
    assert arms[1][0] == "reference" and arms[1][1] == "4"  # best first

    ablation = _table_with(tables, "verdict", "trick")
    assert [r[1] for r in ablation[1:]] == ["norm=batch", "a|b"]  # sorted by effect: 8 pts, 3 pts
    assert [r[3] for r in ablation[1:]] == ["-norm=batch", PIPE_ARM]
    assert float(ablation[1][5]) == pytest.approx(8.0, abs=1.0)
    # each row leads with its verdict, which agrees with p (Holm) and the simultaneous CI
    assert [r[0] for r in ablation[1:]] == ["helps", "helps"]
    # the simultaneous CI, which the chart's colours follow, agrees with p (Holm)
    assert ablation[0][-2:] == ["p (Holm)", "95 % simultaneous CI"]
    for row in ablation[1:]:
        significant = row[-2] == "<0.001" or float(row[-2]) < 0.05
        assert row[-1][0] in "([" and (row[-1].startswith(("(0,", "[")) or not significant)

    runs = _table_with(tables, "MLflow run id")
    assert len(runs) == 1 + 12 + 2  # finished, pruned and failed runs, each traceable
    assert XSS in [r[1] for r in runs]

    # The plain-language lines.
    line = next(ln for ln in text.splitlines() if "norm=batch:" in ln and ln.startswith("- "))
    assert line.startswith("- **helps** norm=batch: +")
    assert "pts best val acc [95 % CI" in line.replace("\\[", "[") and "P(better) = 1.00" in line
    assert "reaches" in line and "epochs" in line

    # The self-contained HTML: no script, nothing fetched, the hostile run name shown as text.
    page_text = paths[1].read_text(encoding="utf-8")
    assert "<script" not in page_text.lower()
    page = _page(page_text)
    assert "script" not in page.tags
    assert not [v for k, v in page.attrs if k in ("src", "href") and v and not v.startswith("data:")]
    assert "http" not in " ".join(v or "" for k, v in page.attrs if k in ("src", "href"))
    assert html.escape(XSS) in page_text and XSS in page.text
    assert page.tags.count("img") == 3 and PIPE_ARM in page.text
    assert "leave-one-out" in page_text and "What each trick contributes" in page.text
    assert "simultaneous CI over the tricks" in page_text


def test_every_line_and_row_leads_with_its_verdict(store, tmp_path):
    md, page = write_report("verd", out=tmp_path, tracking_uri=store)
    text = md.read_text(encoding="utf-8")
    table = _table_with(_tables(text), "verdict", "trick")
    verdict = {r[1]: r[0] for r in table[1:]}
    assert verdict["help"] == "helps" and verdict["hurt"] == "hurts" and verdict["same"] == "no effect"
    # the unresolved one, with the seeds that would resolve it at the spread observed (Bonferroni
    # over the 4 tricks: the sign of +0.5 pts at an sd of 0.74 pts needs 18 pairs, 14 more)
    assert verdict["noisy"].startswith("unresolved (≈ ") and verdict["noisy"].endswith(" more seeds per arm)")
    needed = int(verdict["noisy"].split("≈ ")[1].split()[0])
    assert needed == 14
    lines = {ln.split(": ")[0]: ln for ln in text.splitlines() if ln.startswith("- **")}
    assert set(lines) == {"- **helps** help", "- **hurts** hurt", "- **no effect** same",
                          f"- **unresolved** (≈ {needed} more seeds per arm) noisy"}
    assert "equivalent within ±0.50 pts" in text
    html_text = page.read_text(encoding="utf-8")
    for cls in ("v-helps", "v-hurts", "v-no-effect", "v-unresolved"):
        assert f'<tr class="{cls}">' in html_text
    assert "tr.v-helps td:first-child{color:#2a7d46" in html_text
    assert _page(html_text).tags.count("img") >= 2  # the effect chart, coloured by verdict, drawn


def test_search_report_has_best_trials_importance_and_expected_best(store, tmp_path):
    (md,) = write_report("srch", out=tmp_path, formats="md", tracking_uri=store)
    text = md.read_text(encoding="utf-8")
    assert not (md.parent / "report.html").exists()
    best = _table_with(_tables(text), "rank")
    assert len(best) == 1 + 10
    assert best[0][4:6] == ["optimizer.lr", "optimizer"]
    values = [float(r[2]) for r in best[1:]]
    assert values == sorted(values, reverse=True)
    written = {p.name for p in md.parent.iterdir()}
    assert {"importance.png", "expected_best.png", "learning_curves.png"} <= written
    assert "Search report: srch" in text


def test_plain_runs_arms_from_differing_params(store, tmp_path):
    collected = collect(None, tracking_uri=store, experiment="plain")
    assert collected.spec is None and collected.parent_run_id is None
    # lr, momentum and betas follow the optimizer's name: only the name makes the arm.
    assert sorted(collected.runs["arm"].unique()) == ["optimizer.name=adam", "optimizer.name=sgd"]
    assert sorted(collected.runs["seed"]) == [0, 0, 1, 1, 2, 2]
    assert set(collected.history["metric"]) >= {"val_acc", "train_acc", "val_loss", "train_loss",
                                                 "grad_norm/layers.0"}
    assert len(collected.history) == 6 * EPOCHS * (4 + 3)
    (path,) = write_report(None, experiment="plain", out=tmp_path, formats=["html"], tracking_uri=store)
    assert path == tmp_path / "plain" / "report.html"
    assert "optimizer.name=adam" in path.read_text(encoding="utf-8")


def test_collect_by_tag_and_derived_arms():
    params = pd.DataFrame({"seed": ["0", "1", "0", "1"], "norm": ["none", "none", "batch", "batch"],
                           "optimizer.name": ["sgd"] * 4, "tracking.run_name": ["a", "b", "c", "d"]})
    assert derive_arms(params).tolist() == ["norm=none", "norm=none", "norm=batch", "norm=batch"]
    assert derive_arms(params[["seed"]]).tolist() == ["all runs"] * 4


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"study": "nope"}, "study: 'nope' has no MLflow runs in sqlite:///"),
    ({"study": "dead"}, "has no finished runs"),
    ({"study": None, "experiment": "mixed"}, "runs: mixed dataset (digits, mnist1d)"),
    ({"study": None, "experiment": "nope"}, "experiment: 'nope' is not in sqlite:///"),
    ({"study": "abl", "formats": ("md", "pdf")}, "--format: 'md,pdf' is not allowed; expected md, html"),
    ({"study": "abl", "target": 95}, "--target: 95 is not allowed"),
])
def test_bad_input_is_one_line_and_writes_nothing(store, tmp_path, kwargs, message):
    out = tmp_path / "reports"
    study = kwargs.pop("study")
    with pytest.raises(AblateError) as err:
        write_report(study, out=out, tracking_uri=store, **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert _leftovers(out) == []
    if study == "nope":
        assert "(experiments: " in str(err.value) and "abl" in str(err.value)


def test_rerun_replaces_the_report_atomically(store, tmp_path, monkeypatch):
    out = tmp_path / "reports"
    (md,) = write_report("abl", out=out, formats="md", tracking_uri=store)
    first = md.read_text(encoding="utf-8")
    (md.parent / "stale.png").write_bytes(b"old")

    def broken(report):  # type: ignore[no-untyped-def]
        raise RuntimeError("disk full")

    monkeypatch.setattr(render, "render_html", broken)
    with pytest.raises(RuntimeError):
        write_report("abl", out=out, tracking_uri=store)
    # The failed run left the previous report as it was, and no staging folder.
    assert md.read_text(encoding="utf-8") == first and (md.parent / "stale.png").exists()
    assert sorted(p.name for p in out.iterdir()) == ["abl"]
    assert not (md.parent / "report.html").exists()

    monkeypatch.undo()
    paths = write_report("abl", out=out, tracking_uri=store)
    assert [p.name for p in paths] == ["report.md", "report.html"]
    assert not (md.parent / "stale.png").exists()  # the new folder replaced the old one whole
    assert sorted(p.name for p in out.iterdir()) == ["abl"]


# --- the pure path: no MLflow ----------------------------------------------------------------------


def _synthetic(arms: dict[str, float], seeds: int = 5, *,
               epochs: int = 8) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(3)
    rows, hist = [], []
    for arm, level in arms.items():
        for seed in range(seeds):
            rid = f"{arm}/{seed}"
            curve = _curve(level + rng.normal(0, 0.004), 2.0)[:epochs]
            rows.append({"run_id": rid, "arm": arm, "seed": seed, "best_val_acc": curve.max(),
                         "val_acc": curve[-1], "train_acc": curve[-1] + 0.02, "test_acc": curve[-1] - 0.01,
                         "epochs_run": epochs, "train_time": 2.0, "stop_reason": "completed"})
            hist += [(rid, "val_acc", e, v) for e, v in enumerate(curve, 1)]
    return pd.DataFrame(rows), pd.DataFrame(hist, columns=["run_id", "metric", "step", "value"])


def test_factorial_and_cumulative_sections_without_mlflow():
    cells = {"baseline": 0.80, "norm": 0.86, "dropout": 0.82, "norm + dropout": 0.90}
    runs, history = _synthetic(cells)
    factors = {"norm": {a: "norm" in a for a in cells}, "dropout": {a: "dropout" in a for a in cells}}
    spec = {"name": "fac", "metric": "val_acc", "design": "factorial", "arms": {a: [] for a in cells},
            "factors": factors, "comparisons": [
                {"label": "norm", "with_arm": "norm + dropout", "without_arm": "dropout"},
                {"label": "dropout", "with_arm": "norm + dropout", "without_arm": "norm"}]}
    report = build_report(runs, history, spec, {"name": "fac"}, figures=False)
    text, files = render_markdown(report)
    assert files == {}
    effects = _table_with(_tables(text), "verdict", "term")
    assert [r[1] for r in effects[1:]] == ["norm", "dropout", "norm:dropout"]
    assert float(effects[1][3]) == pytest.approx(7.0, abs=0.6)
    # the terms' verdicts: norm +7 pts, dropout +3 pts and their interaction +1 pt (0.4 pt noise) help
    assert [r[0] for r in effects[1:]] == ["helps", "helps", "helps"]
    assert 'class="v-helps"' in render_html(report)

    steps = {"baseline": 0.80, "+norm": 0.86, "+adam": 0.91}
    runs, history = _synthetic(steps)
    # study.json is written with sorted keys: the order of the steps comes from the comparisons.
    spec = {"name": "cum", "design": "cumulative", "arms": {a: [] for a in sorted(steps)}, "comparisons": [
        {"label": "norm", "with_arm": "+norm", "without_arm": "baseline"},
        {"label": "adam", "with_arm": "+adam", "without_arm": "+norm"}]}
    report = build_report(runs, history, spec, {"name": "cum"}, target=0.8)
    text, files = render_markdown(report)
    cumulative = _table_with(_tables(text), "verdict", "step")
    assert [r[2] for r in cumulative[1:]] == ["baseline", "+norm", "+adam"]
    assert cumulative[1][4] == "—" and float(cumulative[3][4]) == pytest.approx(5.0, abs=0.6)
    assert [r[0] for r in cumulative[1:]] == ["—", "helps", "helps"]  # the first step has no change
    assert "reaches 80 % in" in text
    assert "learning_curves.png" in files and "grad_norms.png" not in files  # no gradient history
    assert "<script" not in render_html(report)


def test_loss_metric_duplicates_and_escaping_without_mlflow():
    runs, history = _synthetic({"base": 0.80, "+trick": 0.88})
    # A repeated (arm, seed): the comparison keeps the latest.
    runs = pd.concat([runs, runs.iloc[[0]].assign(run_id="rerun")], ignore_index=True)
    history = pd.concat([history, history[history["run_id"] == runs["run_id"][0]].assign(run_id="rerun")])
    loss = history.assign(metric="val_loss", value=1.0 - history["value"])
    runs["run_name"] = ["# heading", "1. item", "*bold*", "line\nbreak"] + [""] * (len(runs) - 4)
    spec = {"name": "loss", "metric": "val_loss", "direction": "minimize", "design": "add_one_in",
            "comparisons": [{"label": "trick", "with_arm": "+trick", "without_arm": "base"}]}
    report = build_report(runs, pd.concat([history, loss]), spec, {"name": "loss"}, figures=False)
    text, _ = render_markdown(report)
    line = next(ln for ln in text.splitlines() if ln.startswith("- **") and " trick: " in ln)
    assert ": -0.0" in line and "best val loss" in line and "P(better) = 1.00" in line  # lower is better
    assert line.startswith("- **helps** trick: -0.0")  # the loss went down: the trick helps
    assert "no effect is not tested (no resolve.margin for this metric)" in text
    assert "repeat an (arm, seed) pair" in text
    names = [r[1] for r in _table_with(_tables(text), "MLflow run id")[1:]]
    assert {"# heading", "1. item", "*bold*", "line break"} <= set(names)  # shown as written, one line each


def test_the_study_margin_reaches_the_verdicts():
    runs, history = _synthetic({"base": 0.80, "+same": 0.80})  # no true effect, ~0.6 pt spread
    spec = {"name": "m", "metric": "val_acc", "design": "add_one_in",
            "comparisons": [{"label": "same", "with_arm": "+same", "without_arm": "base"}]}

    def verdict(resolve: dict[str, Any] | None) -> str:
        report = build_report(runs, history, {**spec, "resolve": resolve}, {"name": "m"}, figures=False)
        return _table_with(_tables(render_markdown(report)[0]), "verdict", "trick")[1][0]

    assert verdict(None).startswith("unresolved (≈ ")  # 0.5 pts: too tight for 5 noisy seeds
    assert verdict({"margin": 0.05, "confidence": 0.95}) == "no effect"  # within ±5 pts


def test_html_report_in_headless_chromium(store, tmp_path):
    """The HTML opens in a real browser: no console errors, a non-blank page, hostile text as text."""
    import io
    import shutil

    from conftest import require_service

    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    require_service(bool(chromium and chromedriver),
                    "no headless Chromium: apt-get install chromium chromium-driver (.ci/run does)")
    pytest.importorskip("selenium", reason="selenium is in the dev extras")
    from matplotlib import image
    from selenium import webdriver
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    (html,) = write_report("abl", out=tmp_path / "reports", tracking_uri=store, formats="html")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        driver.get(html.as_uri())
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        with pytest.raises(NoAlertPresentException):
            driver.switch_to.alert  # noqa: B018 (the hostile run name must not have run)
        assert XSS in driver.find_element(By.TAG_NAME, "body").text
        assert driver.execute_script(
            "return document.images.length > 0 && "
            "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        pixels = image.imread(io.BytesIO(driver.get_screenshot_as_png()), format="png")
    finally:
        driver.quit()
    assert pixels.shape[0] > 500 and pixels[..., :3].std() > 0.05  # not a blank page
    assert len({tuple(p) for p in pixels[::17, ::17, :3].reshape(-1, 3).round(2)}) > 20


def test_every_design_of_the_sweep_side_has_a_report_description():
    from ablate.ablation import DESIGNS as BUILT
    from ablate.report.designs import DESIGNS, RUNS, SEARCH, choose_design

    assert set(BUILT) == set(DESIGNS)
    for name in BUILT:
        assert choose_design({"design": name}, {}) is DESIGNS[name]
        assert DESIGNS[name].title == "Ablation report"
    assert choose_design({"design": None, "distributions": {"lr": "{}"}}, {}) is SEARCH
    assert choose_design({}, {"arm_source": "trial number"}) is SEARCH
    assert choose_design({}, {}) is RUNS
    assert choose_design({"design": "new_design"}, {}).name == "new_design"  # reported without extras


def test_intervals_that_only_give_a_sign_read_and_draw():
    from ablate.analysis.paired import OPEN_ZERO
    from ablate.report.figures import effect_chart
    from ablate.report.format import fmt_ci, metric_format

    fmt = metric_format("best_val_acc", "val_acc")
    assert fmt_ci(fmt, OPEN_ZERO, np.inf, diff=True) == "(0, +∞)"
    assert fmt_ci(fmt, -np.inf, -OPEN_ZERO, diff=True) == "(-∞, 0)"
    assert fmt_ci(fmt, -np.inf, np.inf, diff=True) == "(-∞, +∞)"
    assert fmt_ci(fmt, 0.01, 0.03, diff=True) == "[1.00, 3.00]"
    assert fmt_ci(fmt, np.nan, 0.03, diff=True) == "—"
    png = effect_chart(["a", "b", "c", "d"], [2.0, -1.0, 0.3, 0.5], [OPEN_ZERO, -np.inf, -0.4, np.nan],
                       [np.inf, -OPEN_ZERO, 1.0, np.nan],
                       verdicts=["helps", "hurts", "no effect", "unresolved"], xlabel="effect (pts)")
    assert png.startswith(b"\x89PNG")


# --- the report on the study's MLflow parent run ------------------------------------------------------


def _parent(uri: str, study: str) -> Any:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    (parent,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`{records.TAG_KIND}` = '{records.KIND_STUDY}' "
                      f"and tags.`{records.TAG_STUDY}` = '{study}'")
    return parent


def test_the_report_is_logged_on_the_study_parent_run(store, tmp_path):
    from mlflow.tracking import MlflowClient

    md, _ = write_report("abl", out=tmp_path / "reports", tracking_uri=store)
    written = {p.name for p in md.parent.iterdir()}
    assert {"report.md", "report.html"} < written and any(n.endswith(".png") for n in written)
    parent = _parent(store, "abl").info.run_id
    names = {a.path for a in MlflowClient(tracking_uri=store).list_artifacts(parent)}
    assert names == written | {records.ARTIFACT_STUDY}


def _chrome(chromium: str, chromedriver: str, profile: Path, width: int = 1280) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", f"--window-size={width},1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(chromedriver), options=options)


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _require_chromium() -> tuple[str, str]:
    import shutil

    from conftest import require_service

    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    require_service(bool(chromium and chromedriver),
                    "no headless Chromium: apt-get install chromium chromium-driver (.ci/run does)")
    pytest.importorskip("selenium", reason="selenium is in the dev extras")
    assert chromium and chromedriver
    return chromium, chromedriver


@pytest.mark.slow
def test_mlflow_ui_opens_the_runs_table_and_lists_the_report(store, tmp_path):
    """In a real browser against ``ablate ui``: the study's experiment opens on its runs table (not
    MLflow 3's GenAI overview) and the parent run's artifacts list report.html."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    chromium, chromedriver = _require_chromium()
    write_report("abl", out=tmp_path / "reports", tracking_uri=store)
    parent = _parent(store, "abl")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    with (tmp_path / "ui.log").open("w") as log:
        server = subprocess.Popen([sys.executable, "-m", "ablate.cli", "ui", "--port", str(port),
                                   f"tracking.uri={store}"], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    driver = None
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while not _answers(f"{base}health"):
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "ui.log").read_text()
            time.sleep(0.5)
        driver = _chrome(chromium, chromedriver, tmp_path / "profile")

        def body(d: Any) -> str:
            return str(d.execute_script("return document.body.innerText"))

        experiment = parent.info.experiment_id
        assert '"Model training"' in (tmp_path / "ui.log").read_text()  # what ablate ui says to choose
        driver.get(base)
        WebDriverWait(driver, 90, poll_frequency=1).until(
            lambda d: d.find_elements(By.XPATH, "//*[normalize-space(text())='Model training']"),
        ).pop().click()
        driver.get(f"{base}#/experiments")  # the user clicks the study's experiment
        WebDriverWait(driver, 90, poll_frequency=1).until(
            lambda d: d.find_elements(By.LINK_TEXT, "abl")).pop().click()
        WebDriverWait(driver, 90, poll_frequency=1).until(lambda d: "Run Name" in body(d))
        assert f"/experiments/{experiment}/runs" in driver.current_url, driver.current_url
        driver.get(f"{base}#/experiments/{experiment}/runs/{parent.info.run_id}/artifacts")
        WebDriverWait(driver, 90, poll_frequency=1).until(lambda d: "report.html" in body(d))
        assert "study.json" in body(driver) and "report.md" in body(driver)
    finally:
        if driver is not None:
            driver.quit()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def test_the_html_report_fits_a_1280_px_window_without_hiding_columns(store, tmp_path):
    """At 1280 px the page never scrolls sideways and every table shows its last column: wide tables
    wrap their cells (the per-arm table's gap, diverged and wall-time columns were behind a scrollbar)."""
    chromium, chromedriver = _require_chromium()
    (html,) = write_report("abl", out=tmp_path / "reports", tracking_uri=store, formats="html")
    driver = _chrome(chromium, chromedriver, tmp_path / "profile", width=1280)
    try:
        driver.get(html.as_uri())
        page = driver.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth]")
        tables = driver.execute_script("""
            return Array.from(document.querySelectorAll('table')).map(t => {
                const th = t.rows[0].cells;
                const last = th[th.length - 1].getBoundingClientRect();
                return [th[0].textContent + '..' + th[th.length - 1].textContent, th.length,
                        last.right, t.scrollWidth, t.clientWidth];
            })""")
    finally:
        driver.quit()
    assert page[0] <= page[1], page
    assert any(n >= 8 for _, n, *_ in tables)  # the per-arm table is among them
    for name, _, right, scroll, client in tables:
        assert right <= page[1], (name, right, page[1])  # within the window...
        assert scroll <= client + 1, (name, scroll, client)  # ...and not behind the table's scrollbar


def test_the_demo_report_folder_is_untracked_and_the_example_report_is_kept_elsewhere():
    """``make demo`` writes reports/ablation_digits/: a fresh clone must stay clean after it, so that
    folder is ignored and the committed example lives where the demo does not write."""
    import shutil
    import subprocess

    root = Path(__file__).resolve().parent.parent
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)

    assert git("check-ignore", "-q", "reports/ablation_digits/report.html").returncode == 0
    assert git("ls-files", "reports").stdout == ""
    kept = git("ls-files", "docs/example-report").stdout.split()
    assert {"docs/example-report/report.md", "docs/example-report/report.html"} <= set(kept)
    assert "docs/example-report/report.md" in (root / "README.md").read_text()


@pytest.mark.parametrize("server", ["http://127.0.0.1:5000", "https://mlflow.example.org/"])
def test_run_ids_link_to_their_mlflow_run_page_when_the_store_is_an_http_server(store, server):
    from mlflow.tracking import MlflowClient

    collected = collect("abl", tracking_uri=store)
    client = MlflowClient(tracking_uri=store)
    links = {rid: f"{server.rstrip('/')}/#/experiments/{client.get_run(rid).info.experiment_id}/runs/{rid}"
             for rid in collected.runs["run_id"]}
    linked = build_report(collected.runs, collected.history, collected.spec,
                          dict(collected.meta, tracking_uri=server), figures=False)
    page = render_html(linked)
    md, _ = render_markdown(linked)
    for rid, url in links.items():
        assert f'<a href="{html.escape(url)}">{rid}</a>' in page
        assert f"[{rid}]({url})" in md
    assert "Content-Security-Policy" in page
    plain = build_report(collected.runs, collected.history, collected.spec, collected.meta, figures=False)
    assert "<a " not in render_html(plain)  # a SQLite store has no page to link to
    assert "](" not in render_markdown(plain)[0]


def test_a_link_cell_is_escaped_and_only_http_targets_become_links():
    table = render.Table(["run"], [[render.Link("<b>x</b>", 'http://h/#/r?a="1"&b=<2>')],
                                   [render.Link("y", "javascript:alert(1)")],
                                   [render.Link("z)", "http://h/a b)")]])
    data = render.ReportData(title="t", header=[], sections=[render.Section("s", blocks=[table])])
    page = render_html(data)
    assert '<a href="http://h/#/r?a=&quot;1&quot;&amp;b=&lt;2&gt;">&lt;b&gt;x&lt;/b&gt;</a>' in page
    assert "javascript:" not in page and "<td>y</td>" in page  # shown as plain text
    md, _ = render_markdown(data)
    assert "[z)](http://h/a%20b%29)" in md and "%221%22" in md and "javascript" not in md
