"""The one path every command's trials take (tune-run, tune-train, tune-ablate): check the configs
it will run before anything starts, start the tracking server and Ray, run the trials through one
Ray Tune Tuner with the live view and the MLflow tracker, and summarise.

    outcome = engine.run(Experiment(name, spec, objectives, Configs([config, ...], tags=[{...}, ...]),
                                    source="best.yaml", settings={...}), home)

An experiment is resumable by its name (resume=True), from the state `search.home` keeps for it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from search.errors import UsageError
from search.home import ExperimentState
from search.summary import Outcome, summarize
from search.trials import Configs, Search
from trainables.registry import TrainableSpec


@dataclass
class Experiment:
    """One command's trials and how to run them."""

    name: str
    trainable: TrainableSpec
    objectives: dict[str, str]  # ordered; the first is the primary objective
    trials: Search | Configs
    source: str  # what the trials come from, as shown to the user: a space file, an exported YAML
    settings: dict = field(default_factory=dict)  # saved for a resume, logged on the parent run
    tags: dict[str, str] = field(default_factory=dict)  # on the parent run and every trial run
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    time_budget: float | None = None
    max_failures: int = 0
    resume_command: str = ""  # how the user continues it after an interruption; "" = not resumable


def run(exp: Experiment, home: str, resume: bool = False, address: str | None = None) -> Outcome:
    """Check, run (or resume) and summarise the experiment's trials; the outcome's code is 0 when
    a trial finished with finite objectives, 1 when none did, 130 when interrupted (state saved).

    Everything that can be refused is refused (UsageError, DataError) before the tracking server
    or Ray starts. Resuming an experiment whose trials all ended only prints its summary again.
    """
    quiet_libraries()
    state = ExperimentState(home, exp.name)
    check_state(exp.name, state, resume)
    configs, choices = exp.trials.checked()
    from search.preflight import fingerprint, preflight

    for note in preflight(exp.trainable, configs, choices):
        print(f"note: {note}", flush=True)
    tags = {"medtune.experiment": exp.name, "medtune.trainable": exp.trainable.name,
            "medtune.data_fingerprint": fingerprint(configs[0]), **exp.tags}
    state.save_settings(exp.settings)

    from mlflow import MlflowClient

    from mlflow_server.server import configure_client, ensure_server
    from mlflow_server.tracker import get_or_create_parent_run

    configure_client()
    uri = ensure_server(home)
    client = MlflowClient(uri)
    parent = get_or_create_parent_run(client, exp.name, tags)
    client.log_param(parent, "objectives", json.dumps(exp.objectives))  # idempotent on resume
    client.log_dict(parent, {"settings": exp.settings, **exp.trials.record()}, "experiment.json")

    if os.path.exists(state.search_done):
        print(f"Experiment {exp.name!r} already ran its search; its summary again:", flush=True)
    else:
        n = exp.trials.num_samples
        print(f"Experiment {exp.name!r}: {n} trial{'s' * (n != 1)} of {exp.trainable.name} from "
              f"{exp.source}; tracking at {uri}", flush=True)
        if not run_trials(exp, state, resume, address, uri, parent, tags):
            hint = f" Continue it with: {exp.resume_command}" if exp.resume_command else ""
            print(f"\nExperiment {exp.name!r} was interrupted; its state is saved.{hint}", flush=True)
            return Outcome(130, [])
        open(state.search_done, "w").close()
    return summarize(client, exp, state, parent, tags)


def check_state(name: str, state: ExperimentState, resume: bool) -> None:
    """A new experiment needs a free name; a resumed one needs the Ray Tune state it left."""
    from ray import tune

    if not resume and os.path.exists(state.ray_dir):
        raise UsageError(
            f"An experiment named {name!r} already exists in {state.home!r}; "
            f"continue it with --resume or choose another --name."
        )
    if resume and not tune.Tuner.can_restore(state.ray_dir):
        raise UsageError(
            f"Experiment {name!r} cannot be resumed: its settings are saved in {state.home!r}, but there is "
            f"no Ray Tune state at {state.ray_dir!r} (the run stopped before saving any, or the folder was "
            f"moved or deleted); start it again under another --name."
        )


def run_trials(exp: Experiment, state: ExperimentState, resume: bool, address: str | None, uri: str,
               parent: str, tags: dict[str, str]) -> bool:
    """Start Ray, run (or restore and finish) the trials, then let the trials' source close up.

    False when the run was interrupted (Ctrl-C) before every trial ended: Ray Tune then saves
    its state and returns, and a resume continues the trials left.
    """
    import ray
    from ray import tune

    from mlflow_server.tracker import TrialTracker
    from search.progress import LiveView

    start_ray(address)
    try:
        trainable = tune.with_resources(exp.trainable.function(),
                                        {"cpu": exp.cpus_per_trial, "gpu": exp.gpus_per_trial})
        if resume:  # finished and failed trials stay as they are; the others continue from their checkpoints
            tuner = tune.Tuner.restore(state.ray_dir, trainable=trainable, resume_unfinished=True,
                                       resume_errored=False)
        else:
            param_space, tune_args = exp.trials.tuner_args(exp.objectives, exp.name, state.optuna_storage, uri)
            tuner = tune.Tuner(
                trainable,
                param_space=param_space,
                tune_config=tune.TuneConfig(
                    **tune_args,
                    max_concurrent_trials=exp.max_concurrent,
                    time_budget_s=exp.time_budget,
                    reuse_actors=True,
                ),
                run_config=tune.RunConfig(
                    name=exp.name,
                    storage_path=state.ray_storage,
                    verbose=0,
                    failure_config=tune.FailureConfig(max_failures=exp.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                    callbacks=[TrialTracker(uri, exp.name, parent, tags, state.pending_dir),
                               LiveView(exp.objectives, exp.trials.num_samples)],
                ),
            )
        tuner.fit()
    finally:
        ray.shutdown()
    if not trials_ended(exp, state.ray_dir):
        return False
    exp.trials.after(exp.name, state.optuna_storage)
    return True


def trials_ended(exp: Experiment, ray_dir: str) -> bool:
    """Whether Ray Tune's saved state shows the run over: every trial finished, stopped or failed,
    and all of them made unless a time budget ended the run first.

    After a Ctrl-C, fit() returns as after the end, but the saved state keeps the unfinished
    trials pending for a resume.
    """
    from ray.tune import ExperimentAnalysis

    trials = ExperimentAnalysis(ray_dir).trials
    ended = all(t.status in ("TERMINATED", "ERROR") for t in trials)
    return ended and (len(trials) >= exp.trials.num_samples or exp.time_budget is not None)


def quiet_libraries() -> None:
    """Keep the console to the live view and the summary; details live in MLflow and Ray's logs."""
    import logging

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
