"""Hyperparameter searches: expected best score of n trials, which parameters matter, and the
confirmed best (the best trials' means over more seeds).

The only analysis module that imports Optuna, and only inside the functions that need it (it costs
~1 s at start-up): :func:`typed_params` reads a search's sampled values back as Optuna values,
:func:`param_importance` runs Optuna's importance evaluators on them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ablate.analysis._checks import numeric, one_line, require_frame
from ablate.analysis.intervals import CHUNK_ELEMENTS, t_interval
from ablate.errors import AblateError
from ablate.records import PARAM_SAMPLED

if TYPE_CHECKING:
    from optuna.study import Study
    from optuna.trial import FrozenTrial

# Optuna's PED-ANOVA documentation: "it is preferable to include at least 5 trials above
# target_quantile"; with fewer, its importances describe a handful of points, not a trend.
_PED_MIN_TOP_TRIALS = 5
_PED_TARGET_QUANTILE = 0.1  # PedAnovaImportanceEvaluator's default
_EVALUATORS = ("fanova", "ped_anova", "mean_decrease_impurity")


def expected_best(values: Any, *, n_max: int | None = None, maximize: bool = True) -> np.ndarray:
    """Expected best score of n random trials (Dodge et al. 2019, *Show your work*).

    The n trials are i.i.d. draws from the empirical distribution of ``values``. With the values
    sorted ascending, ``v_(1) <= ... <= v_(N)``,

        E[max of n] = sum_i v_(i) * ((i/N)^n - ((i-1)/N)^n)

    and the minimum (``maximize=False``) is the same formula on the negated values. n = 1 gives
    the mean; the curve is non-decreasing (non-increasing for a minimum) and tends to the best
    value as n grows.

    Args:
        values: 1-D array-like of validation scores; NaNs are dropped.
        n_max: Largest n (may exceed the sample size); default the number of non-NaN values.
        maximize: Expect the maximum (True) or the minimum (False).

    Returns:
        Array of length ``n_max``: entry n-1 is the expected best of n trials; all NaN when no
        value remains.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = np.sort(v[~np.isnan(v)])
    if not maximize:
        v = np.sort(-v)
    size = v.size
    if n_max is None:
        n_max = size
    if isinstance(n_max, bool) or not isinstance(n_max, (int, np.integer)) or n_max < 0:
        raise AblateError(f"n_max: {n_max!r} is not allowed; expected an integer >= 1 or None")
    if size == 0:
        return np.full(n_max, np.nan)
    # Abel summation of the closed form: E[max of n] = v_(N) - sum_{i<N} (i/N)^n (v_(i+1) - v_(i)),
    # so only the gaps between sorted values matter and terms with (i/N)^n below e^-45
    # (~3e-20 of the value range) can be skipped, which keeps n_max = N = 10^4 fast.
    log_cdf = np.log(np.arange(1, size) / size)
    gaps = np.diff(v)
    used = gaps > 0  # ties add nothing
    log_cdf, gaps = log_cdf[used], gaps[used]
    out = np.empty(n_max)
    start = 1
    while start <= n_max:
        live = start * log_cdf > -45.0  # shrinks as n grows: (i/N)^n decreases in n
        rows = max(1, CHUNK_ELEMENTS // max(1, int(live.sum())))
        n = np.arange(start, min(start + rows, n_max + 1), dtype=np.float64)[:, None]
        out[start - 1:start - 1 + n.shape[0]] = v[-1] - np.exp(n * log_cdf[live]) @ gaps[live]
        start += n.shape[0]
    return out if maximize else -out


def confirmed_means(runs: pd.DataFrame, column: str, *, group: str, ci: float = 0.95,
                    maximize: bool = True) -> pd.DataFrame:
    """Each confirmed configuration's mean over its seeds, with the t-interval of that mean.

    A search's best trial is one seed: retrained on more seeds (``confirm:``), each configuration's
    runs are a sample of its seed-to-seed spread, and ``mean ± t_{n-1, 1-alpha/2} · sd / sqrt(n)``
    (:func:`~ablate.analysis.intervals.t_interval`, exact under normal noise at any n >= 2) says how
    well that mean is known. NaN values (diverged runs) are left out of ``n``.

    Args:
        runs: One row per run, with the ``group`` column (the configuration: the search trial it
            confirms) and the ``column`` value.
        column: The value (``best_val_acc``).
        group: The column naming each run's configuration.
        ci: The interval's level.
        maximize: Best is the highest mean (else the lowest).

    Returns:
        Columns ``group``, ``n``, ``mean``, ``std``, ``ci_low``, ``ci_high``, best mean first (a
        group without a value last); bounds NaN below 2 values.
    """
    require_frame(runs, "runs", [group, column])
    if not 0.0 < ci < 1.0:
        raise AblateError(f"ci: {ci!r} is not allowed; expected a level in (0, 1) such as 0.95")
    values = numeric(runs, column, "runs")
    keys = list(dict.fromkeys(runs[group].tolist()))
    samples = [values[(runs[group] == k).to_numpy()].dropna().to_numpy(dtype=np.float64) for k in keys]
    low, high = t_interval(samples, 1.0 - ci)
    out = pd.DataFrame({group: keys, "n": [len(x) for x in samples],
                        "mean": [float(x.mean()) if len(x) else math.nan for x in samples],
                        "std": [float(x.std(ddof=1)) if len(x) > 1 else math.nan for x in samples],
                        "ci_low": low, "ci_high": high})
    return out.sort_values("mean", ascending=not maximize, na_position="last", kind="stable") \
              .reset_index(drop=True)


def _importances(study: Any, evaluator: Any) -> dict[str, float]:
    import optuna

    return optuna.importance.get_param_importances(study, evaluator=evaluator)


def typed_params(runs: pd.DataFrame,
                 distributions: Mapping[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A search's sampled values as Optuna values, ready for :func:`param_importance`.

    MLflow params are strings: each column is converted back by its distribution (a categorical's
    choices by their text, anything else to a number; unreadable values are NaN).

    Args:
        runs: One row per trial, with ``params.sampled.<key>`` (else ``params.<key>``, else ``<key>``).
        distributions: ``{key: distribution}``, as Optuna distribution JSON or objects; one this
            Optuna cannot read is left out.

    Returns:
        ``(values, distributions)``: one column per key found in ``runs``, indexed like ``runs``,
        and the distribution objects of those keys.
    """
    # Optuna is imported only when a search is analysed (it costs ~1 s at start-up).
    from optuna.distributions import CategoricalDistribution, json_to_distribution

    dists: dict[str, Any] = {}
    for key, raw in distributions.items():
        try:
            dists[key] = json_to_distribution(raw) if isinstance(raw, str) else raw
        except Exception:  # noqa: BLE001, S112 - a distribution this Optuna cannot read: leave it out
            continue
    table = pd.DataFrame(index=runs.index)
    for key, dist in dists.items():
        names = (f"params.{PARAM_SAMPLED}{key}", f"params.{key}", key)
        column = next((c for c in names if c in runs.columns), None)
        if column is None:
            continue
        raw = runs[column]
        if isinstance(dist, CategoricalDistribution):
            lookup = {str(c): c for c in dist.choices}
            table[key] = [lookup.get(str(v), math.nan) if v is not None else math.nan for v in raw]
            table[key] = table[key].astype(object)
        else:
            table[key] = pd.to_numeric(raw, errors="coerce")
    return table, {k: v for k, v in dists.items() if k in table.columns}


def param_importance(trials: pd.DataFrame, distributions: Mapping[str, Any], metric: str, *,
                     maximize: bool = True,
                     evaluators: Sequence[str] = ("fanova", "ped_anova")) -> pd.DataFrame:
    """Hyperparameter importances of a sweep, from Optuna's evaluators.

    The trials are loaded into an in-memory Optuna study (trials with a NaN metric skipped; a NaN
    parameter value is treated as "not sampled", i.e. a conditional parameter).

    * ``fanova``: ``FanovaImportanceEvaluator(seed=0)`` (random-forest functional ANOVA: the
      share of the metric's variance explained by each parameter).
    * ``ped_anova``: ``PedAnovaImportanceEvaluator()`` (which parameters matter to reach the
      top 10 % of trials). Its column is NaN when it raises, returns nothing, or fewer than 5
      trials lie in that top 10 % (Optuna's own advice; in practice below ~41 trials), since its
      importances then describe a handful of points.
    * ``mean_decrease_impurity``: ``MeanDecreaseImpurityImportanceEvaluator(seed=0)``.

    Any evaluator that raises leaves its column NaN. Importances are normalised to sum to 1.

    Args:
        trials: One row per trial: a column per searched parameter and the metric column.
        distributions: ``{parameter: optuna distribution}``.
        metric: Objective column.
        maximize: Direction of the objective.
        evaluators: Names among ``fanova``, ``ped_anova``, ``mean_decrease_impurity``.

    Returns:
        Columns ``param`` and one per evaluator, sorted by the first evaluator descending.
    """
    names = list(distributions)
    require_frame(trials, "trials", [*names, metric])
    evaluators = _check_evaluators(evaluators)
    objective = numeric(trials, metric, "trials")
    finite = np.isfinite(objective.to_numpy())
    n_trials = int(finite.sum())
    if n_trials < 2:
        raise AblateError(f"trials: {n_trials} trial(s) with a finite {metric}; importances need at least 2")
    built = _frozen_trials(trials.loc[finite, names], objective[finite], distributions)
    study = _study(built, maximize=maximize)
    out = pd.DataFrame({"param": names})
    for name in evaluators:
        result = _evaluate(study, name, n_trials)
        out[name] = [float(result[p]) if p in result else math.nan for p in names]
    return out.sort_values(evaluators[0], ascending=False, na_position="last", kind="stable") \
              .reset_index(drop=True)


def _check_evaluators(evaluators: Sequence[str]) -> list[str]:
    """The evaluator names as a list, refusing an empty one or unknown names."""
    evaluators = list(evaluators)
    unknown = [e for e in evaluators if e not in _EVALUATORS]
    if unknown or not evaluators:
        raise AblateError(f"evaluators: {unknown or evaluators!r} is not allowed; expected names "
                          f"among {', '.join(_EVALUATORS)}")
    return evaluators


def _frozen_trials(params: pd.DataFrame, objective: pd.Series,
                   distributions: Mapping[str, Any]) -> list[FrozenTrial]:
    """One finished Optuna trial per row; a None or NaN value is a parameter not sampled."""
    import optuna

    names = list(distributions)
    built = []
    for row, value in zip(params.itertuples(index=False), objective, strict=True):
        sampled = {}
        for name, raw in zip(names, row, strict=False):  # as before: a duplicated column is not checked
            if raw is None or (isinstance(raw, float) and math.isnan(raw)):
                continue
            sampled[name] = raw.item() if isinstance(raw, np.generic) else raw
        try:
            built.append(optuna.trial.create_trial(
                params=sampled, distributions={n: distributions[n] for n in sampled}, value=float(value)))
        except ValueError as error:
            raise AblateError(f"trials: a row does not fit the distributions: {one_line(error)}") from None
    return built


def _study(built: list[FrozenTrial], *, maximize: bool) -> Study:
    """An in-memory study holding the trials, created without Optuna's INFO log line."""
    import optuna

    # create_study logs at INFO; quieten it for this call only and restore the caller's level.
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize" if maximize else "minimize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    study.add_trials(built)
    return study


def _evaluate(study: Study, name: str, n_trials: int) -> dict[str, float]:
    """Importances from evaluator ``name``; empty when it raises or PED-ANOVA has too few top trials."""
    import optuna

    factories: dict[str, Callable[[], Any]] = {
        "fanova": lambda: optuna.importance.FanovaImportanceEvaluator(seed=0),
        "ped_anova": lambda: optuna.importance.PedAnovaImportanceEvaluator(),
        "mean_decrease_impurity": lambda: optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=0),
    }
    result: dict[str, float] = {}
    enough = name != "ped_anova" or math.ceil(_PED_TARGET_QUANTILE * n_trials) >= _PED_MIN_TOP_TRIALS
    if enough:
        with warnings.catch_warnings():
            # Optuna warns about small samples; the NaN rule above is what we report.
            warnings.simplefilter("ignore")
            try:
                result = _importances(study, factories[name]())
            except Exception:  # noqa: BLE001 - a failing evaluator is reported as NaN, per docstring
                result = {}
    return result
