"""Multi-objective asynchronous successive halving (MO-ASHA, Schmucker et al. 2021) as a Ray Tune scheduler.

ASHA stops a trial at a rung when its primary objective falls below the rung's top 1/reduction_factor, so a
fast model that is slightly less accurate never reaches the Pareto front. Here a trial reaching a rung is
ranked among every trial recorded at that rung (itself included) on all objectives: by non-dominated
sorting (front 0 first), and within a front by crowding distance (NSGA-II; the extremes of a front first,
then the least crowded). It continues when its position is within the top n / reduction_factor of the n
recorded (so the first trial at a rung always continues); on equal rank the arriving trial goes first, as
ASHA continues a trial equal to its cutoff. A result with a non-finite objective stops its trial unrecorded.
Rungs, max_t and grace_period are ASHA's (one bracket).
"""
from __future__ import annotations

import math

import numpy as np
from optuna.study._multi_objective import _fast_non_domination_rank
from ray.tune.schedulers import FIFOScheduler, TrialScheduler


def nondominated_fronts(points: np.ndarray) -> np.ndarray:
    """Front index of each row of `points` (every column maximised): 0 for the non-dominated rows, 1 for
    those only dominated by front 0, and so on. Optuna's non-dominated sort, which its TPE and NSGA-II use
    (a module-private function: tests/test_moasha.py holds it to the definition)."""
    return _fast_non_domination_rank(-np.asarray(points, float))


def crowding_distance(points: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance of each row of one front: per objective, the gap between its two
    neighbours over the objective's range, summed; the rows at either end of an objective are infinite."""
    n, distance = len(points), np.zeros(len(points))
    for column in points.T:
        order = np.argsort(column, kind="stable")
        distance[order[[0, -1]]] = np.inf
        span = column[order[-1]] - column[order[0]]
        if n > 2 and span > 0:
            distance[order[1:-1]] += (column[order[2:]] - column[order[:-2]]) / span
    return distance


def rank_position(points: np.ndarray, index: int) -> int:
    """Position of row `index` when the rows are ordered by front, then crowding distance (larger first);
    the row at `index` goes before the rows it ties with."""
    fronts = nondominated_fronts(points)
    same = fronts == fronts[index]
    crowding = crowding_distance(points[same])
    own = crowding[np.flatnonzero(same) == index][0]
    return int((fronts < fronts[index]).sum() + (crowding > own).sum())


class MultiObjectiveASHA(FIFOScheduler):
    """MO-ASHA on `metrics` with their `modes` ("max"/"min"); see the module doc. `time_attr` must grow
    with each result, as for ASHA."""

    def __init__(self, metrics: list[str], modes: list[str], max_t: int, grace_period: int = 1,
                 reduction_factor: float = 2, time_attr: str = "training_iteration"):
        if len(metrics) != len(modes) or not metrics:
            raise ValueError(f"MO-ASHA needs one mode per metric; got metrics {metrics} and modes {modes}.")
        if any(mode not in ("max", "min") for mode in modes):
            raise ValueError(f"MO-ASHA modes must be 'max' or 'min'; got {modes}.")
        if not 0 < grace_period <= max_t or reduction_factor <= 1:
            raise ValueError(f"MO-ASHA needs 0 < grace_period ({grace_period}) <= max_t ({max_t}) and "
                             f"reduction_factor ({reduction_factor}) > 1.")
        super().__init__()
        self._metrics, self._signs = list(metrics), np.array([1.0 if m == "max" else -1.0 for m in modes])
        self._max_t, self._rf, self._time_attr = max_t, reduction_factor, time_attr
        count = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1)
        self._rungs = [(grace_period * reduction_factor ** k, {}) for k in range(count)]  # milestone -> {id: point}
        self._num_stopped = 0

    def set_search_properties(self, metric, mode, **spec) -> bool:
        """The objectives are the scheduler's own; a metric or mode given to Tune besides is refused."""
        return metric is None and mode is None

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self._time_attr not in result or any(m not in result for m in self._metrics):
            return TrialScheduler.CONTINUE
        if result[self._time_attr] >= self._max_t:
            action = TrialScheduler.STOP
        else:
            action = self._at_rung(trial.trial_id, result)
        self._num_stopped += action == TrialScheduler.STOP
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if result and self._time_attr in result and all(m in result for m in self._metrics):
            self._at_rung(trial.trial_id, result)

    def _at_rung(self, trial_id: str, result: dict) -> str:
        """Record the result at the highest rung it reached and has not been recorded at; STOP if it ranks
        below that rung's top 1/reduction_factor."""
        t = result[self._time_attr]
        for milestone, recorded in reversed(self._rungs):
            if t < milestone or trial_id in recorded:
                continue
            point = self._signs * np.array([float(result[m]) for m in self._metrics])
            if not np.isfinite(point).all():
                return TrialScheduler.STOP  # never on a front; not recorded, so it does not move the ranking
            recorded[trial_id] = point
            points = np.array(list(recorded.values()))
            position = rank_position(points, list(recorded).index(trial_id))
            return TrialScheduler.CONTINUE if position < len(recorded) / self._rf else TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        rungs = ", ".join(f"{milestone}: {len(recorded)}" for milestone, recorded in self._rungs)
        return f"Using MO-ASHA on {self._metrics}: num_stopped={self._num_stopped}; trials per rung {rungs}"
