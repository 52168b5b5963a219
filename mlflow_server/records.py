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
KIND = "medtune.kind"  # what an experiment is: KINDS
KINDS = {"search": "Search", "retrain": "Re-training", "ablation": "Ablation"}
CONFIG_FILE = "config.json"


def experiment_tags(tags: dict[str, str]) -> dict[str, str]:
    """The tags of a new MLflow experiment whose parent run has `tags`: its kind (medtune.kind) and a
    description (the experiment list's Description column) that tell searches, re-trainings and
    ablations apart, and MLflow's model-training view rather than its GenAI one."""
    kind = tags.get(KIND, "search")
    words = [f"{KINDS.get(kind, kind)} of {tags.get('medtune.trainable', 'a trainable')}"]
    if space := tags.get("medtune.space_file"):
        words.append(f"over {space}")
    if run := tags.get("medtune.retrain_of"):
        words.append(f"(the config of trial run {run})")
    return {KIND: kind, "mlflow.note.content": " ".join(words),
            "mlflow.experimentKind": "custom_model_development"}


@dataclass(frozen=True)
class TrialRuns:
    """Finds a trial's run by its Ray trial id in the MLflow experiment `experiment` at `uri`.
    Picklable: a searcher that Ray Tune saves with its experiment keeps it."""

    uri: str
    experiment: str

    def run_id(self, trial_id: str) -> str | None:
        """The run's id; None while it has none or the server does not answer (never waits for it)."""
        from mlflow_server.server import answers

        if not answers(self.uri):
            return None
        client = MlflowClient(self.uri)
        try:
            found = client.get_experiment_by_name(self.experiment)
            runs = found and client.search_runs([found.experiment_id], f"tags.`{TRIAL}` = '{trial_id}'", max_results=1)
        except MlflowException:
            return None
        return runs[0].info.run_id if runs else None


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


def varying_keys(records: list[TrialRecord]) -> list[str]:
    """The config keys whose values differ between the records, sorted."""
    return sorted(key for key in set().union(*(r.config for r in records))
                  if len({json.dumps(r.config.get(key), sort_keys=True, default=str) for r in records}) > 1)


def _load_config(client: MlflowClient, run) -> dict[str, Any]:
    """The typed config.json, or the string params of a run that died before writing it."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run.info.run_id, CONFIG_FILE, tmp)
        except (MlflowException, OSError):
            return dict(run.data.params)
        return json.loads(Path(path).read_text())
