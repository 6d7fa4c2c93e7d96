"""Read a study (or a set of plain runs) back from MLflow into the frames the report works on.

Two ways in:

- a study name: its MLflow parent run (tags ``records.TAG_KIND = records.KIND_STUDY``,
  ``records.TAG_STUDY = <name>``), its ``records.ARTIFACT_STUDY`` artifact (the spec) and its child
  runs (``records.TAG_PARENT``);
- an experiment name and/or a tag filter (``ablate train -m`` runs, which have no parent): the arm of a
  run is then the combination of params that differ between the selected runs, ``seed`` excluded.

Only finished runs (:data:`ablate.records.KEPT_STATES`: MLflow status FINISHED, not pruned) enter the
tables; diverged runs are finished runs and stay in, so stability can count them. Every other run is
counted in ``meta["counts"]``. This is the report's only MLflow reader, and every name it reads is
a constant of :mod:`ablate.records`, the vocabulary the writer (:mod:`ablate.tracking`) uses.
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
import yaml

from ablate import records
from ablate.analysis import check_single
from ablate.errors import AblateError
from ablate.report.schema import derive_arms, normalise_spec, parse_tag_filter, quote, unique
from ablate.secrets import redact, redact_text

__all__ = ["HISTORY_METRICS", "Collected", "collect", "derive_arms", "normalise_spec", "parse_tag_filter"]

HISTORY_METRICS = ("val_acc", "train_acc", "val_loss", "train_loss")
"""Per-epoch metrics read back for every run (plus every ``grad_norm/<layer>``)."""

_LEGACY_SPEC = "study.yaml"  # what studies recorded before ARTIFACT_STUDY (metric, direction, params)
_KEPT_MLFLOW_TAGS = (records.TAG_PARENT, records.TAG_COMMIT)  # MLflow's own tags the runs frame keeps
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


def _search(client: Any, experiment_ids: Sequence[str], filter_string: str) -> list[Any]:
    """Every run matching ``filter_string`` (all pages)."""
    from mlflow.entities import ViewType  # mlflow costs ~2 s to import: only when a report is read

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
    return records.run_state(run.info.status, run.data.tags)


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
    """The parent's spec (``records.ARTIFACT_STUDY``); else the older ``study.yaml``."""
    text = _read_artifact(client, parent.info.run_id, records.ARTIFACT_STUDY)
    if text is not None:
        try:
            loaded = json.loads(text)
        except ValueError:
            loaded = None
        if isinstance(loaded, dict):
            return loaded
    text = _read_artifact(client, parent.info.run_id, _LEGACY_SPEC)
    if text is not None:
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError:  # a malformed study.yaml: fall back to the tags
            loaded = None
        if isinstance(loaded, dict):
            return {k: loaded[k] for k in ("name", "metric", "direction", "params", "fixed", "experiment")
                    if k in loaded}
    return None


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
    from mlflow.entities import ViewType  # deferred: see _search

    return list(client.search_experiments(view_type=ViewType.ACTIVE_ONLY))


def _run_row(run: Any) -> dict[str, Any]:
    tags, params = run.data.tags, run.data.params
    row: dict[str, Any] = {
        "run_id": run.info.run_id,
        "experiment_id": run.info.experiment_id,  # with the run id, its page in the MLflow UI
        "run_name": run.info.run_name or "",
        "state": _state(run),
        # Columns named after their tags: analysis reads them (ablate.analysis.stability).
        records.TAG_DATASET: tags.get(records.TAG_DATASET),
        records.TAG_STOP_REASON: tags.get(records.TAG_STOP_REASON),
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
    }
    for key, value in run.data.metrics.items():
        if not key.startswith(("grad_norm/", "act_std/")):
            row[key] = value
    for key, value in params.items():
        row[f"params.{key}"] = value
    for key, value in tags.items():
        if not key.startswith("mlflow.") or key in _KEPT_MLFLOW_TAGS:
            row[f"tags.{key}"] = value
    return row


