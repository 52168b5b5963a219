"""The durable, ordered queue of one parent run's MLflow writes, and the writer that empties it.

An unreachable server never loses or reorders a write: each write is an operation (a JSON
object naming its trial) queued in order and saved at once in the pending file
`<pending_dir>/<parent run id>.jsonl`, which the next queue of the same parent run replays
first; the queue's writer thread writes it as soon as the server answers, so a Ray Tune
callback that queues a write never waits for the server. A replayed write never doubles
anything: a run is found by its trial id before it is created, and a metric step already
logged is skipped.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import os
import tempfile
import threading
import time
from collections import Counter, deque
from pathlib import Path, PurePosixPath

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from mlflow_server.records import CONFIG_FILE, PARENT, TRIAL
from mlflow_server.server import answers

RETRY_S = 5.0  # while the server is unreachable, ask it again at most this often
# What each operation is called in the summary of unwritten ones.
NOUNS = {"create": "run creation", "status": "status update", "metrics": "metric set",
         "text": "artifact", "file": "artifact file", "tag": "tag", "end": "run end"}  # fmt: skip

log = logging.getLogger(__name__)


class WriteQueue:
    """The writes of the trial runs under `parent_run_id` in experiment `experiment` at `uri`.

    Operations: create (run name, tags, params, config), status, metrics ([key, value, timestamp, step]
    points), text (an artifact file), file (an artifact file's path in the run and base64 content:
    a binary one, e.g. a picture), tag, end (status, time). Pickled, it keeps only which
    run each trial has; the pending file holds the writes.
    """

    _VOLATILE = ("_client", "_ops", "_saved", "_loaded", "_opened", "_retry_at", "rejected", "_last_step",
                 "_lock", "_draining", "_more", "_writer", "_closed")

    def __init__(self, uri: str, experiment: str, parent_run_id: str, pending_dir: str):
        self.uri = uri
        self.experiment = experiment
        self.parent_run_id = parent_run_id
        self.path = Path(pending_dir).resolve() / f"{parent_run_id}.jsonl"
        self._experiment_id: str | None = None
        self._runs: dict[str, str] = {}  # trial id -> run id
        self._reset()

    def _reset(self) -> None:
        self._client: MlflowClient | None = None
        self._ops: deque[dict] = deque()
        self._saved = 0  # how many of the first operations the pending file holds
        self._loaded = False  # whether the pending file was read into the queue
        self._opened: set[str] = set()  # trials whose run creation is queued or done
        self._retry_at = 0.0  # while the server is unreachable: when to ask it again
        self.rejected = 0  # writes the server refused as invalid (dropped, logged)
        self._last_step: dict[str, int] = {}  # run id -> the highest step it has metrics for
        self._lock = threading.RLock()  # the queue, the pending file and the runs, between the two threads
        self._draining = threading.Lock()  # one writer at a time: writes go out in order
        self._more = threading.Event()  # set by put: the writer thread has work
        self._writer: threading.Thread | None = None  # the writer thread while it runs
        self._closed = False  # closed: no writer thread any more (flush still writes)

    def __getstate__(self) -> dict:
        with self._lock:
            return {k: dict(v) if k == "_runs" else v for k, v in self.__dict__.items() if k not in self._VOLATILE}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.uri)
        return self._client

    def knows(self, trial_id: str) -> bool:
        """Whether the trial has a run, or its creation is queued (here or in the pending file)."""
        with self._lock:
            self._load()
            return trial_id in self._runs or trial_id in self._opened

    def put(self, *ops: dict) -> None:
        """Queue `ops` after the pending file's, save them there, and have the writer thread write
        them; returns without waiting for the server."""
        # The JSON round trip makes a write the same whether it goes now or from the file.
        ops = [json.loads(json.dumps(op, default=str)) for op in ops]
        with self._lock:
            self._load()
            self._opened.update(op["trial"] for op in ops if op["op"] == "create")
            self._ops.extend(ops)
            self._save(rewrite=False)
            self._more.set()
            if self._writer is None and not self._closed:
                self._writer = threading.Thread(target=self._write_behind, name="mlflow-writes", daemon=True)
                self._writer.start()

    def flush(self, wait_s: float = 0.0) -> int:
        """Write what is queued, the pending file's first, in this thread, asking the server every
        second for up to `wait_s` seconds while it does not answer; return how many writes are
        still pending."""
        deadline = time.monotonic() + wait_s
        while True:
            self._retry_at = min(self._retry_at, time.monotonic())  # ask now if it was down
            self._drain()
            with self._lock:
                left = len(self._ops)
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(min(1.0, deadline - time.monotonic()))

    def close(self) -> None:
        """End the writer thread (what is left stays queued and in the pending file), so that
        another queue of the same parent run can take over the file."""
        with self._lock:
            self._closed, writer = True, self._writer
            self._more.set()
        if writer is not None:
            writer.join()

    def summary(self) -> str | None:
        """What could not be written, exactly (counts and the file), or None when nothing is.

        A new queue of the same parent run and pending folder tells what the file holds.
        """
        with self._lock:
            self._load()
            return self._summary()

    def _summary(self) -> str | None:
        parts = []
        if self._ops:
            kinds = Counter(op["op"] for op in self._ops)
            points = sum(len(op["metrics"]) for op in self._ops if op["op"] == "metrics")
            what = ", ".join(
                f"{kinds[kind]} {noun}{'s' if kinds[kind] > 1 else ''}"
                for kind, noun in NOUNS.items()
                if kinds[kind]
            )
            parts.append(
                f"{len(self._ops)} MLflow writes of experiment {self.experiment!r} ({what}; "
                f"{points} metric points) could not reach {self.uri}; they are saved in "
                f"{self.path} and written when this experiment's tracker next starts "
                f"(e.g. tune-run --name {self.experiment} --resume)."
            )
        if self.rejected:
            parts.append(
                f"{self.rejected} MLflow writes were refused by the server as invalid and "
                "dropped; see the warnings above."
            )
        return " ".join(parts) or None

    # --- writing, and the outage ----------------------------------------------------------

    def _write_behind(self) -> None:
        """The writer thread: write while there is work, asking a down server again every RETRY_S
        seconds; it ends when the queue is empty (put starts another)."""
        while True:
            self._more.clear()
            self._drain()
            with self._lock:
                if not self._ops or self._closed:
                    self._writer = None
                    return
            self._more.wait(RETRY_S)

    def _drain(self) -> None:
        """Write queued operations in order until one fails for a reason that may pass.

        Never raises: an operation the server refuses as invalid is dropped with a warning;
        any other failure keeps it first in line and marks the server unreachable. Only the
        queue's bookkeeping holds the lock, never a request, so put never waits for the server.
        """
        with self._draining:
            with self._lock:
                self._load()
                waiting = bool(self._ops)
            done, stopped = 0, False
            if waiting and self._may_try():
                while op := self._first():
                    try:
                        self._apply(op)
                    except Exception as exc:  # sorted below: nothing may reach Ray
                        if _transient(exc):
                            self._went_down(exc)
                            stopped = True
                            break
                        self.rejected += 1
                        log.warning("MLflow refused the %s of trial %s; dropped it: %s",
                                    NOUNS.get(op["op"], op["op"]), op["trial"], exc)  # fmt: skip
                    with self._lock:
                        self._ops.popleft()
                        self._saved = max(0, self._saved - 1)  # the file keeps it until rewritten: harmless
                    done += 1
                if not stopped:
                    if self._retry_at:
                        log.warning("The MLflow server at %s answers again; the queued writes are in.",
                                    self.uri)  # fmt: skip
                    self._retry_at = 0.0
            with self._lock:
                self._save(rewrite=done > 0)

    def _first(self) -> dict | None:
        with self._lock:
            return self._ops[0] if self._ops else None

    def _may_try(self) -> bool:
        """Whether to write now: the server is up, or due to be asked again and answering."""
        now = time.monotonic()
        if not self._retry_at or (now >= self._retry_at and answers(self.uri)):
            return True
        if now >= self._retry_at:
            self._retry_at = now + RETRY_S
        return False

    def _went_down(self, exc: Exception) -> None:
        if not self._retry_at:
            log.warning(
                "The MLflow server at %s cannot take writes (%s); the trials go on, and their "
                "tracking waits in %s, retried every %.0f s.",
                self.uri, type(exc).__name__, self.path, RETRY_S,
            )  # fmt: skip
        self._retry_at = time.monotonic() + RETRY_S

    def _apply(self, op: dict) -> None:
        if op["op"] == "create":
            run_id = self._open_run(op)
            with self._lock:
                self._runs[op["trial"]] = run_id
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
            case "file":
                path = PurePosixPath(op["file"])
                with tempfile.TemporaryDirectory() as folder:
                    local = Path(folder, path.name)
                    local.write_bytes(base64.b64decode(op["data"]))
                    self.client.log_artifact(run_id, str(local), str(path.parent) if path.parent.name else None)
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
            self._experiment(), tags=op["tags"], run_name=op.get("name", op["trial"])
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
            with self._lock:
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
                    f"{self.uri}; create it with get_or_create_parent_run() first."
                )
            self._experiment_id = found.experiment_id
        return self._experiment_id

    # --- the pending file -----------------------------------------------------------------

    def _load(self) -> None:
        """Put the pending file's operations first in the queue, once per queue."""
        if self._loaded:
            return
        self._loaded = True
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("Cannot read the pending MLflow writes in %s: %s", self.path, exc)
            return
        ops = []
        for line in text.splitlines():
            try:
                ops.append(json.loads(line))
            except json.JSONDecodeError:  # the last line of a driver killed while writing it
                log.warning("Skipping a damaged line of %s: %.80s", self.path, line)
        self._ops.extendleft(reversed(ops))
        self._opened.update(op["trial"] for op in ops if op["op"] == "create")
        self._saved = len(ops)
        if not text.endswith("\n") or len(ops) < len(text.splitlines()):
            self._save(rewrite=True)  # clean, so that appended lines stay whole

    def _save(self, rewrite: bool) -> None:
        """Mirror the queue in the pending file: rewritten (after progress), else appended to."""
        path = self.path
        try:
            if rewrite and not self._ops:
                path.unlink(missing_ok=True)
            elif rewrite:
                path.parent.mkdir(parents=True, exist_ok=True)
                partial = path.with_suffix(".tmp")
                partial.write_text("".join(json.dumps(op) + "\n" for op in self._ops))
                os.replace(partial, path)
            elif len(self._ops) > self._saved:
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a") as file:
                    new = itertools.islice(self._ops, self._saved, None)
                    file.writelines(json.dumps(op) + "\n" for op in new)
            self._saved = len(self._ops)
        except OSError as exc:
            log.warning("Cannot save the pending MLflow writes to %s: %s", path, exc)


def _transient(exc: Exception) -> bool:
    """Whether a failed write may go through later (server down or busy, credentials) rather
    than being one the server refuses as invalid (HTTP 400 or 404)."""
    if isinstance(exc, MlflowException):
        return exc.get_http_status_code() not in (400, 404)
    return isinstance(exc, OSError)  # connection errors, requests' HTTP errors of uploads
