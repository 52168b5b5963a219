"""TPE that learns from the trials the scheduler stopped: it sees each as completed with the objective
values of its last epoch, while the study keeps it PRUNED (as MLflow keeps its run KILLED)."""
from __future__ import annotations

import copy

from optuna.samplers import TPESampler
from optuna.trial import FrozenTrial, TrialState

INTERMEDIATE_ATTR = "intermediate/"  # + metric: a trial's user attribute {epoch: value} with several objectives


def last_values(trial: FrozenTrial, metrics: list[str] | None) -> list[float] | None:
    """The objective values of the last epoch for which the trial reported every objective: its
    intermediate values with one objective, its "intermediate/<metric>" attributes with several
    (`metrics`, the study's metric names); None when there is no such epoch."""
    if not metrics or len(metrics) == 1:
        steps = trial.intermediate_values
        return [steps[max(steps)]] if steps else None
    curves = [trial.user_attrs.get(INTERMEDIATE_ATTR + metric) or {} for metric in metrics]
    epochs = set.intersection(*(set(curve) for curve in curves))
    if not epochs:
        return None
    last = max(epochs, key=int)
    return [curve[last] for curve in curves]


def seen_complete(trial: FrozenTrial, metrics: list[str] | None) -> FrozenTrial:
    """A PRUNED trial with values as a COMPLETE copy holding its last epoch's values; any other
    trial as it is."""
    values = last_values(trial, metrics) if trial.state == TrialState.PRUNED else None
    if values is None:
        return trial
    seen = copy.copy(trial)
    seen.state, seen.values = TrialState.COMPLETE, values
    return seen


class _StoppedSeenComplete:
    """A study as the sampler reads it: every trial through seen_complete; all else is the study's."""

    def __init__(self, study):
        self._study, self._metrics = study, study.metric_names

    def __getattr__(self, name: str):
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states=None, use_cache: bool = False) -> list[FrozenTrial]:
        read = None if states is None else {*states, TrialState.PRUNED} if TrialState.COMPLETE in states else states
        trials = [seen_complete(t, self._metrics)
                  for t in self._study._get_trials(deepcopy=deepcopy, states=read, use_cache=use_cache)]
        return trials if states is None else [t for t in trials if t.state in states]

    def get_trials(self, deepcopy: bool = True, states=None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states)


class StoppedTrialsTPE(TPESampler):
    """Optuna's TPESampler fed each stopped (PRUNED) trial as a completed one with its last epoch's
    objective values, ranked with the completed ones. Plain TPE ranks stopped trials after every
    completed one; with several objectives Optuna holds no intermediate values, so it puts every
    stopped trial among the bad ones however good its front was when it stopped
    (docs/benchmarks.md, section 2)."""

    def sample_relative(self, study, trial, search_space):
        return super().sample_relative(_StoppedSeenComplete(study), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return super().sample_independent(_StoppedSeenComplete(study), trial, param_name, param_distribution)
