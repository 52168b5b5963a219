"""One MLflow parent run per experiment and one nested run per trial, written by the Ray driver.

The tracker never lets an unreachable server stop the trials: every write is queued, written
in order as soon as the server answers, and kept meanwhile in a pending file under the home
(`<home>/mlflow/pending/<parent run id>.jsonl`) that the next tracker of the run replays.
"""

from __future__ import annotations

import itertools
import json
import logging
import numbers
import os
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.utils import flatten_dict

from mlflow_server.selection import EPOCHS_KEY, last_epoch, reached_budget
from mlflow_server.server import answers, results_dir

ROLE = "medtune.role"
PARENT = "medtune.parent_run_id"
TRIAL = "medtune.trial_id"
ERROR = "medtune.error"
MLFLOW_PARENT = "mlflow.parentRunId"  # nests the trial run under the parent in the UI
CONFIG_FILE = "config.json"
# Confusion matrices a trainable reports ({"classes", "matrix", "rows", "columns"}) -> their artifacts.
CONFUSION_FILES = {"val/confusion_matrix": "confusion_matrix.json", "test/confusion_matrix": "test_confusion_matrix.json"}
RETRY_S = 5.0  # while the server is unreachable, ask it again at most this often
END_WAIT_S = 30.0  # how long the end of an experiment waits for the server to write the rest
# What each queued operation is called in the summary of unwritten ones.
NOUNS = {"create": "run creation", "status": "status update", "metrics": "metric set",
         "text": "artifact", "tag": "tag", "end": "run end"}  # fmt: skip

