"""Ray Tune's OptunaSearch, made safe to resume after the driver was killed at any moment, and
telling Optuna how each trial really ended."""
from __future__ import annotations

import warnings

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from mlflow_server.selection import finite, last_epoch, reached_budget
from search.tpe import INTERMEDIATE_ATTR
from trainables.registry import flat_config

TRIAL_ID_ATTR = "trial_id"  # Optuna user attribute: the Ray trial id (the MLflow run's tag medtune.trial_id)
RUN_ID_ATTR = "mlflow_run_id"  # Optuna user attribute: the id of the trial's MLflow run


class ResumableOptunaSearch(OptunaSearch):
    """OptunaSearch whose Optuna states match the MLflow statuses, and whose restored copy takes
    over the asks its killed predecessor left behind.

    Ray's OptunaSearch tells COMPLETE for every trial that ended with a result, including one
    the scheduler stopped early. Here the state follows the rule of mlflow_server.selection,
    as the tracker's: COMPLETE (MLflow FINISHED) with the last epoch's values when the trial
    reached train/epochs, PRUNED (KILLED) when it was stopped before, FAIL (FAILED) when it
    raised, whatever it reported before. Optuna accepts only finite values: a trial that
    reached its budget with a NaN or missing objective is FAIL (MLflow FINISHED, but never
    eligible as best). Every epoch's objective values go to the study: as intermediate values
    (step = epoch) with one objective, as user attributes "intermediate/<metric>" ({epoch:
    value}) with several, which Optuna cannot take as intermediate values. Each Optuna trial
    holds its Ray trial id as user attribute "trial_id".

    Optuna writes an asked trial to its storage at once (RUNNING), while Ray saves the searcher
    only at its next experiment checkpoint. A driver killed in between leaves RUNNING trials
    that no Ray trial holds. After a restore, the next asks re-attach them in order: the new
    Ray trial gets the same Optuna trial, with the values already sampled for it, so the study
    ends with exactly one Optuna trial per Ray trial and none left RUNNING.

    Given `runs` (mlflow_server.records.TrialRuns), each Optuna trial also holds the id of its
    MLflow run as user attribute "mlflow_run_id", set as it ends (when the server answers then).
    """

    _runs = None  # a searcher saved before runs were passed restores without them

    def __init__(self, *args, runs=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._runs = runs
        self._orphans: list[int] = []  # storage ids of RUNNING Optuna trials no Ray trial holds
        self._configs: dict[str, dict] = {}  # Ray trial id -> the flat config suggested for it
        self._epochs: dict[str, dict[str, dict[int, float]]] = {}  # Ray trial id -> metric -> epoch -> value
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._ot_study.set_metric_names(self._objectives)

    @property
    def _objectives(self) -> list[str]:
        return self._metric if isinstance(self._metric, list) else [self._metric]

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        held = {trial._trial_id for trial in self._ot_trials.values()}
        running = self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        self._orphans = [t._trial_id for t in running if t._trial_id not in held]

    def suggest(self, trial_id: str) -> dict | None:
        if trial_id not in self._ot_trials and self._orphans:
            self._ot_trials[trial_id] = optuna.Trial(self._ot_study, self._orphans.pop(0))
        config = super().suggest(trial_id)
        self._configs[trial_id] = flat_config(config)
        self._ot_trials[trial_id].set_user_attr(TRIAL_ID_ATTR, trial_id)
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._completed_trials:
            self._record(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Tell the trial's end (see the class doc); its last result, which Ray does not pass to
        on_trial_result when the scheduler stops the trial on it, is recorded first."""
        if trial_id in self._completed_trials:
            return
        if result:
            self._record(trial_id, result)
        if self._runs and (run_id := self._runs.run_id(trial_id)):
            self._ot_trials[trial_id].set_user_attr(RUN_ID_ATTR, run_id)
        state, values = self._ending(trial_id, result, error)
        self._ot_study.tell(self._ot_trials[trial_id], values, state=state)
        self._completed_trials.add(trial_id)

    def _ending(self, trial_id: str, result: dict | None, error: bool) -> tuple[TrialState, list | None]:
        if error:
            return TrialState.FAIL, None
        if not reached_budget(result, self._configs.get(trial_id, {})):
            return TrialState.PRUNED, None  # Optuna keeps the last intermediate value (one objective)
        values = [result.get(metric) for metric in self._objectives]
        return (TrialState.COMPLETE, values) if all(map(finite, values)) else (TrialState.FAIL, None)

    def _record(self, trial_id: str, result: dict) -> None:
        """The result's finite objective values at its epoch, each epoch once (an epoch re-trained
        after a retry keeps its first value, as in MLflow)."""
        epoch, trial = last_epoch(result), self._ot_trials[trial_id]
        seen = self._epochs.setdefault(trial_id, {})
        for metric in self._objectives:
            values = seen.setdefault(metric, {})
            if epoch in values or not finite(result.get(metric)):
                continue
            values[epoch] = float(result[metric])
            if len(self._objectives) == 1:
                trial.report(values[epoch], epoch)
            else:
                trial.set_user_attr(INTERMEDIATE_ATTR + metric, {str(e): v for e, v in sorted(values.items())})
