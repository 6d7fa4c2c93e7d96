"""Ablation designs: which arms to train so that each trick's contribution can be measured.

A design turns a reference recipe and a list of tricks into arms (named sets of overrides), and
says which pairs of arms measure each trick (``with`` minus ``without``, paired by seed):

- ``leave_one_out``: the reference, and the reference with each trick switched off.
- ``add_one_in``: a baseline with every trick off, and the baseline with each trick on alone.
- ``cumulative``: the baseline, then the tricks added one after another in the listed order (the
  "Bag of Tricks" table); each step is measured against the one before.
- ``factorial``: every on/off combination of the tricks (up to 6): main effects and interactions.

Every arm runs with the same seeds, so comparisons are paired.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ablate.errors import ConfigError
from ablate.menu import OFF_VALUES
from ablate.space import format_override

__all__ = ["DESIGNS", "Design", "build_design"]

DESIGNS = ("leave_one_out", "add_one_in", "cumulative", "factorial")
MAX_FACTORIAL_TRICKS = 6


@dataclass(frozen=True)
class Design:
    """Arms and the comparisons that measure each trick.

    Attributes:
        arms: ``{arm name: [overrides]}``, in run order.
        comparisons: ``[{"label", "with_arm", "without_arm"}]``: what each trick contributes.
        factors: factorial designs only: ``{trick label: {arm name: on?}}``.
    """

    arms: dict[str, list[str]]
    comparisons: list[dict[str, str]]
    factors: dict[str, dict[str, bool]] = field(default_factory=dict)


def _override(key: str, value: Any) -> str:
    return format_override(key, value)


def _tricks(tricks: Any) -> dict[str, Any]:
    """``[norm, dropout]`` or ``{norm: null, optimizer: sgd}`` -> ``{path: off value}``."""
    if isinstance(tricks, (list, tuple)):
        tricks = dict.fromkeys(tricks)
    if not isinstance(tricks, Mapping) or not tricks:
        raise ConfigError("tricks", tricks, "a list of config paths, or a mapping path -> off value")
    resolved = {}
    for key, off in tricks.items():
        if off is None:
            if key not in OFF_VALUES:
                raise ConfigError(f"tricks.{key}", None, "an off value: the menu has none for "
                                  f"{key}; write it as `{key}: <off value>` (menu: "
                                  + ", ".join(OFF_VALUES) + ")")
            off = OFF_VALUES[key]
        resolved[str(key)] = off
    return resolved


def build_design(design: str, *, reference: Mapping[str, Any], tricks: Any) -> Design:
    """Arms and comparisons of ``design`` around ``reference`` (``{config path: value}``).

    Each trick's "on" value is its value in the reference; its "off" value is given, or the menu's.

    Raises:
        ConfigError: unknown design, a trick without an off value, a trick the reference does not
            switch on, or too many tricks for a factorial design.
    """
    if design not in DESIGNS:
        raise ConfigError("design", design, "one of: " + ", ".join(DESIGNS))
    off = _tricks(tricks)
    on: dict[str, Any] = {}
    for key, off_value in off.items():
        if key not in reference:
            raise ConfigError(f"tricks.{key}", off_value, f"a trick the reference sets (add {key} "
                              "to reference: ... with its on value)")
        if reference[key] == off_value:
            raise ConfigError(f"reference.{key}", reference[key], f"an on value (it equals the off value "
                              f"of trick {key})")
        on[key] = reference[key]
    if design == "factorial" and len(off) > MAX_FACTORIAL_TRICKS:
        raise ConfigError("tricks", list(off), f"at most {MAX_FACTORIAL_TRICKS} tricks for a factorial "
                          "design (2^k arms)")
    labels = {k: _override(k, on[k]) for k in off}
    common = [_override(k, v) for k, v in reference.items() if k not in off]

    def arm(switched_on: set[str]) -> list[str]:
        return common + [_override(k, on[k] if k in switched_on else off[k]) for k in off]

    keys = list(off)
    arms: dict[str, list[str]] = {}
    comparisons: list[dict[str, str]] = []
    factors: dict[str, dict[str, bool]] = {}
    if design == "leave_one_out":
        arms["reference"] = arm(set(keys))
        for k in keys:
            name = f"-{labels[k]}"
            arms[name] = arm(set(keys) - {k})
            comparisons.append({"label": labels[k], "with_arm": "reference", "without_arm": name})
    elif design == "add_one_in":
        arms["baseline"] = arm(set())
        for k in keys:
            name = f"+{labels[k]}"
            arms[name] = arm({k})
            comparisons.append({"label": labels[k], "with_arm": name, "without_arm": "baseline"})
    elif design == "cumulative":
        arms["baseline"] = arm(set())
        previous = "baseline"
        for i, k in enumerate(keys):
            name = f"+{labels[k]}"
            arms[name] = arm(set(keys[: i + 1]))
            comparisons.append({"label": labels[k], "with_arm": name, "without_arm": previous})
            previous = name
    else:
        for combo in itertools.product((False, True), repeat=len(keys)):
            switched = {k for k, flag in zip(keys, combo, strict=True) if flag}
            name = " + ".join(labels[k] for k in keys if k in switched) or "baseline"
            arms[name] = arm(switched)
            for k in keys:
                factors.setdefault(labels[k], {})[name] = k in switched
        everything = " + ".join(labels[k] for k in keys)
        for k in keys:  # the leave-one-out reading of the full factorial, for the plain-language lines
            without = " + ".join(labels[j] for j in keys if j != k) or "baseline"
            comparisons.append({"label": labels[k], "with_arm": everything, "without_arm": without})
    return Design(arms=arms, comparisons=comparisons, factors=factors)
