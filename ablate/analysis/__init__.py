"""Statistics over tables of runs: what each trick contributes, with honest uncertainty.

Everything here is a pure function of pandas DataFrames (no MLflow, no torch), so it can be
used from a notebook as well as from the report.

Inputs:

* ``runs``: one row per run with ``run_id``, ``arm`` (the design cell: ``"reference"``,
  ``"-norm"``, ``"+dropout"``), ``seed`` (the same seed list in every arm, so runs pair by
  seed) and metric columns (``best_val_acc``, ``test_acc``, ``val_acc``, ``train_acc``,
  ``epochs_run``, ``train_time``, ...; NaN = diverged / unknown) and ``stop_reason``
  (``completed | early_stopped | diverged | stopped | pruned``).
* ``history``: long format, one row per (run, metric, epoch): ``run_id``, ``metric``,
  ``step`` (1-based epoch), ``value``.

Conventions:

* Tables "by arm" are indexed by ``arm`` in order of first appearance in ``runs``.
* Paired contrasts (:func:`compare`) use the t-interval of the mean difference by default, the
  inversion of the paired t-test behind their p-values (so the CI excludes 0 exactly when
  p < 1 - ci), plus simultaneous intervals that agree with the Holm-adjusted p-values
  (:func:`holm_intervals`). The bootstrap intervals, chosen with ``method=``, cover only about
  75 % at 3 pairs; ``benchmarks/bench_coverage.py`` measures every method.
* :func:`verdicts` turns one family of contrasts (a :func:`compare` or :func:`factorial_effects`
  table) into ``helps`` / ``hurts`` (Holm at alpha, respecting the metric's direction),
  ``no effect`` (TOST within a margin, Bonferroni over the family) or ``unresolved`` with an
  estimate of the additional seeds per arm that would resolve it.
* The other confidence intervals are bootstrap intervals computed with vectorised resampling (one
  ``numpy`` index matrix per sample size, never a Python loop over resamples). By default the
  levels of the percentile interval of a *mean* are widened for small samples, the "expanded
  percentile" bootstrap (Hesterberg 2015, *What teachers should know about the bootstrap*):
  the plain percentile interval of a mean is too narrow by the factors ``sqrt((n-1)/n)`` and
  ``z/t_{n-1}`` and covers only about 90 % at n = 10 seeds and 85 % at n = 5 when 95 % is
  asked for. ``method="percentile"`` gives the textbook interval.
* A bootstrap with a given ``seed`` depends only on the values resampled, never on the other
  arms or comparisons in the same call: each column is resampled with the index matrix that
  ``bootstrap_ci(values, seed=seed)`` would draw.

The modules, one job each (this package re-exports their public names):

============  ====================================================================================
intervals     t-intervals and t-tests of means: t_interval, t_test; bootstrap confidence intervals
              (vectorised resampling, expanded levels): bootstrap_ci
arms          per-arm tables of runs: arm_summary, overfitting, stability, cost; check_single
paired        paired-by-seed contrasts of arms: Comparison, compare, holm, holm_intervals
curves        learning curves: epochs_to_target, convergence
factorial     replicated 2^k designs: factorial_effects
verdicts      a verdict per contrast (helps, hurts, no effect by TOST within a margin, unresolved
              with the seeds it needs): verdicts, default_margin
adaptive      adaptive seeds: the rule after each round (next_round, Round) and verdicts valid under
              optional stopping (sequential_verdicts, look_levels, looks)
search        hyperparameter searches: expected_best, typed_params, param_importance (Optuna, lazily),
              confirmed_means (the best trials' means over more seeds, with t-intervals)
_checks       the argument and frame checks the others share
============  ====================================================================================
"""

from __future__ import annotations

from ablate.analysis.adaptive import Round, look_levels, looks, next_round, sequential_verdicts
from ablate.analysis.arms import arm_summary, check_single, cost, overfitting, stability
from ablate.analysis.curves import convergence, epochs_to_target
from ablate.analysis.factorial import factorial_effects
from ablate.analysis.intervals import bootstrap_ci, t_interval, t_test
from ablate.analysis.paired import Comparison, compare, holm, holm_intervals
from ablate.analysis.search import confirmed_means, expected_best, param_importance, typed_params
from ablate.analysis.verdicts import default_margin, verdicts

__all__ = [
    "Comparison",
    "Round",
    "arm_summary",
    "bootstrap_ci",
    "check_single",
    "compare",
    "confirmed_means",
    "convergence",
    "cost",
    "default_margin",
    "epochs_to_target",
    "expected_best",
    "factorial_effects",
    "holm",
    "holm_intervals",
    "look_levels",
    "looks",
    "next_round",
    "overfitting",
    "param_importance",
    "sequential_verdicts",
    "stability",
    "t_interval",
    "t_test",
    "typed_params",
    "verdicts",
]
