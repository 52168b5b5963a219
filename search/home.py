"""Where the engine keeps its state: the home (see results_dir) and, in it, what belongs to each
experiment, found from its name alone:

    <home>/experiments/<name>.json     its settings, read back by --resume
    <home>/ray/<name>/                 Ray Tune's experiment folder (trials, checkpoints, searcher)
    <home>/ray/<name>/medtune_search_done   written once its trials have all ended
    <home>/ray/<name>/medtune_rounds.json   the trials asked of each Tuner run: the first in
                                       ray/<name>/, each later one (--resume --num-samples) in ray/<name>/more-<k>/
    <home>/optuna.db                   the Optuna storage; the study is named <name>
    <home>/mlflow/                     the tracking server started here (server.json, mlflow.db, artifacts/)
    <home>/mlflow/pending/             tracking writes waiting for the server, one file per parent run
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from search.errors import UsageError


HOME_MARKS = ("experiments", "mlflow", "ray")  # what a folder named runs/ holds once it is a home


def results_dir() -> str:
    """The home, as an absolute path that exists: `$MEDTUNE_HOME`, else found as git finds its
    repository, from the working folder up: the first folder with a `runs/` that is a home (it
    holds experiments/, mlflow/ or ray/) or with a `pyproject.toml` (a project's root) gives
    `<that folder>/runs`; with neither up to the root, `./runs`. Every command run anywhere inside
    a project therefore uses the same home."""
    path = Path(os.environ.get("MEDTUNE_HOME") or find_home(Path.cwd())).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def find_home(start: Path) -> Path:
    """`<folder>/runs` of the nearest folder from `start` up that holds a home or a pyproject.toml;
    `start/runs` when none does."""
    for folder in (start, *start.parents):
        runs = folder / "runs"
        if any((runs / mark).is_dir() for mark in HOME_MARKS) or (folder / "pyproject.toml").is_file():
            return runs
    return start / "runs"


def experiment_names(home: str) -> list[str]:
    """The experiments of the home (those with saved settings), sorted."""
    folder = os.path.join(home, "experiments")
    return sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".json")) if os.path.isdir(folder) else []


@dataclass(frozen=True)
class ExperimentState:
    """The paths of one experiment's state under a home (see the module doc)."""

    home: str
    name: str

    @property
    def settings_file(self) -> str:
        return os.path.join(self.home, "experiments", f"{self.name}.json")

    @property
    def ray_storage(self) -> str:
        return os.path.join(self.home, "ray")

    @property
    def ray_dir(self) -> str:
        return os.path.join(self.ray_storage, self.name)

    @property
    def search_done(self) -> str:
        return os.path.join(self.ray_dir, "medtune_search_done")

    def round_dir(self, k: int) -> str:
        """Ray Tune's folder of round k: the first in ray_dir, each later one in more-<k> inside it."""
        return self.ray_dir if k == 0 else os.path.join(self.ray_dir, f"more-{k}")

    @property
    def rounds_file(self) -> str:
        return os.path.join(self.ray_dir, "medtune_rounds.json")

    def rounds(self) -> list[int] | None:
        """The number of trials asked of each round so far; None when not recorded."""
        if not os.path.isfile(self.rounds_file):
            return None
        with open(self.rounds_file) as f:
            return json.load(f)

    def save_rounds(self, rounds: list[int]) -> None:
        os.makedirs(self.ray_dir, exist_ok=True)
        with open(self.rounds_file, "w") as f:
            json.dump(rounds, f)

    @property
    def optuna_file(self) -> str:
        return os.path.join(self.home, "optuna.db")

    @property
    def optuna_storage(self) -> str:
        return f"sqlite:///{self.optuna_file}"

    @property
    def pending_dir(self) -> str:
        return os.path.join(self.home, "mlflow", "pending")

    def save_settings(self, settings: dict) -> None:
        os.makedirs(os.path.dirname(self.settings_file), exist_ok=True)
        with open(self.settings_file + ".tmp", "w") as f:
            json.dump(settings, f, indent=2)
        os.replace(self.settings_file + ".tmp", self.settings_file)

    def load_settings(self) -> dict:
        """The saved settings; a UsageError listing the experiments of the home when there are none."""
        if not os.path.isfile(self.settings_file):
            raise UsageError(
                f"There is no experiment named {self.name!r} to resume in {self.home!r}; "
                f"experiments there: {', '.join(experiment_names(self.home)) or 'none'}."
            )
        with open(self.settings_file) as f:
            return json.load(f)
