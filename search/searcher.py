"""Ray Tune's OptunaSearch, made safe to resume after the driver was killed at any moment."""
from __future__ import annotations

import optuna
from ray.tune.search.optuna import OptunaSearch


class ResumableOptunaSearch(OptunaSearch):
    """OptunaSearch whose restored copy takes over the asks its killed predecessor left behind.

    Optuna writes an asked trial to its storage at once (RUNNING), while Ray saves the searcher
    only at its next experiment checkpoint. A driver killed in between leaves RUNNING trials
    that no Ray trial holds. After a restore, the next asks re-attach them in order: the new
    Ray trial gets the same Optuna trial, with the values already sampled for it, so the study
    ends with exactly one Optuna trial per Ray trial and none left RUNNING.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._orphans: list[int] = []  # storage ids of RUNNING Optuna trials no Ray trial holds

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        held = {trial._trial_id for trial in self._ot_trials.values()}
        running = self._ot_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        self._orphans = [t._trial_id for t in running if t._trial_id not in held]

    def suggest(self, trial_id: str) -> dict | None:
        if trial_id not in self._ot_trials and self._orphans:
            self._ot_trials[trial_id] = optuna.Trial(self._ot_study, self._orphans.pop(0))
        return super().suggest(trial_id)
