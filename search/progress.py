"""A compact live view of an experiment: trial counts by state and the best result so far."""
from __future__ import annotations

import sys
import time

from ray.tune import Callback

from mlflow_server.selection import best, last_epoch, reached_budget
from mlflow_server.records import TrialRecord
from trainables.registry import flat_config


def finished(trial) -> bool:
    """Whether a Ray trial that ended reached its budget (the tracker's FINISHED)."""
    return reached_budget(trial.last_result, flat_config(trial.config))


class LiveView(Callback):
    """Prints one status line whenever a trial starts, ends, fails, or (at most every
    `interval` seconds) reports an epoch.

    The best result shown follows the rule of the summary and tune-export
    (mlflow_server.selection): only trials that ended having reached their budget
    (reached_budget), with every objective of their last epoch finite, ranked by the primary
    objective. A running, stopped or failed trial's epochs never count as best, so the line
    says "no finished trial yet" until one finishes.
    """

    def __init__(self, objectives: dict[str, str], total: int, interval: float = 5.0, stream=None):
        self.objectives, self.total = objectives, total
        self.primary = next(iter(objectives))
        self.interval, self.stream = interval, stream
        self.start, self.last_print = time.monotonic(), 0.0
        self.finished: dict[str, TrialRecord] = {}  # trial id -> its last epoch's objectives, once it finished

    def __getstate__(self) -> dict:
        return {**self.__dict__, "stream": None}

    def leader(self, trials) -> TrialRecord | None:
        """The best finished trial, ties going to the earlier trial."""
        return best([self.finished[t.trial_id] for t in trials if t.trial_id in self.finished], self.objectives)

    def _print(self, trials, event: str = "", ending=None, status: str = "TERMINATED") -> None:
        """ending: a trial whose end is being reported; Ray sets its status only afterwards."""
        counts = {"done": 0, "stopped": 0, "running": 0, "pending": 0, "failed": 0}
        for t in trials:
            t_status = status if t is ending else t.status
            if t_status == "ERROR":
                counts["failed"] += 1
            elif t_status == "TERMINATED":
                counts["done" if finished(t) else "stopped"] += 1
            elif t_status == "RUNNING":
                counts["running"] += 1
            else:
                counts["pending"] += 1
        elapsed = int(time.monotonic() - self.start)
        top = self.leader(trials)
        top = f"best {self.primary} {top.metrics[self.primary]:.4f} ({top.trial_id})" if top else "no finished trial yet"
        line = (f"[{elapsed // 60:3d}:{elapsed % 60:02d}] {len(trials)}/{self.total} trials: "
                + ", ".join(f"{n} {state}" for state, n in counts.items()) + f" | {top}")
        print(line + (f" | {event}" if event else ""), file=self.stream or sys.stdout, flush=True)
        self.last_print = time.monotonic()

    def setup(self, **info):
        self.start = time.monotonic()  # also after a restore, which unpickles this callback

    def on_trial_start(self, iteration, trials, trial, **info):
        self._print(trials, f"{trial.trial_id} started")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if time.monotonic() - self.last_print >= self.interval:
            self._print(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result
        if finished(trial):
            metrics = {key: result.get(key) for key in self.objectives}
            self.finished[trial.trial_id] = TrialRecord("", trial.trial_id, "FINISHED", {}, metrics)
        self._print(trials, f"{trial.trial_id} ended at epoch {last_epoch(result)}", ending=trial)

    def on_trial_recover(self, iteration, trials, trial, **info):
        saved = trial.latest_checkpoint_result  # the epoch of the checkpoint it restarts from (train/checkpoint_s)
        where = f"its epoch-{saved.metrics.get('epoch', 0)} checkpoint" if trial.checkpoint else "the start"
        self._print(trials, f"{trial.trial_id} failed, retrying from {where}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._print(trials, f"{trial.trial_id} FAILED", ending=trial, status="ERROR")
