"""Read a study (or a set of plain runs) back from MLflow into the frames the report works on.

Two ways in:

- a study name: its MLflow parent run (tags ``ablate.kind=study``, ``optuna.study=<name>``), its
  ``study.json`` artifact (the spec) and its child runs (``mlflow.parentRunId``);
- an experiment name and/or a tag filter (``ablate train -m`` runs, which have no parent): the arm of a
  run is then the combination of params that differ between the selected runs, ``seed`` excluded.

Only finished runs (MLflow status FINISHED, not pruned) enter the tables; diverged runs are finished
runs and stay in, so stability can count them. Every other run is counted in ``meta["counts"]``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablate.errors import AblateError

__all__ = ["HISTORY_METRICS", "Collected", "collect", "derive_arms", "normalise_spec", "parse_tag_filter"]

HISTORY_METRICS = ("val_acc", "train_acc", "val_loss", "train_loss")
"""Per-epoch metrics read back for every run (plus every ``grad_norm/<layer>``)."""

# Params that differ between runs without changing the recipe: they never make an arm.
_NOT_RECIPE_PREFIXES = ("tracking.", "sampled.")
_NOT_RECIPE = {"seed", "trainer.device", "trainer.threads", "data.root"}
# Run states as the report counts them; MLflow FINISHED runs carry ours in the ``status`` tag.
_KEPT_STATES = ("finished", "diverged")
_PAGE = 5000


@dataclass
class Collected:
    """What the report needs from MLflow, already in the report's schema.

    Attributes:
        runs: One row per finished run: ``run_id``, ``run_name``, ``arm``, ``seed``, ``state``,
            ``dataset``, ``stop_reason``, every non-layer metric (latest value: the last epoch for
            per-epoch metrics, the only value for final ones), ``params.<key>`` and ``tags.<key>``.
        history: Long format ``run_id, metric, step, value`` for :data:`HISTORY_METRICS` and
            ``grad_norm/*`` of the runs in ``runs``.
        spec: The study spec (see :func:`normalise_spec`), or None for plain runs.
        parent_run_id: The study's MLflow parent run, if any.
        meta: Header facts: name, source, tracking_uri, experiments, counts (by state, all runs),
            versions, hardware, commits, started, ended.
    """

    runs: pd.DataFrame
    history: pd.DataFrame
    spec: dict[str, Any] | None
    parent_run_id: str | None
    meta: dict[str, Any] = field(default_factory=dict)


def parse_tag_filter(tag: str) -> tuple[str, str]:
    """``"key=value"`` -> ``("key", "value")``.

    Raises:
        AblateError: no ``=`` or an empty key.
    """
    key, sep, value = tag.partition("=")
    if not sep or not key.strip():
        raise AblateError(f"--tag: {tag!r} is not allowed; expected KEY=VALUE (e.g. dataset=digits)")
    return key.strip(), value.strip()


def _quote(value: str) -> str:
    # MLflow's filter grammar takes single-quoted strings; a quote inside is doubled-escaped with \'.
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _search(client: Any, experiment_ids: Sequence[str], filter_string: str) -> list[Any]:
    """Every run matching ``filter_string`` (all pages)."""
    from mlflow.entities import ViewType

    if not experiment_ids:
        return []
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(list(experiment_ids), filter_string, run_view_type=ViewType.ACTIVE_ONLY,
                                  max_results=_PAGE, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _state(run: Any) -> str:
    """finished | diverged | pruned | failed | killed | running, from our tag and MLflow's status."""
    status = run.info.status.lower()
    tag = (run.data.tags.get("status") or "").lower()
    if status == "finished":
        if tag in ("pruned", "diverged"):
            return tag
        if run.data.tags.get("optuna.state") == "PRUNED":
            return "pruned"
        return "finished"  # tag "finished" (train) or "completed" (a study trial)
    if status == "scheduled":
        return "running"
    return status  # failed | killed | running


@contextmanager
def _no_progress_bar() -> Iterator[None]:
    """MLflow draws a download progress bar on stderr; a report reading one small file needs none."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _read_artifact(client: Any, run_id: str, path: str) -> str | None:
    try:
        names = {a.path for a in client.list_artifacts(run_id)}
        if path not in names:
            return None
        with tempfile.TemporaryDirectory() as tmp, _no_progress_bar():
            local = client.download_artifacts(run_id, path, tmp)
            return Path(local).read_text(encoding="utf-8")
    except Exception:  # noqa: BLE001 - an unreadable artifact store: fall back to what the tags say
        return None


def _load_spec(client: Any, parent: Any) -> dict[str, Any] | None:
    """The parent's ``study.json``; else the older ``study.yaml`` (metric, direction, params)."""
    text = _read_artifact(client, parent.info.run_id, "study.json")
    if text is not None:
        try:
            loaded = json.loads(text)
        except ValueError:
            loaded = None
        if isinstance(loaded, dict):
            return loaded
    text = _read_artifact(client, parent.info.run_id, "study.yaml")
    if text is not None:
        try:
            import yaml

            loaded = yaml.safe_load(text)
        except Exception:  # noqa: BLE001 - a malformed study.yaml: fall back to the tags
            loaded = None
        if isinstance(loaded, dict):
            return {k: loaded[k] for k in ("name", "metric", "direction", "params", "fixed", "experiment")
                    if k in loaded}
    return None


def normalise_spec(spec: Mapping[str, Any] | None, *, name: str, design: str | None,
                   arms: Iterable[str] = (), seeds: Iterable[int] = ()) -> dict[str, Any]:
    """Every key the report reads, with what the tags and runs say where the spec is silent.

    Keys: name, metric, direction, design, arms, seeds, comparisons, factors, params, distributions,
    fixed, experiment.
    """
    spec = dict(spec or {})
    chosen = spec.get("design", design) or design
    seeds_given = spec.get("seeds")
    if isinstance(seeds_given, int):  # a study file's "seeds: 5" means 0..4
        seeds_given = list(range(seeds_given))
    out: dict[str, Any] = {
        "name": spec.get("name") or name,
        "metric": spec.get("metric") or "val_acc",
        "direction": spec.get("direction") or "maximize",
        "design": None if chosen in (None, "", "search", "none") else str(chosen),
        "arms": dict(spec.get("arms") or {a: [] for a in arms}),
        "seeds": [int(s) for s in (seeds_given or sorted(set(seeds)))],
        "comparisons": [dict(c) for c in spec.get("comparisons") or []],
        "factors": {k: dict(v) for k, v in (spec.get("factors") or {}).items()},
        "params": dict(spec.get("params") or {}),
        "distributions": dict(spec.get("distributions") or {}),
        "fixed": dict(spec.get("fixed") or {}),
        "experiment": spec.get("experiment"),
    }
    if out["design"] is None and out["params"] and not out["distributions"]:
        # An older study recorded its search space only as grammar strings: parse them again.
        try:
            from optuna.distributions import distribution_to_json

            from ablate.space import parse_space

            dists = parse_space(out["params"], out["fixed"]).distributions
            out["distributions"] = {k: distribution_to_json(d) for k, d in dists.items()}
        except Exception:  # noqa: BLE001, S110 - an older space grammar this version cannot parse: no importances
            pass
    return out


def derive_arms(params: pd.DataFrame) -> pd.Series:
    """Name each run's arm by the params that differ between runs (``seed`` and paths excluded).

    ``params`` has one row per run and one column per param (missing = NaN). A key under a config
    group (``optimizer.betas``) is left out of the name when its group's ``.name`` also differs and
    determines it, so ``optimizer=adam`` reads ``optimizer.name=adam`` rather than listing every
    field Adam brings along. Runs that share every param form one arm, ``all runs``.

    Returns:
        The arm of each run (``"norm=batch, optimizer.name=adam"``), indexed like ``params``.
    """
    keep = [c for c in params.columns
            if c not in _NOT_RECIPE and not c.startswith(_NOT_RECIPE_PREFIXES)]
    frame = params[keep].astype(object).where(params[keep].notna(), "∅")
    varying = [c for c in frame.columns if frame[c].nunique(dropna=False) > 1]
    names = set(varying)
    implied = []
    for col in varying:
        group = col.rsplit(".", 1)[0] if "." in col else None
        selector = f"{group}.name" if group else None
        if (selector and selector != col and selector in names
                and (frame.groupby(selector)[col].nunique() <= 1).all()):
            implied.append(col)
    shown = [c for c in sorted(varying) if c not in implied]
    if not shown:
        return pd.Series("all runs", index=params.index, dtype=object)
    parts = [col + "=" + frame[col].astype(str) for col in shown]
    arm = parts[0]
    for p in parts[1:]:
        arm = arm + ", " + p
    return arm.astype(object)


def _history(client: Any, run_ids: Sequence[str], keys: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """One ``get_metric_history`` call per run and metric (about 2 ms each on a local SQLite store).

    Sequential on purpose: the time goes to MLflow's Python-side ORM work, which holds the GIL, so
    threads measured no faster on a 200-run store.
    """
    rid_col, key_col, steps, values = [], [], [], []
    for rid in run_ids:
        for key in keys[rid]:
            for m in client.get_metric_history(rid, key):
                rid_col.append(rid)
                key_col.append(key)
                steps.append(m.step)
                values.append(m.value)
    frame = pd.DataFrame({"run_id": pd.Series(rid_col, dtype=object),
                          "metric": pd.Series(key_col, dtype=object),
                          "step": np.asarray(steps, dtype=np.int64),
                          "value": np.asarray(values, dtype=np.float64)})
    return frame.sort_values(["run_id", "metric", "step"], kind="stable").reset_index(drop=True)


def _experiments(client: Any) -> list[Any]:
    from mlflow.entities import ViewType

    return list(client.search_experiments(view_type=ViewType.ACTIVE_ONLY))


def _run_row(run: Any) -> dict[str, Any]:
    tags, params = run.data.tags, run.data.params
    row: dict[str, Any] = {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name or "",
        "state": _state(run),
        "dataset": tags.get("dataset"),
        "stop_reason": tags.get("stop_reason"),
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
    }
    for key, value in run.data.metrics.items():
        if not key.startswith(("grad_norm/", "act_std/")):
            row[key] = value
    for key, value in params.items():
        row[f"params.{key}"] = value
    for key, value in tags.items():
        if not key.startswith("mlflow.") or key in ("mlflow.parentRunId", "mlflow.source.git.commit"):
            row[f"tags.{key}"] = value
    return row


def _unique(values: Iterable[Any]) -> list[str]:
    return sorted({str(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))})


def collect(study: str | None, *, tracking_uri: str, experiment: str | None = None,
            tag: str | None = None) -> Collected:
    """Read a study, or the runs of an experiment / tag filter, from the MLflow store at ``tracking_uri``.

    Args:
        study: The study name (``optuna.study`` tag of its parent run); None selects plain runs by
            ``experiment`` and/or ``tag``.
        tracking_uri: The MLflow store (``sqlite:///mlflow.db``).
        experiment: Restrict to this MLflow experiment (required, or ``tag``, when ``study`` is None).
        tag: ``KEY=VALUE``: keep runs whose tag KEY equals VALUE.

    Returns:
        The finished runs, their histories, the spec and header facts.

    Raises:
        AblateError: unknown study or experiment, nothing selected, no finished run, runs of mixed
            datasets or metrics.
    """
    from mlflow.tracking import MlflowClient

    from ablate.analysis import check_single

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        experiments = _experiments(client)
    except Exception as exc:  # noqa: BLE001 - any store error becomes one line
        raise AblateError(f"tracking.uri: cannot read MLflow store {tracking_uri} "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    exp_names = sorted(e.name for e in experiments)
    listing = ", ".join(exp_names) or "none"
    if experiment is not None:
        chosen = [e for e in experiments if e.name == experiment]
        if not chosen:
            raise AblateError(f"experiment: {experiment!r} is not in {tracking_uri} (experiments: {listing})")
    else:
        chosen = experiments
    exp_ids = [e.experiment_id for e in chosen]
    tag_clause = ""
    if tag is not None:
        key, value = parse_tag_filter(tag)
        tag_clause = f"tags.`{key}` = {_quote(value)}"

    parent = None
    spec_raw: dict[str, Any] | None = None
    if study is not None:
        is_parent = f"tags.`ablate.kind` = 'study' and tags.`optuna.study` = {_quote(study)}"
        parents = _search(client, exp_ids, is_parent)
        if parents:
            # A study resumed under another store keeps one parent per store; take the latest.
            parent = max(parents, key=lambda r: r.info.start_time or 0)
            where = f"tags.`mlflow.parentRunId` = {_quote(parent.info.run_id)}"
            if tag_clause:
                where += f" and {tag_clause}"
            selected = _search(client, [parent.info.experiment_id], where)
            spec_raw = _load_spec(client, parent)
        else:
            # No parent (deleted, or an older layout): the trials still carry the study's name.
            where = f"tags.`optuna.study` = {_quote(study)}" + (f" and {tag_clause}" if tag_clause else "")
            selected = [r for r in _search(client, exp_ids, where)
                        if r.data.tags.get("ablate.kind") != "study"]
        if not selected:
            raise AblateError(f"study: {study!r} has no MLflow runs in {tracking_uri} "
                              f"(experiments: {listing})")
        name = study
    else:
        if experiment is None and tag is None:
            raise AblateError("study: none given; name a study, or select runs with --experiment "
                              "and/or --tag")
        selected = [r for r in _search(client, exp_ids, tag_clause)
                    if r.data.tags.get("ablate.kind") != "study"]
        what = f"experiment {experiment!r}" if experiment else "the store"
        if tag is not None:
            what += f" with tag {tag!r}"
        if not selected:
            raise AblateError(f"experiment: {what} has no runs in {tracking_uri} (experiments: {listing})")
        name = experiment or tag.replace("=", "-")  # type: ignore[union-attr]

    states = Counter(_state(r) for r in selected)
    kept = [r for r in selected if _state(r) in _KEPT_STATES]
    if not kept:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
        raise AblateError(f"runs: {name!r} has no finished runs in {tracking_uri} ({counts}); "
                          "only finished (or diverged) runs can be reported")

    runs = pd.DataFrame([_run_row(r) for r in kept])
    runs = runs.astype({c: object for c in runs.columns if c.startswith(("params.", "tags."))})
    seeds = pd.to_numeric(runs.get("params.seed"), errors="coerce") if "params.seed" in runs else None
    runs["seed"] = (seeds.fillna(-1).astype(np.int64) if seeds is not None
                    else pd.Series(-1, index=runs.index, dtype=np.int64))
    if "tags.ablate.arm" in runs and runs["tags.ablate.arm"].notna().all():
        runs["arm"] = runs["tags.ablate.arm"].astype(object)
        arm_source = "tag ablate.arm"
    elif parent is not None or ("tags.optuna.trial_number" in runs
                                and runs["tags.optuna.trial_number"].notna().all()):
        # A search: every trial is its own recipe.
        numbers = pd.to_numeric(runs.get("tags.optuna.trial_number"), errors="coerce")
        runs["arm"] = ["trial " + (str(int(n)) if not math.isnan(n) else rn)
                       for n, rn in zip(numbers, runs["run_name"])]
        arm_source = "trial number"
    else:
        params = runs[[c for c in runs.columns if c.startswith("params.")]]
        params = params.rename(columns=lambda c: c[len("params."):])
        runs["arm"] = derive_arms(params).to_numpy()
        arm_source = "differing params"

    if "dataset" in runs:
        check_single(runs, "dataset")
    # Runs gathered by experiment or tag may come from several studies: their metrics must agree
    # (plain runs optimise nothing of their own and fit any).
    if study is None and "tags.mlflow.parentRunId" in runs:
        objective: dict[str, Any] = {}
        for pid in _unique(runs["tags.mlflow.parentRunId"]):
            try:
                loaded = _load_spec(client, client.get_run(pid))
            except Exception:  # noqa: BLE001 - an unreadable parent: its runs fit any metric
                loaded = None
            objective[pid] = (loaded or {}).get("metric")
        check_single(pd.DataFrame({"metric": runs["tags.mlflow.parentRunId"].map(objective)}), "metric")

    keys = {}
    for r in kept:
        layer_keys = sorted(k for k in r.data.metrics if k.startswith("grad_norm/"))
        keys[r.info.run_id] = [k for k in HISTORY_METRICS if k in r.data.metrics] + layer_keys
    history = _history(client, runs["run_id"].tolist(), keys)

    design = parent.data.tags.get("ablate.design") if parent is not None else None
    spec = None
    if study is not None:
        spec = normalise_spec(spec_raw, name=study, design=design or None,
                              arms=sorted(runs["arm"].unique()), seeds=runs["seed"].tolist())
    used_exps = sorted({e.name for e in experiments
                        if e.experiment_id in {r.info.experiment_id for r in selected}})

    def tag_values(key: str) -> list[str]:
        return _unique(r.data.tags.get(key) for r in kept)

    excluded = [{"run_id": r.info.run_id, "run_name": r.info.run_name or "", "state": _state(r),
                 "arm": r.data.tags.get("ablate.arm")
                 or (f"trial {r.data.tags['optuna.trial_number']}" if "optuna.trial_number" in r.data.tags
                     else None),
                 "seed": r.data.params.get("seed", "")}
                for r in selected if _state(r) not in _KEPT_STATES]
    starts = [r.info.start_time for r in selected if r.info.start_time]
    ends = [r.info.end_time for r in selected if r.info.end_time]
    meta = {
        "name": name,
        "source": "study" if study is not None else ("experiment" if experiment else "tag"),
        "tracking_uri": tracking_uri,
        "experiments": used_exps,
        "tag": tag,
        "arm_source": arm_source,
        "counts": dict(sorted(states.items())),
        "excluded_runs": excluded,
        "versions": tag_values("ablate.versions"),
        "hardware": tag_values("ablate.hardware"),
        "commits": tag_values("mlflow.source.git.commit"),
        "started": min(starts) / 1000 if starts else None,
        "ended": max(ends) / 1000 if ends else None,
        "collected": time.time(),
    }
    return Collected(runs=runs, history=history, spec=spec,
                     parent_run_id=parent.info.run_id if parent is not None else None, meta=meta)