@dataclass
class _Selection:
    """The runs a report covers, before they become frames."""

    name: str
    selected: list[Any]  # every run of the study / filter, any state
    parent: Any = None  # the study's parent run, if found
    spec_raw: dict[str, Any] | None = None


def _open(tracking_uri: str) -> tuple[Any, list[Any]]:
    """A client of the store and its experiments; a store that cannot be read is one line."""
    from mlflow.tracking import MlflowClient  # deferred: see _search

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        return client, _experiments(client)
    except Exception as exc:  # noqa: BLE001 - any store error becomes one line
        reason = redact_text(str(exc).splitlines()[0] if str(exc) else "", tracking_uri)
        raise AblateError(f"tracking.uri: cannot read MLflow store {redact(tracking_uri)} "
                          f"({type(exc).__name__}: {reason})") from None


def _listing(experiments: Sequence[Any]) -> str:
    return ", ".join(sorted(e.name for e in experiments)) or "none"


def _chosen_experiments(experiments: list[Any], experiment: str | None, tracking_uri: str) -> list[Any]:
    if experiment is None:
        return experiments
    chosen = [e for e in experiments if e.name == experiment]
    if not chosen:
        raise AblateError(f"experiment: {experiment!r} is not in {tracking_uri} "
                          f"(experiments: {_listing(experiments)})")
    return chosen


def _not_parent(runs: Iterable[Any]) -> list[Any]:
    return [r for r in runs if r.data.tags.get(records.TAG_KIND) != records.KIND_STUDY]


def _both(clause: str, tag_clause: str) -> str:
    return f"{clause} and {tag_clause}" if tag_clause else clause


def _select_study(client: Any, exp_ids: Sequence[str], study: str, tag_clause: str) -> _Selection:
    """A study's child runs (and its parent and spec), or, without a parent, the runs tagged with it."""
    is_parent = (f"tags.`{records.TAG_KIND}` = {quote(records.KIND_STUDY)} "
                 f"and tags.`{records.TAG_STUDY}` = {quote(study)}")
    parents = _search(client, exp_ids, is_parent)
    if not parents:
        # No parent (deleted, or an older layout): the trials still carry the study's name.
        where = _both(f"tags.`{records.TAG_STUDY}` = {quote(study)}", tag_clause)
        return _Selection(study, _not_parent(_search(client, exp_ids, where)))
    # A study resumed under another store keeps one parent per store; take the latest.
    parent = max(parents, key=lambda r: r.info.start_time or 0)
    where = _both(f"tags.`{records.TAG_PARENT}` = {quote(parent.info.run_id)}", tag_clause)
    selected = _search(client, [parent.info.experiment_id], where)
    return _Selection(study, selected, parent=parent, spec_raw=_load_spec(client, parent))


def _select(client: Any, experiments: list[Any], study: str | None, *, tracking_uri: str,
            experiment: str | None, tag: str | None) -> _Selection:
    """The runs to report: a study's, or those of an experiment and/or a tag filter."""
    listing = _listing(experiments)
    exp_ids = [e.experiment_id for e in _chosen_experiments(experiments, experiment, tracking_uri)]
    tag_clause = ""
    if tag is not None:
        key, value = parse_tag_filter(tag)
        tag_clause = f"tags.`{key}` = {quote(value)}"
    if study is not None:
        selection = _select_study(client, exp_ids, study, tag_clause)
        if not selection.selected:
            raise AblateError(f"study: {study!r} has no MLflow runs in {tracking_uri} "
                              f"(experiments: {listing})")
        return selection
    if experiment is None and tag is None:
        raise AblateError("study: none given; name a study, or select runs with --experiment and/or --tag")
    selected = _not_parent(_search(client, exp_ids, tag_clause))
    if not selected:
        what = f"experiment {experiment!r}" if experiment else "the store"
        if tag is not None:
            what += f" with tag {tag!r}"
        raise AblateError(f"experiment: {what} has no runs in {tracking_uri} (experiments: {listing})")
    return _Selection(experiment or str(tag).replace("=", "-"), selected)


