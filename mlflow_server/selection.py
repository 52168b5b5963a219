"""How a trial ended, and which trials count as best: one rule for the tracker, the Optuna
searcher, the summary, the Pareto table and plot, tune-export and the live view.

A trial reached its budget when its last result's `epoch` is at least its config's
`train/epochs` (`reached_budget`). It ends FINISHED (Optuna COMPLETE) when it did, KILLED
(PRUNED) when the scheduler stopped it before, FAILED (FAIL) when it raised, whatever it
reported before.

Only FINISHED trials whose every objective is a finite number are eligible (`eligible`). The
Pareto front is the eligible trials no other eligible trial matches or beats on every objective
while beating it on one; identical points are all kept. The front is ranked best first: by the
primary (first) objective, ties by the next objectives in order, remaining ties by the given
order (start order: the earlier trial first). The best trial is the first of the front (`best`),
so it is always on the front. Records are anything with `status` and `metrics`
(mlflow_server.records.TrialRecord).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

import numpy as np

EPOCHS_KEY = "train/epochs"
DIRECTIONS = ("max", "min")


def last_epoch(result: dict) -> int:
    """The epochs a result counts (1-based), or Ray's training iteration without an `epoch`."""
    return int(result.get("epoch", result.get("training_iteration", 0)))


def reached_budget(result: dict | None, config: dict, epochs_key: str = EPOCHS_KEY) -> bool:
    """Whether a trial whose last result is `result` (flat `config`) trained its whole budget.

    A config without `epochs_key` has no budget to fall short of: True.
    """
    epochs = config.get(epochs_key)
    return epochs is None or last_epoch(result or {}) >= epochs


def finite(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_objectives(objectives: dict[str, str]) -> None:
    if not objectives:
        raise ValueError("No objectives were given; pass at least one {metric: 'max'|'min'}.")
    for key, direction in objectives.items():
        if direction not in DIRECTIONS:
            raise ValueError(f"Objective {key!r} has direction {direction!r}; use one of {DIRECTIONS}.")


def eligible(records: Sequence, objectives: dict[str, str]) -> list:
    """The FINISHED records whose every objective is a finite number, in the given order."""
    check_objectives(objectives)
    return [r for r in records if r.status == "FINISHED" and all(finite(r.metrics.get(k)) for k in objectives)]


def pareto_front(records: Sequence, objectives: dict[str, str]) -> list:
    """The eligible records on the Pareto front, best first (see the module doc)."""
    candidates = eligible(records, objectives)
    if not candidates:
        return []
    sign = np.array([1.0 if objectives[k] == "max" else -1.0 for k in objectives])
    points = np.array([[r.metrics[k] for k in objectives] for r in candidates]) * sign  # all maximised
    at_least = (points[None, :, :] >= points[:, None, :]).all(axis=2)  # [i, j]: j >= i everywhere
    better = (points[None, :, :] > points[:, None, :]).any(axis=2)  # [i, j]: j > i somewhere
    dominated = (at_least & better).any(axis=1)
    order = sorted(np.flatnonzero(~dominated), key=lambda i: (tuple(-points[i]), i))
    return [candidates[i] for i in order]


def best(records: Sequence, objectives: dict[str, str]):
    """The best eligible record (the first of the ranked front), or None when none is eligible."""
    front = pareto_front(records, objectives)
    return front[0] if front else None
