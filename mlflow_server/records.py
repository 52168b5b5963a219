"""The read side of tracking: the tags medtune puts on its runs and the trial records read back.

Which of the records count, and which is best, is mlflow_server.selection's rule.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

ROLE = "medtune.role"
PARENT = "medtune.parent_run_id"
TRIAL = "medtune.trial_id"
ERROR = "medtune.error"
MLFLOW_PARENT = "mlflow.parentRunId"  # nests the trial run under the parent in the UI
CONFIG_FILE = "config.json"


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
