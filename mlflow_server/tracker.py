"""One MLflow parent run per experiment and one nested run per trial, written by the Ray driver.

The tracker turns Ray Tune's trial events into writes of the parent run's WriteQueue
(mlflow_server.write_queue), written by its own thread: the server, slow or unreachable, never
stops the trials or holds up Ray Tune's loop.
"""

from __future__ import annotations

import base64
import json
import logging
import numbers
import posixpath
import time
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from pyarrow.fs import FileSelector, FileType
from ray.tune import Callback, Checkpoint
from ray.tune.experiment import Trial
from ray.tune.utils import flatten_dict

from mlflow_server.records import ERROR, MLFLOW_PARENT, PARENT, ROLE, TRIAL, experiment_tags
from mlflow_server.selection import last_epoch, reached_budget
from mlflow_server.server import answers
from mlflow_server.write_queue import WriteQueue
from trainables.registry import CHECKPOINT_ARTIFACTS, MACHINE_PREFIX, flat_config

# Confusion matrices a trainable reports ({"classes", "matrix", "rows", "columns"}) -> their artifacts.
CONFUSION_FILES = {"val/confusion_matrix": "confusion_matrix.json", "test/confusion_matrix": "test_confusion_matrix.json"}
END_WAIT_S = 30.0  # how long the end of an experiment waits for the server to write the rest

log = logging.getLogger(__name__)


def get_or_create_parent_run(client: MlflowClient, experiment: str, tags: dict) -> str:
    """Return the id of the experiment's parent run (set RUNNING again), creating both if new.

    A tracking server that does not answer is a RuntimeError naming its URI.
    """
    try:
        return _parent_run(client, experiment, tags)
    except MlflowException as exc:
        if answers(client.tracking_uri):
            raise
        raise RuntimeError(
            f"The MLflow tracking server at {client.tracking_uri} cannot be reached; start it "
            "(tune-ui), or point MLFLOW_TRACKING_URI at a running server."
        ) from exc