def _kept(selection: _Selection, tracking_uri: str) -> list[Any]:
    """The runs the tables keep (:data:`ablate.records.KEPT_STATES`); none at all is an error."""
    kept = [r for r in selection.selected if _state(r) in records.KEPT_STATES]
    if not kept:
        states = Counter(_state(r) for r in selection.selected)
        counts = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
        raise AblateError(f"runs: {selection.name!r} has no finished runs in {tracking_uri} ({counts}); "
                          "only finished (or diverged) runs can be reported")
    return kept


def _trial_arms(runs: pd.DataFrame) -> list[str]:
    """A search's arms: every trial is its own recipe, ``trial <number>``; a confirmation run (another
    seed of a trial's recipe) belongs to the trial it confirms."""
    numbers = pd.to_numeric(runs.get(f"tags.{records.TAG_TRIAL_NUMBER}"), errors="coerce")
    confirm_tag = f"tags.{records.TAG_CONFIRM_OF}"
    if confirm_tag in runs:
        numbers = pd.to_numeric(runs[confirm_tag], errors="coerce").fillna(numbers)
    return ["trial " + (str(int(n)) if not math.isnan(n) else rn)
            for n, rn in zip(numbers, runs["run_name"], strict=True)]


def _runs_frame(kept: Sequence[Any], parent: Any) -> tuple[pd.DataFrame, str]:
    """One row per kept run, with its seed and arm; and where the arms came from."""
    runs = pd.DataFrame([_run_row(r) for r in kept])
    runs = runs.astype({c: object for c in runs.columns if c.startswith(("params.", "tags."))})
    seeds = pd.to_numeric(runs.get("params.seed"), errors="coerce") if "params.seed" in runs else None
    runs["seed"] = (seeds.fillna(-1).astype(np.int64) if seeds is not None
                    else pd.Series(-1, index=runs.index, dtype=np.int64))
    arm_tag, number_tag = f"tags.{records.TAG_ARM}", f"tags.{records.TAG_TRIAL_NUMBER}"
    if arm_tag in runs and runs[arm_tag].notna().all():
        runs["arm"] = runs[arm_tag].astype(object)
        return runs, f"tag {records.TAG_ARM}"
    if parent is not None or (number_tag in runs and runs[number_tag].notna().all()):
        runs["arm"] = _trial_arms(runs)
        return runs, "trial number"
    params = runs[[c for c in runs.columns if c.startswith("params.")]]
    runs["arm"] = derive_arms(params.rename(columns=lambda c: c[len("params."):])).to_numpy()
    return runs, "differing params"


def _check_objectives(client: Any, runs: pd.DataFrame) -> None:
    """Runs gathered by experiment or tag may come from several studies: their metrics must agree.

    (Plain runs optimise nothing of their own and fit any.)
    """
    parent_tag = f"tags.{records.TAG_PARENT}"
    if parent_tag not in runs:
        return
    objective: dict[str, Any] = {}
    for pid in unique(runs[parent_tag]):
        try:
            loaded = _load_spec(client, client.get_run(pid))
        except Exception:  # noqa: BLE001 - an unreadable parent: its runs fit any metric
            loaded = None
        objective[pid] = (loaded or {}).get("metric")
    check_single(pd.DataFrame({"metric": runs[parent_tag].map(objective)}), "metric")


def _history_of(client: Any, kept: Sequence[Any], runs: pd.DataFrame) -> pd.DataFrame:
    keys = {}
    for r in kept:
        layer_keys = sorted(k for k in r.data.metrics if k.startswith("grad_norm/"))
        keys[r.info.run_id] = [k for k in HISTORY_METRICS if k in r.data.metrics] + layer_keys
    return _history(client, runs["run_id"].tolist(), keys)


