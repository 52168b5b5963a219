"""Hyperparameter importance of a search's COMPLETE trials, per objective, under two of Optuna's
evaluators (search.analysis writes it with the other charts); imported only for an analysis that
computes it, since Optuna's evaluators import scikit-learn."""
from __future__ import annotations

import json
import os

import optuna
from optuna.importance import BaseImportanceEvaluator, FanovaImportanceEvaluator, PedAnovaImportanceEvaluator
from optuna.importance import get_param_importances

from search.analysis import STEADY_COMPLETE, TOP_PARAMS, Charts, slug


def evaluators() -> dict[str, BaseImportanceEvaluator]:
    """The importance evaluators by file name: PED-ANOVA and fANOVA (seeded: the same numbers each time)."""
    return {"ped_anova": PedAnovaImportanceEvaluator(), "fanova": FanovaImportanceEvaluator(seed=0)}


def importance(copies: list[optuna.Study], objectives: list[str], n_complete: int, charts: Charts) -> list[str]:
    """Per objective and evaluator: the importances (importance.json) and their bar chart; the
    summary lines with the top parameters under both evaluators."""
    numbers = {name: {key: get_param_importances(single, evaluator=evaluator)
                      for key, evaluator in evaluators().items()}
               for name, single in zip(objectives, copies)}
    lines = [f"Importance over the {n_complete} completed trials only (PED-ANOVA / fANOVA; the top {TOP_PARAMS} "
             f"by PED-ANOVA):"]
    if n_complete < STEADY_COMPLETE:
        lines.append(f"  (rough with fewer than {STEADY_COMPLETE} completed trials: PED-ANOVA's top 10% is then "
                     f"fewer than 5 trials)")
    for name, single in zip(objectives, copies):
        for key in evaluators():
            charts.add(f"importance_{slug(name)}_{key}", "plot_param_importances", single,
                       evaluator=_Fixed(numbers[name][key]), target_name=name)
        ped, fanova = numbers[name]["ped_anova"], numbers[name]["fanova"]
        lines.append(f"  {name} ({single.direction.name.lower()}):")
        lines += [f"    {param:<28} {ped[param]:.3f}  {fanova.get(param, 0.0):.3f}" for param in list(ped)[:TOP_PARAMS]]
    described = {"ped_anova": "optuna.importance.PedAnovaImportanceEvaluator(): the top 10% of trials against all",
                 "fanova": "optuna.importance.FanovaImportanceEvaluator(seed=0)"}
    with open(os.path.join(charts.folder, "importance.json"), "w") as f:
        json.dump({"trials": f"COMPLETE only ({n_complete})", "evaluators": described, "importance": numbers}, f,
                  indent=2)
    return lines


class _Fixed(BaseImportanceEvaluator):
    """An importance 'evaluator' returning numbers already computed, so a chart is not a second
    (and for fANOVA, slow) evaluation."""

    def __init__(self, importances: dict[str, float]):
        self.importances = importances

    def evaluate(self, study, params=None, *, target=None) -> dict[str, float]:
        return dict(self.importances)
