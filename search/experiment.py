"""One experiment's settings, resolved from a space file and the command line, saved for --resume."""
from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from search.errors import UsageError
from search.home import ExperimentState
from search.overrides import check_value
from search.spacefile import Space
from search.trials import PAUSING


@dataclass
class Settings:
    """Everything `tune-run` needs to start or resume an experiment."""

    name: str
    space_path: str
    num_samples: int
    scheduler: str = "asha"
    sampler: str = "tpe"
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    time_budget: float | None = None
    max_failures: int = 0
    seed: int = 0
    smoke_test: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)  # --set and --data, already type-checked

    def pinned(self, space: Space) -> dict[str, Any]:
        """Keys fixed for every trial: SMOKE values (with --smoke-test), then --set overrides."""
        pinned = dict(space.smoke) if self.smoke_test else {}
        pinned.update(self.overrides)
        return pinned

    def constants(self, space: Space) -> dict[str, Any]:
        """The config every trial starts from before its sampled keys are applied. Under a scheduler that
        pauses trials (search.trials.PAUSING), a checkpoint every epoch, so that none re-trains an epoch."""
        every_epoch = {"train/checkpoint_s": 0} if self.scheduler in PAUSING else {}
        return {**space.defaults, "train/seed": self.seed, **every_epoch, **self.pinned(space)}


def default_name(space_path: str) -> str:
    stem = os.path.splitext(os.path.basename(space_path))[0]
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def load_settings(home: str, name: str) -> Settings:
    """The settings tune-run saved for experiment `name` (its --resume)."""
    try:
        return Settings(**ExperimentState(home, name).load_settings())
    except TypeError:
        raise UsageError(f"Experiment {name!r} in {home!r} is not a search (a re-train or an ablation); "
                         f"tune-run --resume continues searches only.") from None


def check_overrides(overrides: dict[str, Any], space: Space) -> None:
    for key, value in overrides.items():
        check_value(key, value, space.defaults, "the command line")


def git_revision(path: str) -> str:
    """The git revision of the repository holding path, or 'unknown'."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=os.path.dirname(path) or ".",
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
