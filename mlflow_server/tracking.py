"""One MLflow parent run per experiment and one nested run per trial, written by the Ray driver."""

from __future__ import annotations

import json
import numbers
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.utils import flatten_dict

ROLE = "medtune.role"
PARENT = "medtune.parent_run_id"
TRIAL = "medtune.trial_id"
ERROR = "medtune.error"
MLFLOW_PARENT = "mlflow.parentRunId"  # nests the trial run under the parent in the UI
CONFIG_FILE = "config.json"
CONFUSION_KEY = "val/confusion_matrix"

# The driver's console belongs to the progress view: no per-run links on every
# set_terminated and no progress bar per config.json download (the user can still opt in).
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def get_or_create_parent_run(client: MlflowClient, experiment: str, tags: dict) -> str:
    """Return the id of the experiment's parent run (set RUNNING again), creating both if new."""
    found = client.get_experiment_by_name(experiment)
    if found is not None and found.lifecycle_stage != "active":
        raise ValueError(
            f"The MLflow experiment {experiment!r} is deleted; restore it with "
            "`mlflow experiments restore` or choose another experiment name."
        )
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    runs = client.search_runs([experiment_id], f"tags.`{ROLE}` = 'parent'", max_results=1)
    if runs:
        client.update_run(runs[0].info.run_id, status="RUNNING")
        return runs[0].info.run_id
    all_tags = {ROLE: "parent", **{key: str(value) for key, value in tags.items()}}
    return client.create_run(experiment_id, tags=all_tags, run_name=experiment).info.run_id


class TrialTracker(Callback):
    """Ray Tune callback that logs each trial to its own run nested under `parent_run_id`.

    It runs in the driver, the only writer. A trial that starts again (resume, retry,
    unpause) continues the run tagged with its trial id instead of opening a second one.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        parent_run_id: str,
        tags: dict[str, str],
        epochs_key: str = "train/epochs",
    ):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.parent_run_id = parent_run_id
        self.tags = {key: str(value) for key, value in tags.items()}
        self.epochs_key = epochs_key
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None
        self._runs: dict[str, str] = {}  # trial id -> run id

    def __getstate__(self) -> dict:
        """Ray may pickle callbacks into the experiment checkpoint: leave the client out."""
        return {**self.__dict__, "_client": None}

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info):
        self.client.update_run(self._run_id(trial), status="RUNNING")

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info
    ):
        timestamp = int(time.time() * 1000)
        step = _step(result)
        metrics = [
            Metric(key, float(value), timestamp, step)
            for key, value in _flat_result(result).items()
            if "/" in key and isinstance(value, numbers.Real) and not isinstance(value, bool)
        ]
        if metrics:
            self.client.log_batch(self._run_id(trial), metrics=metrics)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info):
        """FINISHED when the last result reached the configured epochs, else KILLED.

        `epoch` counts completed epochs (1-based); a config without `epochs_key` counts
        as FINISHED since there is no budget to compare with.
        """
        run_id = self._run_id(trial)
        result = _flat_result(trial.last_result)
        epochs = flatten_dict(trial.config, delimiter="/").get(self.epochs_key)
        done = epochs is None or _step(result) >= epochs
        if isinstance(matrix := result.get(CONFUSION_KEY), list):
            self.client.log_text(run_id, json.dumps(matrix), "confusion_matrix.json")
        status = RunStatus.to_string(RunStatus.FINISHED if done else RunStatus.KILLED)
        self.client.set_terminated(run_id, status=status)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info):
        """FAILED, tagged with the last line of Ray's error file (also logged as error.txt)."""
        run_id = self._run_id(trial)
        summary = "The trial failed without an error file; see the Ray Tune driver log."
        if trial.error_file and Path(trial.error_file).is_file():
            lines = Path(trial.error_file).read_text(errors="replace").strip().splitlines()
            summary = lines[-1].strip()[:500] if lines else summary
            self.client.log_artifact(run_id, trial.error_file)
        self.client.set_tag(run_id, ERROR, summary)
        self.client.set_terminated(run_id, status="FAILED")

    def _run_id(self, trial: Trial) -> str:
        """The trial's run: cached, else found by its tags, else created with its config."""
        if trial.trial_id not in self._runs:
            self._runs[trial.trial_id] = self._find_run(trial.trial_id) or self._create_run(trial)
        return self._runs[trial.trial_id]

    def _find_run(self, trial_id: str) -> str | None:
        query = f"tags.`{PARENT}` = '{self.parent_run_id}' and tags.`{TRIAL}` = '{trial_id}'"
        runs = self.client.search_runs([self._experiment()], query, max_results=1)
        return runs[0].info.run_id if runs else None

    def _create_run(self, trial: Trial) -> str:
        tags = {
            **self.tags,
            MLFLOW_PARENT: self.parent_run_id,
            PARENT: self.parent_run_id,
            ROLE: "trial",
            TRIAL: trial.trial_id,
        }
        run = self.client.create_run(self._experiment(), tags=tags, run_name=trial.trial_id)
        run_id = run.info.run_id
        config = flatten_dict(trial.config, delimiter="/")  # Ray un-flattens "a/b" keys
        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in config.items()])
        self.client.log_dict(run_id, config, CONFIG_FILE)
        return run_id

    def _experiment(self) -> str:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                raise ValueError(
                    f"The MLflow experiment {self.experiment!r} does not exist at "
                    f"{self.tracking_uri}; create it with get_or_create_parent_run() first."
                )
            self._experiment_id = found.experiment_id
        return self._experiment_id


def _flat_result(result: dict) -> dict[str, Any]:
    """The result with nested metric dicts joined by "/"; Ray's echo of the config dropped."""
    return flatten_dict({k: v for k, v in result.items() if k != "config"}, delimiter="/")


def _step(result: dict) -> int:
    return int(result.get("epoch", result.get("training_iteration", 0)))


@dataclass
class TrialRecord:
    """One trial run as read back from MLflow."""

    run_id: str
    trial_id: str
    status: str
    config: dict[str, Any]
    metrics: dict[str, float]


def collect_trials(client: MlflowClient, parent_run_id: str) -> list[TrialRecord]:
    """All trial runs nested under `parent_run_id`, in start order, with typed configs."""
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    query = f"tags.`{PARENT}` = '{parent_run_id}'"
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], query, order_by=["attributes.start_time ASC"], page_token=token
        )
        runs.extend(page)
        if not (token := page.token):
            break
    return [
        TrialRecord(
            run_id=run.info.run_id,
            trial_id=run.data.tags.get(TRIAL, run.info.run_name),
            status=run.info.status,
            config=_load_config(client, run),
            metrics=dict(run.data.metrics),
        )
        for run in runs
    ]


def _load_config(client: MlflowClient, run) -> dict[str, Any]:
    """The typed config.json, or the string params of a run that died before writing it."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run.info.run_id, CONFIG_FILE, tmp)
        except (MlflowException, OSError):
            return dict(run.data.params)
        return json.loads(Path(path).read_text())


def finished(records: list[TrialRecord]) -> list[TrialRecord]:
    """The records eligible for best/Pareto selection: FINISHED runs only."""
    return [record for record in records if record.status == "FINISHED"]

