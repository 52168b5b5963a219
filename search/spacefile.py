"""Load a space file and validate everything it declares before any trial starts."""
from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

from search.errors import UsageError
from search.overrides import check_value
from trainables.registry import TrainableSpec, get_trainable

MODES = ("max", "min")


@dataclass(frozen=True)
class Space:
    """A validated space file."""

    path: str
    trainable: TrainableSpec
    objectives: dict[str, str]  # ordered; the first is the primary objective
    defaults: dict[str, Any]    # trainable defaults updated with the file's DEFAULTS
    smoke: dict[str, Any]
    space: Callable
    doc: str

    @property
    def primary(self) -> tuple[str, str]:
        return next(iter(self.objectives.items()))


def load_module(path: str):
    """Import a space file by path (trusted configuration code, like a conftest)."""
    if not os.path.isfile(path):
        raise UsageError(f"Space file {path!r} does not exist; pass the path of a .py file such as spaces/multitask.py.")
    if not path.endswith(".py"):
        raise UsageError(f"Space file {path!r} is not a Python file; space files are .py modules such as spaces/multitask.py.")
    name = "medtune_space_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the file's own error, reported with its location
        raise UsageError(f"Space file {path!r} failed to import: {type(exc).__name__}: {exc}") from exc
    sys.modules.setdefault(name, module)
    return module


def _checked(path: str, what: str, values: dict, known: dict) -> dict:
    if not isinstance(values, dict):
        raise UsageError(f"{what} in {path!r} must be a dict of 'group/name' keys, not {type(values).__name__}.")
    return {key: check_value(key, value, known, f"{what} in {path!r}") for key, value in values.items()}


def load_space(path: str) -> Space:
    """Load and validate a space file; every problem is a UsageError naming the value."""
    module = load_module(path)
    trainable_name = getattr(module, "TRAINABLE", None)
    if trainable_name is None:
        raise UsageError(f"Space file {path!r} does not set TRAINABLE; set it to the name of a trainable, e.g. TRAINABLE = 'multitask'.")
    try:
        trainable = get_trainable(trainable_name)
    except ValueError as exc:
        raise UsageError(f"Space file {path!r}: {exc}") from None
    space = getattr(module, "space", None)
    if not callable(space):
        raise UsageError(f"Space file {path!r} has no space(trial) function; define one that calls trial.suggest_* for each searched key.")

    objectives = getattr(module, "OBJECTIVES", None)
    if not isinstance(objectives, dict) or not objectives:
        raise UsageError(f"Space file {path!r} must set OBJECTIVES to a non-empty dict of metric -> 'max' or 'min'; the first is the primary objective.")
    for metric, mode in objectives.items():
        if metric not in trainable.metrics:
            raise UsageError(
                f"Objective {metric!r} in {path!r} is not reported by trainable {trainable.name!r}; "
                f"it reports: {', '.join(trainable.metrics)}."
            )
        if mode not in MODES:
            raise UsageError(f"Objective {metric!r} in {path!r} has mode {mode!r}; accepted modes are 'max' and 'min'.")

    defaults = dict(trainable.defaults)
    defaults.update(_checked(path, "DEFAULTS", getattr(module, "DEFAULTS", {}), defaults))
    smoke = _checked(path, "SMOKE", getattr(module, "SMOKE", {}), defaults)
    return Space(path=os.path.abspath(path), trainable=trainable, objectives=dict(objectives),
                 defaults=defaults, smoke=smoke, space=space, doc=(module.__doc__ or "").strip())
