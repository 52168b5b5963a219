"""Build and run (or resume) an experiment: Ray Tune + OptunaSearch + a scheduler + MLflow."""
from __future__ import annotations

import json
import os
import sys

from search.errors import UsageError
from search.experiment import Settings, check_overrides, git_revision, save_settings
from search.sampling import SpaceSampler, make_sampler
from search.preflight import fingerprint as data_fingerprint
from search.preflight import preflight
from search.spacefile import Space, load_space
from trainables.registry import TrainableSpec

SCHEDULERS = ("asha", "fifo", "median", "hyperband")
SEARCH_DONE = "medtune_search_done"  # written into the Ray experiment folder once the search has ended


def lazy_trainable(spec: TrainableSpec):
    """A function trainable that imports the real one (and torch) only inside the worker."""
    target = spec.target

    def train(config: dict) -> None:
        import importlib

        module, func = target.split(":")
        getattr(importlib.import_module(module), func)(config)

    train.__name__ = spec.name
    return train


def make_scheduler(name: str, metric: str, mode: str, max_t: int):
    from ray.tune import schedulers

    if name == "asha":
        return schedulers.ASHAScheduler(metric=metric, mode=mode, max_t=max_t, grace_period=1, reduction_factor=2)
    if name == "fifo":
        return schedulers.FIFOScheduler()
    if name == "median":
        return schedulers.MedianStoppingRule(metric=metric, mode=mode, grace_period=1)
    if name == "hyperband":
        return schedulers.HyperBandScheduler(metric=metric, mode=mode, max_t=max_t)
    raise UsageError(f"Unknown scheduler {name!r}; accepted: {', '.join(SCHEDULERS)}.")


def validate(settings: Settings, space: Space) -> dict:
    """Everything that can be checked before a trial starts; returns the constant config."""
    check_overrides(settings.overrides, space)
    constants = settings.constants(space)
    make_scheduler(settings.scheduler, *space.primary, constants["train/epochs"])
    make_sampler(settings.sampler, settings.seed)
    for note in preflight(space, constants, set(settings.pinned(space)), settings.seed):
        print(f"note: {note}", flush=True)
    return constants


def tracking_tags(settings: Settings, space: Space, fingerprint: str) -> dict[str, str]:
    return {
        "medtune.experiment": settings.name,
        "medtune.space_file": shown_path(space.path),
        "medtune.trainable": space.trainable.name,
        "medtune.git_revision": git_revision(space.path),
        "medtune.data_fingerprint": fingerprint,
    }


