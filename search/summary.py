"""The end of every experiment: trial counts and failures, the Pareto front (or best trial) logged on
the parent run and printed, and where to look and what to run next."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from search.engine import Experiment
    from search.home import ExperimentState

STATUS_WORDS = {"FINISHED": "finished", "KILLED": "stopped early", "FAILED": "failed"}  # MLflow run statuses


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
    if exp.trials.selects:
        title = "Pareto front" if len(exp.objectives) > 1 else "Best trial"
        print(f"\n{title} ({', '.join(f'{m} {d}' for m, d in exp.objectives.items())}):")
        print(pareto_table(front, exp.objectives) if front else
              f"  no finished trial with finite {', '.join(exp.objectives)}")
        if front:
            print(f"Best: {front[0].trial_id} (the first row; what tune-export writes as best)")
    if exp.trials.selects:
        report_after_search(client, parent, exp.name, list(exp.objectives), state.optuna_storage)
    experiment = client.get_experiment_by_name(exp.name)
    print(f"\nMLflow: {uri}/#/experiments/{experiment.experiment_id}/runs/{parent}  (experiment {exp.name!r}"
          + ("; Pareto plot: artifact pareto.html of the parent run)" if exp.trials.selects else ")"))
    hints = ([f"Export: tune-export {exp.name} -o best.yaml"] if exp.trials.selects else []) + \
        ([f"Resume: {exp.resume_command}"] if exp.resume_command else [])
    if hints:
        print("    ".join(hints))
    client.set_terminated(parent, "FINISHED")
    sys.stdout.flush()
    return Outcome(0 if front else 1, records, errors, parent)

