"""Where the engine keeps its state: the home ($MEDTUNE_HOME, else ./runs) and, in it, what belongs
to each experiment, found from its name alone:

    <home>/experiments/<name>.json     its settings, read back by --resume
    <home>/ray/<name>/                 Ray Tune's experiment folder (trials, checkpoints, searcher)
    <home>/ray/<name>/medtune_search_done   written once its trials have all ended
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


def results_dir() -> str:
    """`$MEDTUNE_HOME`, else `./runs`, as an absolute path that exists."""
    path = Path(os.environ.get("MEDTUNE_HOME") or "runs").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


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
