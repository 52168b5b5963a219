"""A compact live view of an experiment: trial counts by state and the best result so far."""
from __future__ import annotations

import math
import sys
import time

from ray.tune import Callback


class LiveView(Callback):
    """Prints one status line whenever a trial starts, ends, fails, or (at most every
    `interval` seconds) reports an epoch. The best result shown is that of a trial that
    has not failed: a failed trial's epochs never count as best."""

    def __init__(self, primary: str, mode: str, total: int, epochs: int, interval: float = 5.0, stream=None):
        self.primary, self.mode, self.total, self.epochs = primary, mode, total, epochs
        self.interval, self.stream = interval, stream
        self.start, self.last_print = time.monotonic(), 0.0
        self.results: dict[str, float] = {}  # trial id -> its best primary value so far

    def __getstate__(self) -> dict:
        return {**self.__dict__, "stream": None}

    def _better(self, value: float, than: float) -> bool:
        return value > than if self.mode == "max" else value < than

    @property
    def best(self) -> tuple[float, str] | None:
        """(value, trial id) of the best result of a trial that has not failed."""
        if not self.results:
            return None
        trial_id = (max if self.mode == "max" else min)(self.results, key=self.results.get)
        return self.results[trial_id], trial_id

    def _print(self, trials, event: str = "", ending=None, status: str = "TERMINATED") -> None:
        """ending: a trial whose end is being reported; Ray sets its status only afterwards."""
        counts = {"done": 0, "stopped": 0, "running": 0, "pending": 0, "failed": 0}
        for t in trials:
            t_status = status if t is ending else t.status
            if t_status == "ERROR":
                counts["failed"] += 1
            elif t_status == "TERMINATED":
                done = t.last_result.get("epoch", 0) >= t.config.get("train", {}).get("epochs", self.epochs)
                counts["done" if done else "stopped"] += 1
            elif t_status == "RUNNING":
                counts["running"] += 1
            else:
                counts["pending"] += 1
        elapsed = int(time.monotonic() - self.start)
        best = self.best
        best = f"best {self.primary} {best[0]:.4f} ({best[1]})" if best else "no result yet"
        line = (f"[{elapsed // 60:3d}:{elapsed % 60:02d}] {len(trials)}/{self.total} trials: "
                + ", ".join(f"{n} {state}" for state, n in counts.items()) + f" | {best}")
        print(line + (f" | {event}" if event else ""), file=self.stream or sys.stdout, flush=True)
        self.last_print = time.monotonic()

    def setup(self, **info):
        self.start = time.monotonic()  # also after a restore, which unpickles this callback

    def on_trial_start(self, iteration, trials, trial, **info):
        self._print(trials, f"{trial.trial_id} started")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.primary)
        if isinstance(value, (int, float)) and math.isfinite(value):
            previous = self.results.get(trial.trial_id)
            if previous is None or self._better(value, previous):
                self.results[trial.trial_id] = float(value)
        if time.monotonic() - self.last_print >= self.interval:
            self._print(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._print(trials, f"{trial.trial_id} ended at epoch {trial.last_result.get('epoch', 0)}", ending=trial)

    def on_trial_recover(self, iteration, trials, trial, **info):
        where = f"its epoch-{trial.last_result.get('epoch', 0)} checkpoint" if trial.checkpoint else "the start"
        self._print(trials, f"{trial.trial_id} failed, retrying from {where}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.results.pop(trial.trial_id, None)
        self._print(trials, f"{trial.trial_id} FAILED", ending=trial, status="ERROR")