# The driver's console belongs to the progress view: no per-run links on every
# set_terminated and no progress bar per config.json download (the user can still opt in).
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# A call to a server that is gone must fail within seconds, not after the client's default
# 7 retries with exponential backoff (minutes): the tracker queues the write instead, and
# the start of an experiment reports the unreachable server at once.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

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
    Writes the server cannot take now wait in order in `pending_path` (see the module doc);
    a replayed write never doubles anything: a run is found by its trial id before it is
    created, and the server drops a metric point identical to one it has.
    """

    # Left out of the pickle Ray keeps of its callbacks: the client, and the queue, which
    # the pending file holds instead.
    _VOLATILE = ("_client", "_queue", "_saved", "_loaded", "_opened", "_retry_at", "rejected", "_last_step")

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        parent_run_id: str,
        tags: dict[str, str],
        epochs_key: str = EPOCHS_KEY,
        home: str | None = None,
        end_wait_s: float = END_WAIT_S,
    ):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.parent_run_id = parent_run_id
        self.tags = {key: str(value) for key, value in tags.items()}
        self.epochs_key = epochs_key
        self.home = str(Path(home).resolve()) if home else results_dir()
        self.end_wait_s = end_wait_s
        self._experiment_id: str | None = None
        self._runs: dict[str, str] = {}  # trial id -> run id
        self._reset()

    def _reset(self) -> None:
        self._client: MlflowClient | None = None
        self._queue: deque[dict] = deque()
        self._saved = 0  # how many of the queue's first operations the pending file holds
        self._loaded = False  # whether the pending file was read into the queue
        self._opened: set[str] = set()  # trials whose run creation is queued or done
        self._retry_at = 0.0  # while the server is unreachable: when to ask it again
        self.rejected = 0  # writes the server refused as invalid (dropped, logged)
        self._last_step: dict[str, int] = {}  # run id -> the highest step it has metrics for

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in self._VOLATILE}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    @property
    def pending_path(self) -> Path:
        return Path(self.home, "mlflow", "pending", f"{self.parent_run_id}.jsonl")

    # --- Ray Tune hooks --------------------------------------------------------------------

    def setup(self, **info):
        """Write what an earlier driver of this parent run left in the pending file."""
        self.flush()

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info):
        self._submit(trial, {"op": "status", "status": "RUNNING"})

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info
    ):
        timestamp = int(time.time() * 1000)
        step = last_epoch(result)
        metrics = [
            [key, float(value), timestamp, step]
            for key, value in _flat_result(result).items()
            if "/" in key and isinstance(value, numbers.Real) and not isinstance(value, bool)
        ]
        if metrics:
            self._submit(trial, {"op": "metrics", "metrics": metrics})

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info):
        """FINISHED when the last result reached its budget, else KILLED (the rule of
        mlflow_server.selection.reached_budget, which the Optuna searcher follows too)."""
        result = _flat_result(trial.last_result)
        done = reached_budget(result, flatten_dict(trial.config, delimiter="/"), self.epochs_key)
        ops = [{"op": "text", "file": file, "text": json.dumps(matrix)} for key, file in CONFUSION_FILES.items()
               if isinstance(matrix := (trial.last_result or {}).get(key), dict)]
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
        """Wait up to `end_wait_s` for the server to take the rest; warn with what is left."""
        self.flush(self.end_wait_s)
        if summary := self.pending_summary():
            log.warning(summary)

    # --- the queue ----------------------------------------------------------------------------

    def flush(self, wait_s: float = 0.0) -> int:
        """Write what is queued, the pending file's first, asking the server every second for up
        to `wait_s` seconds while it does not answer; return how many writes are still pending."""
        deadline = time.monotonic() + wait_s
        while True:
            self._retry_at = min(self._retry_at, time.monotonic())  # ask now if it was down
            self._drain()
            if not self._queue or time.monotonic() >= deadline:
                return len(self._queue)
            time.sleep(min(1.0, deadline - time.monotonic()))

    def pending_summary(self) -> str | None:
        """What could not be written, exactly (counts and the file), or None when nothing is.

        A new tracker of the same parent run and home tells what its pending file holds.
        """
        self._load()
        parts = []
        if self._queue:
            kinds = Counter(op["op"] for op in self._queue)
            points = sum(len(op["metrics"]) for op in self._queue if op["op"] == "metrics")
            what = ", ".join(
                f"{kinds[kind]} {noun}{'s' if kinds[kind] > 1 else ''}"
                for kind, noun in NOUNS.items()
                if kinds[kind]
            )
            parts.append(
                f"{len(self._queue)} MLflow writes of experiment {self.experiment!r} ({what}; "
                f"{points} metric points) could not reach {self.tracking_uri}; they are saved in "
                f"{self.pending_path} and written when this experiment's tracker next starts "
                f"(e.g. tune-run --name {self.experiment} --resume)."
            )
        if self.rejected:
            parts.append(
                f"{self.rejected} MLflow writes were refused by the server as invalid and "
                "dropped; see the warnings above."
            )
        return " ".join(parts) or None

    def _submit(self, trial: Trial, *ops: dict) -> None:
        """Queue `ops` for the trial's run, its creation first when new, and write what can be."""
        self._load()  # knows the creations an earlier driver queued
        if trial.trial_id not in self._runs and trial.trial_id not in self._opened:
            self._opened.add(trial.trial_id)
            self._queue.append(self._creation(trial))
        # The JSON round trip makes a write the same whether it goes now or from the file.
        self._queue.extend(_jsonable({**op, "trial": trial.trial_id}) for op in ops)
        self._drain()

    def _creation(self, trial: Trial) -> dict:
        config = flatten_dict(trial.config, delimiter="/")  # Ray un-flattens "a/b" keys
        tags = {
            **self.tags,
            MLFLOW_PARENT: self.parent_run_id,
            PARENT: self.parent_run_id,
            ROLE: "trial",
            TRIAL: trial.trial_id,
        }
        params = {key: str(value) for key, value in config.items()}
        return _jsonable({"op": "create", "trial": trial.trial_id, "tags": tags, "params": params,
                          "config": config})  # fmt: skip

    def _drain(self) -> None:
        """Write queued operations in order until one fails for a reason that may pass.

        Never raises into Ray: an operation the server refuses as invalid is dropped with a
        warning; any other failure keeps it first in line and marks the server unreachable.
        """
        self._load()
        done = 0
        if self._queue and self._may_try():
            while self._queue:
                op = self._queue[0]
                try:
                    self._apply(op)
                except Exception as exc:  # sorted below: nothing may reach Ray
                    if _transient(exc):
                        self._went_down(exc)
                        break
                    self.rejected += 1
                    log.warning("MLflow refused the %s of trial %s; dropped it: %s",
                                NOUNS.get(op["op"], op["op"]), op["trial"], exc)  # fmt: skip
                self._queue.popleft()
                done += 1
            else:
                if self._retry_at:
                    log.warning("The MLflow server at %s answers again; the queued writes are in.",
                                self.tracking_uri)  # fmt: skip
                self._retry_at = 0.0
        self._save(rewrite=done > 0)

    def _may_try(self) -> bool:
        """Whether to write now: the server is up, or due to be asked again and answering."""
        now = time.monotonic()
        if not self._retry_at or (now >= self._retry_at and answers(self.tracking_uri)):
            return True
        if now >= self._retry_at:
            self._retry_at = now + RETRY_S
        return False

    def _went_down(self, exc: Exception) -> None:
        if not self._retry_at:
            log.warning(
                "The MLflow server at %s cannot take writes (%s); the trials go on, and their "
                "tracking waits in %s, retried every %.0f s.",
                self.tracking_uri, type(exc).__name__, self.pending_path, RETRY_S,
            )  # fmt: skip
        self._retry_at = time.monotonic() + RETRY_S

    def _apply(self, op: dict) -> None:
        if op["op"] == "create":
            self._runs[op["trial"]] = self._open_run(op)
            return
        run_id = self._run_id(op["trial"])
        match op["op"]:
            case "status":
                self.client.update_run(run_id, status=op["status"])
            case "metrics":  # an epoch re-trained after a restart is logged once, the first time
                done = self._logged_step(run_id)
                points = [point for point in op["metrics"] if point[3] > done]
                if points:
                    self.client.log_batch(run_id, metrics=[Metric(*point) for point in points])
                    self._last_step[run_id] = max(point[3] for point in points)
            case "text":
                self.client.log_text(run_id, op["text"], op["file"])
            case "tag":
                self.client.set_tag(run_id, op["key"], op["value"])
            case "end":
                self.client.set_terminated(run_id, status=op["status"], end_time=op["time"])
            case kind:
                raise ValueError(
                    f"Unknown queued tracking operation {kind!r}; known: {', '.join(NOUNS)}."
                )

    def _open_run(self, op: dict) -> str:
        """The trial's run, found by its tags or created; its params and config.json completed."""
        found = self._find_run(op["trial"])
        run_id = found or self.client.create_run(
            self._experiment(), tags=op["tags"], run_name=op["trial"]
        ).info.run_id
        logged = self.client.get_run(run_id).data.params if found else {}
        missing = [Param(key, value) for key, value in op["params"].items() if key not in logged]
        if missing or not found:
            self.client.log_dict(run_id, op["config"], CONFIG_FILE)
            self.client.log_batch(run_id, params=missing)
        return run_id

    def _logged_step(self, run_id: str) -> int:
        """The highest step of the run's metrics: remembered, else read back once from the server."""
        if run_id not in self._last_step:
            keys = sorted(self.client.get_run(run_id).data.metrics)
            history = self.client.get_metric_history(run_id, keys[0]) if keys else []
            self._last_step[run_id] = max((m.step for m in history), default=0)
        return self._last_step[run_id]

    def _run_id(self, trial_id: str) -> str:
        if trial_id not in self._runs:
            if (run_id := self._find_run(trial_id)) is None:
                raise LookupError(
                    f"Trial {trial_id} has no MLflow run under parent run {self.parent_run_id} "
                    "and none is queued for creation."
                )
            self._runs[trial_id] = run_id
        return self._runs[trial_id]

    def _find_run(self, trial_id: str) -> str | None:
        query = f"tags.`{PARENT}` = '{self.parent_run_id}' and tags.`{TRIAL}` = '{trial_id}'"
        runs = self.client.search_runs([self._experiment()], query, max_results=1)
        return runs[0].info.run_id if runs else None

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

    # --- the pending file -----------------------------------------------------------------

    def _load(self) -> None:
        """Put the pending file's operations first in the queue, once per tracker."""
        if self._loaded:
            return
        self._loaded = True
        try:
            text = self.pending_path.read_text()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("Cannot read the pending MLflow writes in %s: %s", self.pending_path, exc)
            return
        ops = []
        for line in text.splitlines():
            try:
                ops.append(json.loads(line))
            except json.JSONDecodeError:  # the last line of a driver killed while writing it
                log.warning("Skipping a damaged line of %s: %.80s", self.pending_path, line)
        self._queue.extendleft(reversed(ops))
        self._opened.update(op["trial"] for op in ops if op["op"] == "create")
        self._saved = len(ops)
        if not text.endswith("\n") or len(ops) < len(text.splitlines()):
            self._save(rewrite=True)  # clean, so that appended lines stay whole

    def _save(self, rewrite: bool) -> None:
        """Mirror the queue in the pending file: rewritten (after progress), else appended to."""
        path = self.pending_path
        try:
            if rewrite and not self._queue:
                path.unlink(missing_ok=True)
            elif rewrite:
                path.parent.mkdir(parents=True, exist_ok=True)
                partial = path.with_suffix(".tmp")
                partial.write_text("".join(json.dumps(op) + "\n" for op in self._queue))
                os.replace(partial, path)
            elif len(self._queue) > self._saved:
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a") as file:
                    new = itertools.islice(self._queue, self._saved, None)
                    file.writelines(json.dumps(op) + "\n" for op in new)
            self._saved = len(self._queue)
        except OSError as exc:
            log.warning("Cannot save the pending MLflow writes to %s: %s", path, exc)


def _transient(exc: Exception) -> bool:
    """Whether a failed write may go through later (server down or busy, credentials) rather
    than being one the server refuses as invalid (HTTP 400 or 404)."""
    if isinstance(exc, MlflowException):
        return exc.get_http_status_code() not in (400, 404)
    return isinstance(exc, OSError)  # connection errors, requests' HTTP errors of uploads


def _jsonable(value: dict) -> dict:
    return json.loads(json.dumps(value, default=str))


def _flat_result(result: dict) -> dict[str, Any]:
    """The result with nested metric dicts joined by "/"; Ray's echo of the config dropped."""
    return flatten_dict({k: v for k, v in result.items() if k != "config"}, delimiter="/")


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
