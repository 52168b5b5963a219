"""Build and run (or resume) an experiment: Ray Tune + OptunaSearch + a scheduler + MLflow."""
from __future__ import annotations

import json
import os
import sys

from search.errors import UsageError
from search.experiment import Settings, check_overrides, git_revision, save_settings
from search.sampling import SpaceSampler, make_sampler
from search.spacefile import Space, load_space
from trainables.registry import TrainableSpec

SCHEDULERS = ("asha", "fifo", "median", "hyperband")


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
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=settings.seed))
    SpaceSampler(space.path, constants, set(settings.pinned(space)), space.defaults)(study.ask())  # a dry run of space()
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
    for name in ("mlflow", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)


def start_ray(address: str | None = None) -> None:
    """Connect to the Ray cluster at address, or start a local one over all CPUs."""
    import ray

    ray.init(address=address, log_to_driver=False, include_dashboard=False, logging_level="ERROR",
             **({} if address else {"num_cpus": os.cpu_count()}))


def run_experiment(settings: Settings, home: str, resume: bool = False, address: str | None = None) -> int:
    """Run settings.num_samples trials (or resume them); print the Pareto front; 0 on success."""
    quiet_libraries()
    space = load_space(settings.space_path)
    constants = validate(settings, space)
    exp_path = os.path.join(home, "ray", settings.name)
    if not resume and os.path.exists(exp_path):
        raise UsageError(
            f"An experiment named {settings.name!r} already exists in {home!r}; "
            f"continue it with --resume or choose another --name."
        )
    from trainables.data import data_fingerprint

    fingerprint = data_fingerprint(constants["data/root"] or None)
    save_settings(home, settings)

    from mlflow import MlflowClient

    from mlflow_server.server import ensure_server
    from mlflow_server.tracking import get_or_create_parent_run

    uri = ensure_server(home)
    client = MlflowClient(uri)
    tags = tracking_tags(settings, space, fingerprint)
    parent = get_or_create_parent_run(client, settings.name, tags)
    client.log_param(parent, "objectives", json.dumps(space.objectives))  # idempotent on resume
    client.log_dict(parent, {"settings": settings.__dict__, "constants": constants}, "experiment.json")

    import ray
    from ray import tune

    start_ray(address)
    trainable = tune.with_resources(
        lazy_trainable(space.trainable), {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial}
    )
    print(f"Experiment {settings.name!r}: {settings.num_samples} trials of {space.trainable.name} "
          f"from {shown_path(space.path)}; tracking at {uri}", flush=True)
    if resume:
        if not tune.Tuner.can_restore(exp_path):
            raise UsageError(f"Experiment {settings.name!r} has no Ray Tune state at {exp_path!r} to resume from.")
        tuner = tune.Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = build_tuner(settings, space, constants, trainable, home, uri, parent, tags)
    tuner.fit()
    ray.shutdown()
    close_stale_asks(optuna_storage(home), settings.name)
    return summarize(client, uri, settings, space, parent)


def optuna_storage(home: str) -> str:
    return f"sqlite:///{os.path.join(home, 'optuna.db')}"


def close_stale_asks(storage: str, study_name: str) -> None:
    """Mark FAIL the Optuna trials still RUNNING once the search is over.

    A driver killed between Optuna's ask and Ray's next searcher checkpoint leaves such a
    trial behind; the resumed search asks anew, so the stale one never gets a result.
    """
    import optuna

    study = optuna.load_study(study_name=study_name, storage=storage)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


def build_tuner(settings, space: Space, constants, trainable, home, uri, parent, tags):
    from optuna.storages import RDBStorage
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from mlflow_server.tracking import TrialTracker
    from search.progress import LiveView

    metrics, modes = list(space.objectives), list(space.objectives.values())
    searcher = OptunaSearch(
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
                TrialTracker(uri, settings.name, parent, tags),
                LiveView(primary, mode, settings.num_samples, constants["train/epochs"]),
            ],
        ),
    )


def summarize(client, uri: str, settings: Settings, space: Space, parent: str) -> int:
    """Log the Pareto front onto the parent run, print it with failures and where to look."""
    from mlflow_server.pareto import log_pareto, pareto_table
    from mlflow_server.tracking import collect_trials

    records = collect_trials(client, parent)
    front = log_pareto(client, parent, records, space.objectives)
    by_status: dict[str, int] = {}
    for r in records:
        by_status[r.status] = by_status.get(r.status, 0) + 1
    print(f"\nTrials: {len(records)} ({', '.join(f'{n} {s}' for s, n in sorted(by_status.items()))})")
    for r in records:
        if r.status == "FAILED":
            print(f"  failed {r.trial_id}: {client.get_run(r.run_id).data.tags.get('medtune.error', '?')}")
    title = "Pareto front" if len(space.objectives) > 1 else "Best trial"
    print(f"\n{title} ({', '.join(f'{m} {d}' for m, d in space.objectives.items())}):")
    print(pareto_table(front, space.objectives, list(range(len(front)))) if front else "  no finished trial")
    experiment = client.get_experiment_by_name(settings.name)
    print(f"\nMLflow: {uri}/#/experiments/{experiment.experiment_id}/runs/{parent}"
          f"  (experiment {settings.name!r}; Pareto plot: artifact pareto.html of the parent run)")
    print(f"Export: tune-export {settings.name} -o best.yaml    Resume: tune-run {shown_path(space.path)} "
          f"--name {settings.name} --resume")
    client.set_terminated(parent, "FINISHED")
    sys.stdout.flush()
    return 0 if front else 1