def _excluded(selected: Iterable[Any]) -> list[dict[str, Any]]:
    """The runs the tables leave out, for the appendix: id, name, state, arm, seed."""
    out = []
    for r in selected:
        state = _state(r)
        if state in records.KEPT_STATES:
            continue
        tags = r.data.tags
        arm = tags.get(records.TAG_ARM) or (f"trial {tags[records.TAG_TRIAL_NUMBER]}"
                                            if records.TAG_TRIAL_NUMBER in tags else None)
        out.append({"run_id": r.info.run_id, "experiment_id": r.info.experiment_id,
                    "run_name": r.info.run_name or "", "state": state, "arm": arm,
                    "seed": r.data.params.get("seed", "")})
    return out


def _meta(selection: _Selection, kept: Sequence[Any], experiments: Sequence[Any], *, source: str,
          tracking_uri: str, tag: str | None, arm_source: str) -> dict[str, Any]:
    """The header facts: where the runs came from, how many of each state, versions, dates."""
    selected = selection.selected
    used = {r.info.experiment_id for r in selected}
    starts = [r.info.start_time for r in selected if r.info.start_time]
    ends = [r.info.end_time for r in selected if r.info.end_time]

    def tag_values(key: str) -> list[str]:
        return unique(r.data.tags.get(key) for r in kept)

    return {
        "name": selection.name,
        "source": source,
        "tracking_uri": tracking_uri,
        "experiments": sorted({e.name for e in experiments if e.experiment_id in used}),
        "tag": tag,
        "arm_source": arm_source,
        "counts": dict(sorted(Counter(_state(r) for r in selected).items())),
        "excluded_runs": _excluded(selected),
        "versions": tag_values(records.TAG_VERSIONS),
        "hardware": tag_values(records.TAG_HARDWARE),
        "commits": tag_values(records.TAG_COMMIT),
        "started": min(starts) / 1000 if starts else None,
        "ended": max(ends) / 1000 if ends else None,
        "collected": time.time(),
        # adaptive seeds: why the study stopped adding seeds
        "stopped_because": (selection.parent.data.tags.get(records.TAG_SEEDS_STOP)
                            if selection.parent is not None else None),
    }


def collect(study: str | None, *, tracking_uri: str, experiment: str | None = None,
            tag: str | None = None) -> Collected:
    """Read a study, or the runs of an experiment / tag filter, from the MLflow store at ``tracking_uri``.

    Args:
        study: The study name (``records.TAG_STUDY`` tag of its parent run); None selects plain
            runs by ``experiment`` and/or ``tag``.
        tracking_uri: The MLflow store (``sqlite:///mlflow.db``).
        experiment: Restrict to this MLflow experiment (required, or ``tag``, when ``study`` is None).
        tag: ``KEY=VALUE``: keep runs whose tag KEY equals VALUE.

    Returns:
        The finished runs, their histories, the spec and header facts.

    Raises:
        AblateError: unknown study or experiment, nothing selected, no finished run, runs of mixed
            datasets or metrics.
    """
    client, experiments = _open(tracking_uri)
    tracking_uri = redact(tracking_uri)  # from here on only shown: in messages and the report's header
    selection = _select(client, experiments, study, tracking_uri=tracking_uri, experiment=experiment, tag=tag)
    kept = _kept(selection, tracking_uri)
    runs, arm_source = _runs_frame(kept, selection.parent)
    if records.TAG_DATASET in runs:
        check_single(runs, records.TAG_DATASET)
    if study is None:
        _check_objectives(client, runs)
    history = _history_of(client, kept, runs)
    spec = None
    if study is not None:
        design = selection.parent.data.tags.get(records.TAG_DESIGN) if selection.parent is not None else None
        spec = normalise_spec(selection.spec_raw, name=study, design=design or None,
                              arms=sorted(runs["arm"].unique()), seeds=runs["seed"].tolist())
    source = "study" if study is not None else ("experiment" if experiment else "tag")
    meta = _meta(selection, kept, experiments, source=source, tracking_uri=tracking_uri, tag=tag,
                 arm_source=arm_source)
    return Collected(runs=runs, history=history, spec=spec, meta=meta,
                     parent_run_id=selection.parent.info.run_id if selection.parent is not None else None)
