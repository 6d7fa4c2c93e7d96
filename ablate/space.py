"""Search spaces: hydra-optuna-sweeper's grammar ⇄ Optuna distributions ⇄ Hydra overrides.

A study file's ``params`` maps a config path to an expression parsed by Hydra's own
``OverridesParser``:

========================================  ====================================================
expression                                Optuna distribution
========================================  ====================================================
``choice(a, b, c)``                       ``CategoricalDistribution([a, b, c])``
``shuffle(choice(...))`` / ``shuffle(range(...))``  the same as without ``shuffle`` (a sampler
                                          does not see an order)
``range(start, stop[, step])``            ``IntDistribution`` / ``FloatDistribution`` with
                                          ``step``; **stop is excluded, as in Python and in
                                          Hydra's basic sweeper**: ``range(1, 4)`` is 1, 2, 3
``interval(a, b)``                        ``FloatDistribution(a, b)``, both bounds included
``int(interval(a, b))``                   ``IntDistribution(a, b)``, both bounds included
``tag(log, interval(...))``               the same with ``log=True``
plain value (``0.1``, ``adam``)           fixed: the same override in every trial
========================================  ====================================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeGuard, cast

from ablate.config import is_group
from ablate.errors import ConfigError

if TYPE_CHECKING:
    from optuna.distributions import CategoricalChoiceType

__all__ = ["AblationSpace", "SearchSpace", "distributions_json", "fixed_overrides", "format_override",
           "parse_space"]


@dataclass(frozen=True)
class SearchSpace:
    """Distributions to sample and fixed overrides applied to every trial.

    Attributes:
        distributions: ``{config path: optuna distribution}``, in the study file's order.
        fixed: ``["path=value", ...]`` overrides that every trial shares.
    """

    distributions: dict[str, Any]
    fixed: list[str]

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """The Hydra overrides of one trial: the fixed ones, then each sampled value."""
        return [*self.fixed, *(format_override(k, params[k]) for k in self.distributions)]

    independent_groups = True  # each searched group's node can be composed on its own

    def split(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(config-group choices, field values)`` of one trial's parameters."""
        groups = {k: v for k, v in params.items() if is_group(k)}
        return groups, {k: v for k, v in params.items() if k not in groups}

    def representative(self) -> dict[str, Any]:
        """One valid value per parameter (the first choice, or the low end)."""
        from optuna.distributions import CategoricalDistribution

        out = {}
        for key, dist in self.distributions.items():
            out[key] = dist.choices[0] if isinstance(dist, CategoricalDistribution) else dist.low
        return out


def format_override(key: str, value: Any) -> str:
    """``key=value`` in Hydra's grammar, quoting strings that the grammar would misread."""
    if value is None:
        return f"{key}=null"
    if isinstance(value, bool):
        return f"{key}={'true' if value else 'false'}"
    if isinstance(value, float):
        short = f"{value:.12g}"  # 0.30000000000000004 -> 0.3; still parsed as a float
        if short.lstrip("-").isdigit():
            short += ".0"
        return f"{key}={short}"
    if isinstance(value, int):
        return f"{key}={value}"
    text = str(value)
    if text and all(c.isalnum() or c in "_-./:" for c in text) and text not in ("true", "false", "null"):
        return f"{key}={text}"
    return f"{key}='{text}'".replace("\\", "\\\\")


def _number(x: Any) -> TypeGuard[int | float]:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _range_distribution(key: str, start: Any, stop: Any, step: Any) -> Any:
    from optuna.distributions import FloatDistribution, IntDistribution

    if not (_number(start) and _number(stop) and _number(step)) or step <= 0:
        raise ConfigError(f"params.{key}", f"range({start}, {stop}, {step})",
                          "range(start, stop[, step]) with numbers and step > 0")
    count = math.ceil((stop - start) / step - 1e-9)
    if count < 1:
        raise ConfigError(f"params.{key}", f"range({start}, {stop}, {step})",
                          "a range with at least one value (stop is excluded)")
    if isinstance(start, int) and isinstance(stop, int) and isinstance(step, int):
        return IntDistribution(start, start + (count - 1) * step, step=step)
    last = start + (count - 1) * step
    return FloatDistribution(float(start), float(round(last, 12)), step=float(step))