def shown_path(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def quiet_libraries() -> None:
    """Keep the console to the live view and the summary; details live in MLflow and Ray's logs."""
    import logging

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")  # a trial's error: its MLflow run and the summary
    for name in ("mlflow", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("ray.tune.tune").addFilter(_not_incomplete_trials)


def _not_incomplete_trials(record) -> bool:
    """Drop Ray Tune's 'Trials did not complete' error: the summary lists them with their reasons."""
    return "Trials did not complete" not in record.getMessage()


def start_ray(address: str | None = None) -> None:
    """Connect to the Ray cluster at address (or $RAY_ADDRESS, as `ray job submit` sets it), or
    start a local one over all CPUs: never join whichever cluster last ran on this machine,
    which is what ray.init() without an address does."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=address, log_to_driver=False, include_dashboard=False, logging_level="ERROR",
             **({"num_cpus": os.cpu_count()} if address == "local" else {}))


def run_experiment(settings: Settings, home: str, resume: bool = False, address: str | None = None) -> int:
    """Run settings.num_samples trials (or resume them); print the summary; 0 on success.

    Resuming an experiment whose search already ended only prints its summary again.
    """
    quiet_libraries()
    exp_path = os.path.join(home, "ray", settings.name)
    check_state(settings, home, exp_path, resume)
    space = load_space(settings.space_path)
    constants = validate(settings, space)
    fingerprint = data_fingerprint(constants)
    save_settings(home, settings)

    from mlflow import MlflowClient

    from mlflow_server.server import configure_client, ensure_server
    from mlflow_server.tracker import get_or_create_parent_run

    configure_client()
    uri = ensure_server(home)
    client = MlflowClient(uri)
    tags = tracking_tags(settings, space, fingerprint)
    parent = get_or_create_parent_run(client, settings.name, tags)
    client.log_param(parent, "objectives", json.dumps(space.objectives))  # idempotent on resume
    client.log_dict(parent, {"settings": settings.__dict__, "constants": constants}, "experiment.json")

    done = os.path.join(exp_path, SEARCH_DONE)
    if os.path.exists(done):
        print(f"Experiment {settings.name!r} already ran its search; its summary again:", flush=True)
    else:
        print(f"Experiment {settings.name!r}: {settings.num_samples} trials of {space.trainable.name} "
              f"from {shown_path(space.path)}; tracking at {uri}", flush=True)
        if not run_search(settings, space, constants, home, resume, address, uri, parent, tags):
            print(f"\nExperiment {settings.name!r} was interrupted; its state is saved. Continue it with: "
                  f"tune-run {shown_path(space.path)} --name {settings.name} --resume", flush=True)
            return 130
        open(done, "w").close()
    return summarize(client, uri, settings, space, parent, home, tags)


def check_state(settings: Settings, home: str, exp_path: str, resume: bool) -> None:
    """A new experiment needs a free name; a resumed one needs the Ray Tune state it left."""
    from ray import tune

    if not resume and os.path.exists(exp_path):
        raise UsageError(
            f"An experiment named {settings.name!r} already exists in {home!r}; "
            f"continue it with --resume or choose another --name."
        )
    if resume and not tune.Tuner.can_restore(exp_path):
        raise UsageError(
            f"Experiment {settings.name!r} cannot be resumed: its settings are saved in {home!r}, but there is "
            f"no Ray Tune state at {exp_path!r} (the run stopped before saving any, or the folder was moved or "
            f"deleted); start it again under another --name."
        )


def run_search(settings: Settings, space: Space, constants: dict, home: str, resume: bool, address: str | None,
               uri: str, parent: str, tags: dict[str, str]) -> bool:
    """Start Ray, run (or restore and finish) the trials, then close Optuna asks left open.

    False when the search was interrupted (Ctrl-C) before every trial ended: Ray Tune then
    saves its state and returns, and a resume continues the trials left.
    """
    import ray
    from ray import tune

    start_ray(address)
    try:
        trainable = tune.with_resources(
            lazy_trainable(space.trainable), {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial}
        )
        if resume:  # finished and failed trials stay as they are; the others continue from their checkpoints
            tuner = tune.Tuner.restore(os.path.join(home, "ray", settings.name), trainable=trainable,
                                       resume_unfinished=True, resume_errored=False)
        else:
            tuner = build_tuner(settings, space, constants, trainable, home, uri, parent, tags)
        tuner.fit()
    finally:
        ray.shutdown()
    if not search_ended(settings, os.path.join(home, "ray", settings.name)):
        return False
    close_stale_asks(optuna_storage(home), settings.name)
    return True


def search_ended(settings: Settings, exp_path: str) -> bool:
    """Whether Ray Tune's saved state shows the search over: every trial finished, stopped or
    failed, and all num_samples made unless a time budget ended the search first.

    After a Ctrl-C, fit() returns as after the end, but the saved state keeps the unfinished
    trials pending for a resume.
    """
    from ray.tune import ExperimentAnalysis

    trials = ExperimentAnalysis(exp_path).trials
    ended = all(t.status in ("TERMINATED", "ERROR") for t in trials)
    return ended and (len(trials) >= settings.num_samples or settings.time_budget is not None)


def optuna_storage(home: str) -> str:
    return f"sqlite:///{os.path.join(home, 'optuna.db')}"


def close_stale_asks(storage: str, study_name: str) -> None:
    """Mark FAIL the Optuna trials still RUNNING once the search is over.

    A resumed search re-attaches the asks its killed predecessor left (ResumableOptunaSearch);
    asks can still be left when a time budget or a stop ends the search before they ran.
    """
    import optuna

    study = optuna.load_study(study_name=study_name, storage=storage)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


def build_tuner(settings, space: Space, constants, trainable, home, uri, parent, tags):
    from optuna.storages import RDBStorage
    from ray import tune

    from mlflow_server.tracker import TrialTracker
    from search.progress import LiveView
    from search.searcher import ResumableOptunaSearch

    metrics, modes = list(space.objectives), list(space.objectives.values())
    searcher = ResumableOptunaSearch(
        space=SpaceSampler(space.path, constants, set(settings.pinned(space)), space.defaults),
        metric=metrics if len(metrics) > 1 else metrics[0],
        mode=modes if len(modes) > 1 else modes[0],
        sampler=make_sampler(settings.sampler, settings.seed),
        study_name=settings.name,
        storage=RDBStorage(optuna_storage(home)),
    )
    primary, mode = space.primary
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=make_scheduler(settings.scheduler, primary, mode, constants["train/epochs"]),
            num_samples=settings.num_samples,
            max_concurrent_trials=settings.max_concurrent,
            time_budget_s=settings.time_budget,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=settings.name,
            storage_path=os.path.join(home, "ray"),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[
                TrialTracker(uri, settings.name, parent, tags, os.path.join(home, "mlflow", "pending")),
                LiveView(space.objectives, settings.num_samples),
            ],
        ),
    )


STATUS_WORDS = {"FINISHED": "finished", "KILLED": "stopped early", "FAILED": "failed"}  # MLflow run statuses


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


def summarize(client, uri: str, settings: Settings, space: Space, parent: str, home: str, tags: dict) -> int:
    """Print the trial counts and failures, log the Pareto front onto the parent run and print it.

    Tracking writes a server outage left pending are written first (or reported). The front
    and the best trial follow mlflow_server.selection, as tune-export and the live view do:
    only FINISHED trials with finite objectives count, so a failed or stopped trial never
    counts as best, whatever it reported before it ended.
    """
    from mlflow_server.pareto import log_pareto, pareto_table
    from mlflow_server.records import ERROR, collect_trials
    from mlflow_server.tracker import TrialTracker

    tracker = TrialTracker(uri, settings.name, parent, tags, os.path.join(home, "mlflow", "pending"))
    tracker.flush()
    records = collect_trials(client, parent)
    print(f"\n{trial_counts(records, settings.num_samples)}", flush=True)
    if pending := tracker.pending_summary():
        print(f"  not yet tracked: {pending}")
    for r in records:
        if r.status == "FAILED":
            print(f"  failed {r.trial_id}: {failure_reason(client.get_run(r.run_id).data.tags.get(ERROR))}")
    front = log_pareto(client, parent, records, space.objectives)
    title = "Pareto front" if len(space.objectives) > 1 else "Best trial"
    print(f"\n{title} ({', '.join(f'{m} {d}' for m, d in space.objectives.items())}):")
    print(pareto_table(front, space.objectives) if front else
          f"  no finished trial with finite {', '.join(space.objectives)}")
    if front:
        print(f"Best: {front[0].trial_id} (the first row; what tune-export writes as best)")
    experiment = client.get_experiment_by_name(settings.name)
    print(f"\nMLflow: {uri}/#/experiments/{experiment.experiment_id}/runs/{parent}"
          f"  (experiment {settings.name!r}; Pareto plot: artifact pareto.html of the parent run)")
    print(f"Export: tune-export {settings.name} -o best.yaml    Resume: tune-run {shown_path(space.path)} "
          f"--name {settings.name} --resume")
    client.set_terminated(parent, "FINISHED")
    sys.stdout.flush()
    return 0 if front else 1
