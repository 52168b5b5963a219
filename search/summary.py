"""The end of every experiment: trial counts and failures, the Pareto front (or best trial) logged on
the parent run and printed, and where to look and what to run next."""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from search.engine import Experiment
    from search.home import ExperimentState

STATUS_WORDS = {"FINISHED": "finished", "KILLED": "stopped early", "FAILED": "failed"}  # MLflow run statuses
COUNT_NAMES = {"FINISHED": "finished", "KILLED": "stopped", "FAILED": "failed"}  # -> the parent's trials/* metrics
# MLflow 3 opens an experiment in its GenAI view unless told (or clicked once, remembered by the browser).
ML_VIEW = "workflowType=machine_learning"
VIEW_KEY = "medtune"  # the experiment's shared view of its runs (share_runs_view)


@dataclass
class Outcome:
    """How an experiment ended: the command's exit code, its trial runs as tracked (start order),
    the error of each failed one (trial id -> one line) and the id of its MLflow parent run."""

    code: int
    records: list = field(default_factory=list)  # mlflow_server.records.TrialRecord
    errors: dict[str, str] = field(default_factory=dict)
    parent: str = ""


def trial_counts(records, num_samples: int) -> str:
    """'Trials: 4 of 4: 2 finished, 1 stopped early, 1 failed' (+ any left unfinished or never started)."""
    counts = {status: 0 for status in STATUS_WORDS}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    parts = [f"{n} {STATUS_WORDS.get(status, 'left ' + status)}" for status, n in counts.items()
             if n or status in STATUS_WORDS]
    if len(records) < num_samples:
        parts.append(f"{num_samples - len(records)} never started")
    return f"Trials: {len(records)} of {num_samples}: {', '.join(parts)}"


def log_parent_metrics(client, parent: str, records, best: dict[str, float], objectives: dict[str, str]) -> None:
    """The parent run's metrics, for MLflow's runs table: the trial counts (trials/finished,
    trials/stopped, trials/failed) and the best trial's objectives under their own names."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    counts = {f"trials/{COUNT_NAMES[status]}": sum(r.status == status for r in records) for status in COUNT_NAMES}
    values = {**counts, **{key: best[key] for key in objectives if key in best}}
    client.log_batch(parent, metrics=[Metric(key, float(value), now, 0) for key, value in values.items()])


def share_runs_view(client, experiment_id: str, records, objectives: dict[str, str]) -> str:
    """A link to the experiment's runs in MLflow's model-training view, best first by the primary
    objective, with the objectives, trial counts and the config keys that vary as columns.

    MLflow takes the columns from a shared view (the experiment tag mlflow.sharedViewState.<key>,
    opened by the URL parameter viewStateShareKey); it names the metrics and params as
    metrics.`name` and params.`name`.
    """
    from mlflow_server.records import varying_keys

    columns = [f"metrics.`{key}`" for key in [*objectives, *(f"trials/{n}" for n in COUNT_NAMES.values())]]
    view = {"selectedColumns": columns + [f"params.`{key}`" for key in varying_keys(records)]}
    if objectives:
        primary, mode = next(iter(objectives.items()))
        view |= {"orderByKey": f"metrics.`{primary}`", "orderByAsc": mode == "min"}
    client.set_experiment_tag(experiment_id, f"mlflow.sharedViewState.{VIEW_KEY}", json.dumps(view))
    return f"{client.tracking_uri}/#/experiments/{experiment_id}/runs?{ML_VIEW}&viewStateShareKey={VIEW_KEY}"


def failure_reason(error: str | None) -> str:
    """One short line for a failed trial: the error's type and message as tracked."""
    if not error or not error.strip():
        return "no reason was recorded; see the error.txt artifact of its run"
    line = error.strip().splitlines()[0]
    return line if len(line) <= 240 else line[:237] + "..."


def summarize(client, exp: Experiment, state: ExperimentState, parent: str, tags: dict[str, str]) -> Outcome:
    """Print the trial counts and failures, log the Pareto front onto the parent run and print it, and
    for a search with enough completed trials, its analysis (search.analysis).

    Tracking writes a server outage left pending are written first (or reported), and each trial
    run gets the tags its config was given with. The front and the best trial follow
    mlflow_server.selection, as tune-export and the live view do: only FINISHED trials with
    finite objectives count, so a failed or stopped trial never counts as best, whatever it
    reported before it ended.
    """
    from mlflow_server.pareto import log_pareto, pareto_table
    from mlflow_server.records import ERROR, collect_trials
    from mlflow_server.tracker import TrialTracker
    from search.analysis import report_after_search

    uri = client.tracking_uri
    tracker = TrialTracker(uri, exp.name, parent, tags, state.pending_dir)
    tracker.flush()
    records = collect_trials(client, parent)
    for r in records:
        for key, value in exp.trials.trial_tags(r.config).items():
            client.set_tag(r.run_id, key, value)
    print(f"\n{trial_counts(records, exp.trials.num_samples)}", flush=True)
    if pending := tracker.pending_summary():
        print(f"  not yet tracked: {pending}")
    errors = {r.trial_id: failure_reason(client.get_run(r.run_id).data.tags.get(ERROR))
              for r in records if r.status == "FAILED"}
    for trial_id, error in errors.items():
        print(f"  failed {trial_id}: {error}")
    front = log_pareto(client, parent, records, exp.objectives)
    log_parent_metrics(client, parent, records, front[0].metrics if front and exp.trials.selects else {},
                       exp.objectives)
    if exp.trials.selects:
        title = "Pareto front" if len(exp.objectives) > 1 else "Best trial"
        print(f"\n{title} ({', '.join(f'{m} {d}' for m, d in exp.objectives.items())}):")
        print(pareto_table(front, exp.objectives) if front else
              f"  no finished trial with finite {', '.join(exp.objectives)}")
        if front:
            print(f"Best: {front[0].trial_id} (the first row; what tune-export writes as best)")
    if exp.trials.selects:
        report_after_search(client, parent, exp.name, list(exp.objectives), state.optuna_storage)
    experiment_id = client.get_run(parent).info.experiment_id
    print(f"\nMLflow: {share_runs_view(client, experiment_id, records, exp.objectives)}  (experiment {exp.name!r})")
    if exp.trials.selects:
        print(f"Pareto plot: {uri}/#/experiments/{experiment_id}/runs/{parent}/artifacts/pareto.html?{ML_VIEW}")
    hints = ([f"Export: tune-export {exp.name} -o best.yaml"] if exp.trials.selects else []) + \
        ([f"Resume: {exp.resume_command}"] if exp.resume_command else [])
    if hints:
        print("    ".join(hints))
    client.set_terminated(parent, "FINISHED")
    sys.stdout.flush()
    return Outcome(0 if front else 1, records, errors, parent)

