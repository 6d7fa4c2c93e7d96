"""What collect makes of MLflow's records, without MLflow: the spec with every key, arms from
params, the tag filter and MLflow's filter strings.

Pure functions, so they are tested (and usable) without a store; :mod:`ablate.report.collect`
re-exports them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from ablate import records
from ablate.errors import AblateError
from ablate.space import distributions_json

__all__ = ["derive_arms", "normalise_spec", "parse_tag_filter", "quote", "unique"]

# Params that differ between runs without changing the recipe: they never make an arm.
_NOT_RECIPE_PREFIXES = ("tracking.", records.PARAM_SAMPLED)
_NOT_RECIPE = {"seed", "trainer.device", "trainer.threads", "data.root"}


def normalise_spec(spec: Mapping[str, Any] | None, *, name: str, design: str | None,
                   arms: Iterable[str] = (), seeds: Iterable[int] = ()) -> dict[str, Any]:
    """Every key the report reads, with what the tags and runs say where the spec is silent.

    Keys: name, metric, direction, design, arms, seeds, comparisons, factors, params, distributions,
    fixed, experiment, resolve (``{margin, confidence}``; an older study's is empty), adaptive
    (``{start, step, max}`` of adaptive seeds, else None), repeats (a search's seeds per trial, 1).
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
        "resolve": dict(spec.get("resolve") or {}),
        "adaptive": dict(spec["adaptive"]) if isinstance(spec.get("adaptive"), Mapping) else None,
        "repeats": int(spec.get("repeats") or 1),
    }
    if out["design"] is None and out["params"] and not out["distributions"]:
        # An older study recorded its search space only as grammar strings: parse them again.
        # An older space grammar this version cannot parse: no importances.
        with contextlib.suppress(Exception):
            out["distributions"] = distributions_json(out["params"], out["fixed"])
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


def parse_tag_filter(tag: str) -> tuple[str, str]:
    """``"key=value"`` -> ``("key", "value")``.

    Raises:
        AblateError: no ``=`` or an empty key.
    """
    key, sep, value = tag.partition("=")
    if not sep or not key.strip():
        raise AblateError(f"--tag: {tag!r} is not allowed; expected KEY=VALUE (e.g. dataset=digits)")
    return key.strip(), value.strip()


def quote(value: str) -> str:
    """``value`` as a string of MLflow's filter grammar."""
    # MLflow's filter grammar takes single-quoted strings; a quote inside is doubled-escaped with \'.
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def unique(values: Iterable[Any]) -> list[str]:
    """The distinct values as sorted strings, None and NaN left out."""
    return sorted({str(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))})