def _distribution(key: str, value: Any) -> Any:
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    log = "log" in getattr(value, "tags", set())
    if isinstance(value, ChoiceSweep):
        if log:
            raise ConfigError(f"params.{key}", "tag(log, choice(...))", "log only on interval(...)")
        if not value.list:
            raise ConfigError(f"params.{key}", "choice()", "at least one choice")
        choices = [v if not isinstance(v, (list, dict)) else str(v) for v in value.list]
        # Hydra types ChoiceSweep.list with its QuotedString, but the parser has already replaced
        # quoted strings by str: the elements are plain str, int, float, bool or None.
        return CategoricalDistribution(cast("list[CategoricalChoiceType]", choices))
    if isinstance(value, RangeSweep):
        if log:
            raise ConfigError(f"params.{key}", "tag(log, range(...))",
                              "log only on interval(...): tag(log, interval(a, b))")
        return _range_distribution(key, value.start, value.stop, value.step)
    if isinstance(value, IntervalSweep):
        a, b = value.start, value.end
        if not (_number(a) and _number(b)) or a >= b or (log and a <= 0):
            raise ConfigError(f"params.{key}", f"interval({a}, {b})",
                              "interval(low, high) with low < high" + (" and low > 0 for log" if log else ""))
        if isinstance(a, int) and isinstance(b, int):
            return IntDistribution(a, b, log=log)
        return FloatDistribution(float(a), float(b), log=log)
    raise ConfigError(f"params.{key}", str(value), "choice(...), range(...), interval(...) or a plain value")


def _parse(parser: Any, key: str, value: Any, *, field: str) -> Any:
    """Parse ``key=value`` with Hydra's grammar; a string that it misreads is quoted."""
    texts = [f"{key}={value}"] if isinstance(value, str) else [format_override(key, value)]
    if isinstance(value, str) and field == "fixed":  # a plain text value: quote it if need be
        texts.append(format_override(key, value))
    error = ""
    for text in texts:
        try:
            override = parser.parse_override(text)
        except Exception as exc:  # noqa: BLE001 - Hydra's grammar errors are long; keep the first sentence
            error = " ".join(str(exc).split()).split(" See ")[0]
            continue
        override.input_line = text
        return override
    raise ConfigError(f"{field}.{key}", value, f"Hydra's sweep grammar ({error})")


def parse_space(params: Mapping[str, Any], fixed: Mapping[str, Any] | None = None) -> SearchSpace:
    """Parse a study's ``params`` (and plain ``fixed`` overrides) into a :class:`SearchSpace`.

    Raises:
        ConfigError: malformed grammar, an unusable range or interval, or an empty space.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    distributions: dict[str, Any] = {}
    fixed_list = fixed_overrides(fixed or {})
    for key, expression in params.items():
        override = _parse(parser, key, expression, field="params")
        text = override.input_line or format_override(key, expression)
        if override.is_sweep_override():
            distributions[key] = _distribution(key, override.value())
        else:
            fixed_list.append(text)
    if not distributions:
        raise ConfigError("params", dict(params), "at least one searched parameter "
                          "(choice(...), range(...) or interval(...))")
    return SearchSpace(distributions, fixed_list)


def distributions_json(params: Mapping[str, Any], fixed: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The searched distributions of ``params`` as Optuna distribution JSON, ``{key: json}``.

    What a study's ``study.json`` records; the report rebuilds it from the grammar for older studies.

    Raises:
        ConfigError: as :func:`parse_space`.
    """
    from optuna.distributions import distribution_to_json

    return {k: distribution_to_json(d) for k, d in parse_space(params, fixed).distributions.items()}


def fixed_overrides(fixed: Mapping[str, Any]) -> list[str]:
    """``{path: value}`` -> ``["path=value", ...]`` in Hydra's grammar; sweeps are refused."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out = []
    for key, value in fixed.items():
        override = _parse(parser, key, value, field="fixed")
        if override.is_sweep_override():
            raise ConfigError(f"fixed.{key}", value, "a single value (searched values go in params)")
        out.append(override.input_line or format_override(key, value))
    return out


@dataclass(frozen=True)
class AblationSpace:
    """The trials of an ablation: every arm with every seed, run as Optuna parameters ``arm`` and
    ``seed`` (queued in advance, so the sampler never chooses)."""

    arms: dict[str, list[str]]
    seeds: list[int]
    fixed: list[str]

    independent_groups = False  # an arm is a whole recipe, composed as one

    @property
    def distributions(self) -> dict[str, Any]:
        from optuna.distributions import CategoricalDistribution

        return {"arm": CategoricalDistribution(list(self.arms)), "seed": CategoricalDistribution(self.seeds)}

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """The fixed overrides, then the arm's (which win on the same key), then the seed."""
        merged: dict[str, str] = {}
        for text in [*self.fixed, *self.arms[params["arm"]], f"seed={params['seed']}"]:
            merged[text.split("=", 1)[0].lstrip("+~")] = text
        return list(merged.values())

    def split(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        return {"arm": params["arm"]}, {"seed": params["seed"]}

    def representative(self) -> dict[str, Any]:
        return {"arm": next(iter(self.arms)), "seed": self.seeds[0]}

    def trials(self) -> list[dict[str, Any]]:
        """Every (arm, seed), seed-major so that partial results stay balanced across arms."""
        return [{"arm": arm, "seed": seed} for seed in self.seeds for arm in self.arms]