def _parent_run(client: MlflowClient, experiment: str, tags: dict) -> str:
    found = client.get_experiment_by_name(experiment)
    if found is not None and found.lifecycle_stage != "active":
        raise ValueError(
            f"The MLflow experiment {experiment!r} is deleted; restore it with "
            "`mlflow experiments restore` or choose another experiment name."
        )
    experiment_id = found.experiment_id if found else client.create_experiment(experiment, tags=experiment_tags(tags))
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
    Writes the server cannot take now wait in `<pending_dir>/<parent_run_id>.jsonl`.
    """

    def __init__(
        self,
        uri: str,
        experiment: str,
        parent_run_id: str,
        tags: dict[str, str],
        pending_dir: str,
        end_wait_s: float = END_WAIT_S,
    ):
        self.queue = WriteQueue(uri, experiment, parent_run_id, pending_dir)
        self.tags = {key: str(value) for key, value in tags.items()}
        self.end_wait_s = end_wait_s
        self.machines: dict[str, dict[str, str]] = {}  # per trial, the machine/* tags written so far

    @property
    def pending_path(self) -> Path:
        return self.queue.path

    def flush(self, wait_s: float = 0.0) -> int:
        """Write what is queued, waiting up to `wait_s` for the server; return the writes left."""
        return self.queue.flush(wait_s)

    def pending_summary(self) -> str | None:
        """What could not be written (counts and the pending file), or None when nothing is."""
        return self.queue.summary()

    # --- Ray Tune hooks --------------------------------------------------------------------

    def setup(self, **info):
        """Write what an earlier driver of this parent run left in the pending file."""
        self.flush()

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info):
        self._submit(trial, {"op": "status", "status": "RUNNING"})

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info
    ):
        """The result's numbers become metrics of the trial's run; its machine/* strings, tags (written when
        they change: a trial resumed on another machine is tagged with the machine of its latest epochs)."""
        timestamp = int(time.time() * 1000)
        step = last_epoch(result)
        flat = _flat_result(result)
        metrics = [
            [key, float(value), timestamp, step]
            for key, value in flat.items()
            if "/" in key and isinstance(value, numbers.Real) and not isinstance(value, bool)
        ]
        written = self.machines.setdefault(trial.trial_id, {})
        machine = {key: value for key, value in flat.items()
                   if key.startswith(MACHINE_PREFIX) and isinstance(value, str) and written.get(key) != value}
        written.update(machine)
        ops = [{"op": "tag", "key": key, "value": value} for key, value in machine.items()]
        if metrics:
            ops.append({"op": "metrics", "metrics": metrics})
        if ops:
            self._submit(trial, *ops)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info):
        """FINISHED when the last result reached its budget, else KILLED (the rule of
        mlflow_server.selection.reached_budget, which the Optuna searcher follows too); the files of
        its last checkpoint's artifacts folder (its pictures) become artifacts of its run."""
        done = reached_budget(_flat_result(trial.last_result), flat_config(trial.config))
        ops = [{"op": "text", "file": file, "text": json.dumps(matrix)} for key, file in CONFUSION_FILES.items()
               if isinstance(matrix := (trial.last_result or {}).get(key), dict)]
        ops += checkpoint_files(trial.checkpoint)
        status = RunStatus.to_string(RunStatus.FINISHED if done else RunStatus.KILLED)
        self._submit(trial, *ops, {"op": "end", "status": status, "time": int(time.time() * 1000)})

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info):
        """FAILED, tagged with the last line of Ray's error file (also logged as error.txt)."""
        summary = "The trial failed without an error file; see the Ray Tune driver log."
        ops = []
        try:
            text = Path(trial.error_file).read_text(errors="replace") if trial.error_file else ""
        except OSError:
            text = ""
        if lines := text.strip().splitlines():
            summary = lines[-1].strip()[:500]
            ops.append({"op": "text", "file": Path(trial.error_file).name, "text": text})
        ops.append({"op": "tag", "key": ERROR, "value": summary})
        self._submit(trial, *ops, {"op": "end", "status": "FAILED", "time": int(time.time() * 1000)})

    def on_experiment_end(self, trials: list[Trial], **info):
        """Wait up to `end_wait_s` for the server to take the rest, end the writer thread; warn with
        what is left."""
        self.flush(self.end_wait_s)
        self.queue.close()
        if summary := self.pending_summary():
            log.warning(summary)

    def _submit(self, trial: Trial, *ops: dict) -> None:
        """Queue `ops` for the trial's run, its creation first when new."""
        first = [] if self.queue.knows(trial.trial_id) else [self._creation(trial)]
        self.queue.put(*first, *({**op, "trial": trial.trial_id} for op in ops))

    def _creation(self, trial: Trial) -> dict:
        config = flat_config(trial.config)
        parent = self.queue.parent_run_id
        tags = {**self.tags, MLFLOW_PARENT: parent, PARENT: parent, ROLE: "trial", TRIAL: trial.trial_id}
        params = {key: str(value) for key, value in config.items()}
        return {"op": "create", "trial": trial.trial_id, "name": run_name(trial, config), "tags": tags,
                "params": params, "config": config}


NAME_KEYS = ("model/arch", "model/encoder", "model/backbone")  # the model choices a trial run's name shows


def run_name(trial: Trial, config: dict) -> str:
    """A trial run's name: its number (Ray's trial counter: from 1 in a search, from 0 in a list of
    configs) and its model and learning rate, e.g. 't03 unet resnet34 lr=3e-4'."""
    number = trial.experiment_tag.split("_", 1)[0]
    words = [f"t{int(number):02d}" if number.isdigit() else trial.trial_id]
    words += [str(config[key]).removeprefix("tu-") for key in NAME_KEYS if key in config]
    if isinstance(lr := config.get("optim/lr"), numbers.Real):
        words.append("lr=" + f"{lr:.0e}".replace("e-0", "e-").replace("e+0", "e+"))
    return " ".join(words)


def checkpoint_files(checkpoint: Checkpoint | None) -> list[dict]:
    """A "file" write (path and base64 content, so a pending write needs nothing else) for each file under
    the checkpoint's CHECKPOINT_ARTIFACTS folder, read through its filesystem (local or a cluster's storage)."""
    if checkpoint is None:
        return []
    fs, root = checkpoint.filesystem, posixpath.join(checkpoint.path, CHECKPOINT_ARTIFACTS)
    found = fs.get_file_info(FileSelector(root, allow_not_found=True, recursive=True))
    ops = []
    for info in sorted((i for i in found if i.type == FileType.File), key=lambda i: i.path):
        with fs.open_input_stream(info.path) as file:
            data = base64.b64encode(file.read()).decode()
        ops.append({"op": "file", "file": posixpath.relpath(info.path, root), "data": data})
    return ops


def _flat_result(result: dict) -> dict[str, Any]:
    """A Ray result with nested metric dicts joined by "/"; Ray's echo of the config dropped."""
    return flatten_dict({k: v for k, v in result.items() if k != "config"}, delimiter="/")
